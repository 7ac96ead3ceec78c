"""Keyboard control (richviz.widgets.keyboard): the key table, the step arithmetic, and the
wiring in the Explorer and the Playground, driven by the events ipyevents sends.

The browser side (focus, the keys reaching the kernel, Play starting and stopping) is in
tests/test_browser_keyboard.py.
"""

from __future__ import annotations

import dataclasses
import time

import pytest

pytest.importorskip("ipywidgets", reason="widget tests need ipywidgets")
pytest.importorskip("bqplot", reason="widget tests need bqplot")
pytest.importorskip("ipyevents", reason="keyboard control needs ipyevents")

import ipywidgets as widgets  # noqa: E402

from richviz import train  # noqa: E402
from richviz.runs import Run  # noqa: E402
from richviz.widgets import Explorer, Playground  # noqa: E402
from richviz.widgets.keyboard import (  # noqa: E402
    ACTIONS,
    FOCUS_CLASS,
    FOCUS_CSS,
    KEYS,
    KeyControl,
    key_action,
    play_toggle,
    step_index,
)

pytestmark = pytest.mark.usefixtures("one_thread")

STEPS = [0, 1, 3, 12]


def keydown(key: str, **mods: bool) -> dict:
    """A keydown event as ipyevents sends it to the kernel (the fields we read, and a few)."""
    code = {" ": "Space"}.get(key, key)
    event = {"type": "keydown", "event": "keydown", "key": key, "code": code, "repeat": False}
    return {**event, "ctrlKey": False, "altKey": False, "metaKey": False, "shiftKey": False, **mods}


# ----------------------------------------------------------------------------- pure


@pytest.mark.parametrize(
    "key, action",
    [("ArrowRight", "next"), ("ArrowLeft", "previous"), ("Home", "first"), ("End", "last"),
     (" ", "toggle_play"), ("k", "toggle_play"), ("K", "toggle_play"), ("j", "previous"),
     ("l", "next"), ("L", "next")],
)  # fmt: skip
def test_keys_map_to_actions(key, action):
    assert key_action(keydown(key)) == action
    assert action in ACTIONS and key_action({"key": key}) == action  # minimal event


@pytest.mark.parametrize("key", ["a", "Enter", "Tab", "ArrowUp", "ArrowDown", "Escape", "", "kk"])
def test_other_keys_do_nothing(key):
    assert key_action(keydown(key)) is None


@pytest.mark.parametrize("mod", ["ctrlKey", "altKey", "metaKey"])
def test_keys_with_ctrl_alt_or_meta_are_someone_elses_shortcut(mod):
    for key in KEYS:
        assert key_action(keydown(key, **{mod: True})) is None
    assert key_action(keydown("K", shiftKey=True)) == "toggle_play"  # Shift only


def test_malformed_events_are_ignored():
    assert key_action({}) is None
    assert key_action({"key": None}) is None
    assert key_action({"key": 3}) is None


def test_step_index_moves_one_and_stays_within_the_ends():
    # independent: walk a list of 5 steps by hand
    steps = list(range(5))
    for i in steps:
        assert step_index("next", i, 5) == steps[min(i + 1, 4)]
        assert step_index("previous", i, 5) == steps[max(i - 1, 0)]
        assert step_index("first", i, 5) == 0
        assert step_index("last", i, 5) == 4
        assert step_index("toggle_play", i, 5) == i
    assert step_index("next", 0, 1) == 0 and step_index("previous", 0, 1) == 0
    assert step_index("next", 0, 0) == 0  # no steps
    assert step_index("next", 9, 5) == 4 and step_index("previous", -3, 5) == 0  # out of range
    with pytest.raises(ValueError, match="action='jump'"):
        step_index("jump", 0, 5)


def test_key_control_runs_only_given_actions_and_reports_errors():
    calls, errors = [], []

    def boom():
        raise RuntimeError("no checkpoint")

    keys = KeyControl(
        [widgets.Box(), widgets.Box()],
        {"next": lambda: calls.append("next"), "toggle_play": boom},
        on_error=errors.append,
    )
    assert len(keys.events) == 2 and all(e.watched_events == ["keydown"] for e in keys.events)
    assert keys.handle(keydown("ArrowRight")) == "next" and calls == ["next"]
    assert keys.handle(keydown("ArrowLeft")) is None and calls == ["next"]  # not given
    assert keys.handle({"type": "keyup", "key": "ArrowRight"}) is None and calls == ["next"]
    assert keys.handle(keydown(" ")) == "toggle_play"
    assert [str(e) for e in errors] == ["no checkpoint"] and keys.pressed == ["next", "toggle_play"]
    # the route a browser's key takes: ipyevents' custom message to its Event widget
    keys.events[1]._handle_mouse_msg(keys.events[1], keydown("l"), [])
    assert calls == ["next", "next"]
    keys.close()
    assert keys.events == []
    with pytest.raises(ValueError, match="among"):
        KeyControl([], {"jump": lambda: None})


def test_play_toggle_is_labelled_and_relabels():
    b = play_toggle()
    assert (b.description, b.icon, b.value) == ("Play", "play", False)
    assert "Space" in b.tooltip
    b.value = True
    assert (b.description, b.icon) == ("Pause", "pause")
    b.value = False
    assert b.description == "Play"


def test_focus_css_outlines_focus_inside_the_class():
    assert f".{FOCUS_CLASS} :focus-visible" in FOCUS_CSS and "outline" in FOCUS_CSS
    assert "ipyevents-watched" in FOCUS_CSS


# ----------------------------------------------------------------------------- Explorer


@pytest.fixture(scope="module")
def explorer(tiny_run):
    cfg = dataclasses.replace(train.PRESETS["circles"], steps=12, checkpoints=4)
    run = Run.open(tiny_run(cfg, seed=0))
    assert run.steps == STEPS
    ex = Explorer(
        run, viewer={"resolution": 8, "coarse_resolution": 4, "ellipse_density": 2},
        panel={"autoload": False}, device="cpu",
    )  # fmt: skip
    yield ex
    ex.close()


def test_explorer_keys_move_every_view(explorer):
    ex = explorer
    keys = ex.viewer.key_control
    figure, row = ex.viewer.figure, ex.viewer.step_row
    assert [e.source for e in keys.events] == [figure, row]
    assert FOCUS_CLASS in figure._dom_classes and FOCUS_CLASS in row._dom_classes
    assert ex.step == 12
    for key, expected in [("ArrowLeft", 3), ("ArrowLeft", 1), ("j", 0), ("ArrowLeft", 0),
                          ("ArrowRight", 1), ("End", 12), ("ArrowRight", 12), ("Home", 0),
                          ("l", 1)]:  # fmt: skip
        keys.handle(keydown(key))
        views = (ex.step, ex.viewer.step, ex.browser.step, ex.panel.step)
        assert views == (expected,) * 4, key
        assert ex.viewer.step_slider.value == expected
    assert ex.wait(60) and ex.viewer.shown_step == 1


def test_explorer_space_toggles_play_and_the_toggle_button_follows(explorer):
    v = explorer.viewer
    assert not v.step_play.playing and v.play_toggle.description == "Play"
    v.key_control.handle(keydown(" "))
    assert v.step_play.playing and v.play_toggle.value and v.play_toggle.description == "Pause"
    v.key_control.handle(keydown("k"))
    assert not v.step_play.playing and not v.play_toggle.value
    v.play_toggle.value = True  # the button (Space/Enter on it when focused) plays too
    assert v.step_play.playing
    explorer.press("toggle_play")
    assert not v.step_play.playing


def test_explorer_controls_have_labels(explorer):
    v = explorer.viewer
    assert v.step_slider.description == "step" and "ArrowLeft" in v.step_slider.tooltip
    assert v.step_play.tooltip and v.play_toggle.tooltip
    assert v.play_toggle in v.step_row.children
    assert v.focus_css in v.controls.children


# ----------------------------------------------------------------------------- Playground


def poll(predicate, timeout: float = 60.0) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def test_playground_keys_start_pause_step_and_reset(tmp_path):
    pg = Playground(data="moons", n=60, width=4, depth=1, batch_size=16, device="cpu",
                    root=tmp_path / "runs", fps=30, steps_per_click=3)  # fmt: skip
    try:
        keys = pg.key_control
        assert [e.source for e in keys.events] == [pg.figure]
        assert "Space" in pg.start_button.tooltip and "ArrowRight" in pg.step_button.tooltip
        assert keys.handle(keydown("ArrowRight")) == "next"  # Step: steps_per_click steps
        assert pg.wait(60) and pg.trainer.step_count == 3
        assert keys.handle(keydown("ArrowLeft")) is None  # training has no way back
        assert keys.handle(keydown(" ")) == "toggle_play"
        assert pg.trainer.running
        assert poll(lambda: pg.trainer.step_count > 3)
        assert keys.handle(keydown("k")) == "toggle_play"
        assert pg.wait(60) and not pg.trainer.running
        stopped = pg.trainer.step_count
        time.sleep(0.3)
        assert pg.trainer.step_count == stopped  # paused: no more steps
        assert keys.handle(keydown("Home")) == "first"
        assert pg.wait(60) and pg.trainer.step_count == 0 and pg.drawn_step == 0
        with pytest.raises(Exception, match="action='jump'"):
            pg.press("jump")
    finally:
        pg.close()
    assert keys.events == []
