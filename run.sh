#!/usr/bin/env bash
# The main job: install (first time only) and open JupyterLab on the quick-start notebook.
#   bash run.sh               opens a browser tab on notebooks/01_quickstart.ipynb
#   bash run.sh --no-browser  prints the URL instead (servers, containers, remote machines)
# Any other arguments are passed on to JupyterLab (e.g. --port 8890).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
bash scripts/setup-env.sh
args=(--ServerApp.root_dir=notebooks --LabApp.default_url=/lab/tree/01_quickstart.ipynb)
if [ "$(id -u)" = "0" ]; then
    args+=(--allow-root)  # containers and CI machines often run as root
fi
exec .venv/bin/python -m jupyterlab "${args[@]}" "$@"
