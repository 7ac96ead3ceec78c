"""Keyboard control of a step and Play: one key table (pure) and its thin widget wiring.

Two routes reach the same actions, both checked in a real browser (JupyterLab, Chromium):

- **Focus (Tab)**: ipywidgets' own controls. A focused step slider handle moves with
  ArrowLeft/ArrowRight, Home/End and PageUp/PageDown (noUiSlider's keys, synced to the kernel);
  a :func:`play_toggle` button (Play/Pause, linked to ``widgets.Play.playing``) toggles with
  Space or Enter like any focused button. Nothing here is needed for that route but labels.
- **Pointer focus**: a :class:`KeyControl` listens (``ipyevents``) on a figure or a row; while
  the pointer is over it, that element takes the keyboard focus and the keys of :data:`KEYS`
  run the widget's actions in the kernel: ArrowLeft/ArrowRight (and ``j``/``l``) previous /
  next, Home/End first / last, Space or ``k`` Play/Pause. ipyevents takes every key while the
  pointer is there (Tab included), so it watches figures and step rows, never text boxes.

:data:`FOCUS_CSS` makes focus visible: an outline on a focused control inside an element with
:data:`FOCUS_CLASS`, and on the element a :class:`KeyControl` listens on while it has the keys.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import ipywidgets as widgets

__all__ = [
    "ACTIONS",
    "FOCUS_CLASS",
    "FOCUS_CSS",
    "TOGGLED_PLAY_CLASS",
    "KEYS",
    "KeyControl",
    "focus_style",
    "key_action",
    "play_toggle",
    "step_index",
]

#: what a key can do: move the step (``previous``, ``next``, ``first``, ``last``) or
#: ``toggle_play`` (Play/Pause)
ACTIONS = ("previous", "next", "first", "last", "toggle_play")
#: ``KeyboardEvent.key`` -> action (Space's ``key`` is ``" "``); ``j``/``k``/``l`` as in video
#: players (back, play/pause, forward)
KEYS: dict[str, str] = {
    "ArrowLeft": "previous",
    "ArrowRight": "next",
    "j": "previous",
    "l": "next",
    "Home": "first",
    "End": "last",
    " ": "toggle_play",
    "k": "toggle_play",
}
#: a key with one of these held is someone else's shortcut (Shift only changes the letter)
_MODIFIERS = ("ctrlKey", "altKey", "metaKey")
FOCUS_CLASS = "richviz-keys"
#: focus outlines: a focused control (slider handle, button, menu) inside a widget of
#: FOCUS_CLASS, and the element that has the keys while the pointer is over it (ipyevents marks
#: it ``ipyevents-watched``)
#: class of a ``widgets.Play`` whose own play/pause icon button gives way to a labelled
#: :func:`play_toggle` beside it (its stop and repeat buttons stay)
TOGGLED_PLAY_CLASS = "richviz-play-toggled"
FOCUS_CSS = (
    f"<style>.{FOCUS_CLASS} :focus-visible, .{FOCUS_CLASS} .noUi-handle:focus "
    "{ outline: 2px solid #1a73e8 !important; outline-offset: 1px; }"
    f".{FOCUS_CLASS} .ipyevents-watched, .{FOCUS_CLASS}.ipyevents-watched "
    "{ outline: 2px solid #1a73e8; outline-offset: -2px; }"
    f".{TOGGLED_PLAY_CLASS} > button:first-child {{ display: none; }}</style>"
)


def key_action(event: Mapping[str, Any]) -> str | None:
    """The action of a ``keydown`` event (a dict with ``key`` and, optionally, ``ctrlKey``,
    ``altKey``, ``metaKey``, as ipyevents sends it); ``None`` for any other key or when Ctrl,
    Alt or Meta is held.

    Examples
    --------
    >>> from richviz.widgets.keyboard import key_action
    >>> key_action({"key": "ArrowRight"}), key_action({"key": " "}), key_action({"key": "K"})
    ('next', 'toggle_play', 'toggle_play')
    >>> key_action({"key": "ArrowRight", "ctrlKey": True}) is None
    True
    """
    if any(event.get(m) for m in _MODIFIERS):
        return None
    key = event.get("key")
    if not isinstance(key, str):
        return None
    return KEYS.get(key if len(key) != 1 else key.lower())


def step_index(action: str, index: int, count: int) -> int:
    """The index an action moves to among ``count`` steps from ``index`` (clamped to the ends:
    ``next`` on the last step stays there); ``toggle_play`` keeps ``index``.

    Examples
    --------
    >>> from richviz.widgets.keyboard import step_index
    >>> step_index("next", 2, 5), step_index("next", 4, 5), step_index("first", 3, 5)
    (3, 4, 0)
    """
    if action not in ACTIONS:
        raise ValueError(f"action={action!r} must be one of {ACTIONS}")
    if count <= 0:
        return 0
    index = min(max(int(index), 0), count - 1)
    moved = {"previous": index - 1, "next": index + 1, "first": 0, "last": count - 1}
    return min(max(moved.get(action, index), 0), count - 1)


def play_toggle(tooltip: str = "Play/Pause (Space or k)") -> widgets.ToggleButton:
    """A Play/Pause toggle button: focusable, toggled by Space/Enter, labelled for a screen
    reader (its text says Play or Pause, its tooltip the keys); link its ``value`` to a
    ``widgets.Play``'s ``playing``."""
    button = widgets.ToggleButton(
        value=False, description="Play", icon="play", tooltip=tooltip,
        layout={"width": "80px"},
    )  # fmt: skip

    def relabel(change: dict) -> None:
        button.description, button.icon = ("Pause", "pause") if change["new"] else ("Play", "play")

    button.observe(relabel, names="value")
    return button


def focus_style() -> widgets.HTML:
    """A hidden HTML widget carrying :data:`FOCUS_CSS` (put it inside the widget)."""
    return widgets.HTML(value=FOCUS_CSS, layout=widgets.Layout(display="none"))


class KeyControl:
    """Runs ``actions[name]()`` for the keys of :data:`KEYS` pressed while the pointer is over
    one of ``sources`` (an ``ipyevents.Event`` per source, ``keydown`` only).

    ``actions`` maps action names of :data:`ACTIONS` to callables without arguments; keys of
    actions not given are ignored. An action's exception goes to ``on_error`` (default:
    re-raised), so a key never breaks the widget. Attributes: ``events`` (the ipyevents
    widgets), ``pressed`` (the actions run, newest last, at most 100).

    Examples
    --------
    >>> import ipywidgets as widgets
    >>> from richviz.widgets.keyboard import KeyControl
    >>> moved = []
    >>> keys = KeyControl([widgets.Box()], {"next": lambda: moved.append(1)})
    >>> keys.handle({"type": "keydown", "key": "ArrowRight"})
    'next'
    >>> keys.handle({"type": "keydown", "key": "ArrowLeft"}) is None, moved
    (True, [1])
    >>> keys.close()
    """

    def __init__(
        self,
        sources: Iterable[widgets.DOMWidget],
        actions: Mapping[str, Callable[[], Any]],
        on_error: Callable[[Exception], None] | None = None,
    ):
        from ipyevents import Event

        unknown = set(actions) - set(ACTIONS)
        if unknown:
            raise ValueError(f"actions {sorted(unknown)} must be among {ACTIONS}")
        self.actions = dict(actions)
        self.on_error = on_error
        self.pressed: list[str] = []
        self.events = []
        for source in sources:
            event = Event(source=source, watched_events=["keydown"])
            event.on_dom_event(self.handle)
            self.events.append(event)

    def handle(self, event: Mapping[str, Any]) -> str | None:
        """Run the action of one ``keydown`` event; returns its name (``None``: not ours)."""
        if event.get("type", "keydown") != "keydown":
            return None
        action = key_action(event)
        fn = self.actions.get(action) if action is not None else None
        if fn is None:
            return None
        self.pressed = [*self.pressed[-99:], action]
        try:
            fn()
        except Exception as exc:
            if self.on_error is None:
                raise
            self.on_error(exc)
        return action

    def close(self) -> None:
        """Close the ipyevents widgets."""
        for event in self.events:
            event.close()
        self.events = []
