#!/usr/bin/env bash
# The main job: install (first time only) and open JupyterLab on the quick-start notebook.
#   bash run.sh               opens a browser tab
#   bash run.sh --no-browser  prints the URL instead (servers, containers, Binder-like setups)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
bash scripts/setup-env.sh
exec .venv/bin/python -m jupyterlab notebooks/01_quickstart.ipynb "$@"
