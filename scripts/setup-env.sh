#!/usr/bin/env bash
# Create (or reuse) the project's virtual environment in .venv and install richviz with its
# test extra. Torch comes first at a pinned version (see README, "Installing torch").
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$here"
PY="${PYTHON:-python3}"
TORCH_SPEC="${RICHVIZ_TORCH:-torch==2.14.1 torchvision==0.29.1}"
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
stamp=".venv/.richviz-installed"
want="$(cat pyproject.toml scripts/setup-env.sh | sha1sum | cut -d' ' -f1)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    echo "richviz: installing dependencies into .venv (torch first) ..."
    pipq() {
        if ! .venv/bin/python -m pip install -q "$@" >.venv/pip.log 2>&1; then
            grep -v "is ignored" .venv/pip.log >&2
            echo "richviz: 'pip install $*' failed" >&2
            exit 1
        fi
    }
    # shellcheck disable=SC2086
    pipq $TORCH_SPEC
    pipq -e ".[test]"
    .venv/bin/python -c "import torch, torchvision, richviz" \
        || { echo "richviz: installation failed" >&2; exit 1; }
    echo "$want" > "$stamp"
fi
# Jupyter kernels of this environment import torch and the widget stack in the background as
# they start (richviz/kernel_warmup.py; RICHVIZ_KERNEL_WARMUP=0 turns it off).
.venv/bin/python -m richviz.kernel_warmup install >/dev/null
