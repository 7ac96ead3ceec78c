"""Comparing runs, headless: open many runs, tabulate them, colour, smooth, group, export.

The numbers behind :class:`richviz.widgets.Compare`, one idea per module:

- :mod:`~richviz.compare.sources`: :func:`open_runs` (Runs, run folders, a sweep's table) ->
  :class:`RunEntry` with one-line reasons for runs that cannot be compared;
- :mod:`~richviz.compare.table`: :func:`varying_hparams`, :func:`run_table`, :func:`sort_table`;
- :mod:`~richviz.compare.colors`: :class:`RunColors`, a stable colour (and dash) per run;
- :mod:`~richviz.compare.curves`: x against step or fraction of training, :func:`ema`;
- :mod:`~richviz.compare.groups`: :func:`group_entries`, :func:`group_bands` (mean +- spread);
- :mod:`~richviz.compare.csv_io`: :func:`write_csv` / :func:`read_csv`;
- :mod:`~richviz.compare.background`: :func:`fill_missing` (missing metrics via the run's cache).

Importing it imports no widget and loads no checkpoint.
"""

from richviz.compare.background import fill_missing
from richviz.compare.colors import DASHES, MARKERS, PALETTE, RunColors, Style
from richviz.compare.csv_io import comparison_csv, read_csv, write_csv
from richviz.compare.curves import X_AXES, column, curve, ema, x_values
from richviz.compare.groups import SPREADS, Band, group_bands, group_entries, group_label
from richviz.compare.sources import META_KEYS, RunEntry, check_comparable, open_runs
from richviz.compare.table import (
    FINAL_COLUMNS,
    final_value,
    run_table,
    sort_table,
    varying_hparams,
)

__all__ = [
    "DASHES",
    "FINAL_COLUMNS",
    "MARKERS",
    "META_KEYS",
    "PALETTE",
    "SPREADS",
    "X_AXES",
    "Band",
    "RunColors",
    "RunEntry",
    "Style",
    "check_comparable",
    "column",
    "comparison_csv",
    "curve",
    "ema",
    "fill_missing",
    "final_value",
    "group_bands",
    "group_entries",
    "group_label",
    "open_runs",
    "read_csv",
    "run_table",
    "sort_table",
    "varying_hparams",
    "write_csv",
    "x_values",
]
