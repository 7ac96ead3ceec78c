#!/usr/bin/env bash
# Run the whole richviz test suite (installs into .venv on first use): ruff first, then pytest
# on two xdist workers (both cores), each test file on one worker and the real-browser files
# together, so that one JupyterLab runs at a time (tests/conftest.py, pytest_xdist_make_scheduler).
# Arguments go on to pytest, after these: `bash test.sh -n 0` runs in one process.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
bash scripts/setup-env.sh
export PYTHONUNBUFFERED=1
.venv/bin/ruff check .
exec .venv/bin/python -m pytest -n 2 --dist loadfile "$@"
