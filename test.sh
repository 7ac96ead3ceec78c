#!/usr/bin/env bash
# Run the whole richviz test suite (installs into .venv on first use): ruff first, then pytest.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
bash scripts/setup-env.sh
export PYTHONUNBUFFERED=1
.venv/bin/ruff check .
exec .venv/bin/python -m pytest "$@"
