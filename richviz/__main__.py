"""``python -m richviz``: the same command line as ``richviz``."""

import sys

from richviz.cli import main

sys.exit(main())
