"""A stable look per run: a colour from a colour-blind-safe palette, then dashes and markers.

Each name gets its look the first time it is asked for and keeps it for good, so a run keeps its
colour across every chart and every re-selection. The first 8 names get the 8 colours of Okabe
& Ito's palette with solid lines; names 9-32 repeat the colours with dashed, dotted and
dash-dotted lines; beyond 32 a marker shape is added (circle, square, triangle, diamond), so
160 runs still look distinct pairwise.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["DASHES", "MARKERS", "PALETTE", "RunColors", "Style"]

#: Okabe & Ito's colour-blind-safe palette (black last), the same as the line charts'
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000")
#: line styles after the colours run out (names of :mod:`richviz.widgets.charts`)
DASHES = ("solid", "dashed", "dotted", "dash_dotted")
#: markers after colours x dashes run out (None: no marker)
MARKERS = (None, "circle", "square", "triangle-up", "diamond")


@dataclass(frozen=True)
class Style:
    """How one run is drawn: ``color`` (hex), ``dash`` (a line style name), ``marker``."""

    color: str
    dash: str = "solid"
    marker: str | None = None


class RunColors:
    """A look per name, fixed on first use (see the module docstring).

    Examples
    --------
    >>> from richviz.compare import RunColors
    >>> colors = RunColors(["lazy", "rich"])
    >>> colors.color("rich"), colors.color("lazy")
    ('#E69F00', '#0072B2')
    >>> colors.style("new").color  # the third name gets the third colour
    '#009E73'
    """

    def __init__(self, names: list[str] | tuple[str, ...] = ()):
        self._styles: dict[str, Style] = {}
        for name in names:
            self.style(name)

    def style(self, name: str) -> Style:
        """The look of ``name`` (assigned now if it is new)."""
        found = self._styles.get(name)
        if found is None:
            i = len(self._styles)
            n, m = len(PALETTE), len(PALETTE) * len(DASHES)
            found = Style(
                PALETTE[i % n], DASHES[(i // n) % len(DASHES)], MARKERS[(i // m) % len(MARKERS)]
            )
            self._styles[name] = found
        return found

    def color(self, name: str) -> str:
        """The colour of ``name``."""
        return self.style(name).color

    def __contains__(self, name: object) -> bool:
        return name in self._styles

    def __len__(self) -> int:
        return len(self._styles)
