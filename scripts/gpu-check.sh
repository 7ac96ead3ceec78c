#!/usr/bin/env bash
# GPU check for richviz: the test suite on CUDA, the GPU benchmarks, one preset trained and
# measured through the CLI on CUDA. Meant for a machine with one NVIDIA GPU; about 5 minutes.
#
#   bash scripts/gpu-check.sh            # from anywhere; uses python3 from PATH, or $PYTHON
#
# Uses the torch that is already installed (a GPU machine may have its own CUDA build): this
# script installs nothing. Test files that need ipywidgets / bqplot / JupyterLab / nbclient /
# dask are skipped, with the reason (-rs), when those are missing. To run the widget tests too
# on a machine without network, download the pure-Python wheels beforehand on a machine with
# network (`pip download --only-binary=:all: --python-version 3.12 -d .whl ipywidgets bqplot
# "dask[distributed]" ...`, matching the GPU machine's Python) and then:
#   python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl
#   export PYTHONPATH=/tmp/site
# The time limits of the steps add up to 5 minutes.
# Figures printed here are ratios to a plain forward pass over the same points, measured in the
# same run; copy them into README.md ("GPU") with the name of the GPU.
set -uo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
PY="${PYTHON:-python3}"
export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
export RICHVIZ_TEST_DEVICE=cuda
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
failed=()

step() {  # step NAME SECONDS CMD...: run with a time limit, remember failures
    local name=$1 limit=$2
    shift 2
    echo
    echo "=== $name (limit ${limit}s)"
    local t0=$SECONDS
    timeout "$limit" "$@"
    local rc=$?
    echo "--- $name: exit $rc after $((SECONDS - t0)) s"
    [ "$rc" -eq 0 ] || failed+=("$name (exit $rc)")
}

"$PY" - <<'PY' || { echo "gpu-check: CUDA is not available to this torch; nothing to check" >&2; exit 2; }
import sys, torch
print(f"python {sys.version.split()[0]}, torch {torch.__version__}, CUDA {torch.version.cuda}")
if not torch.cuda.is_available():
    sys.exit(1)
free, total = torch.cuda.mem_get_info()
print(f"GPU: {torch.cuda.get_device_name()} ({total / 2**30:.0f} GiB, {free / 2**30:.0f} GiB free)")
PY

step "test suite on CUDA" 150 "$PY" -m pytest tests -q -p no:cacheprovider -m "not browser" \
    --device cuda -rs
step "metric field benchmark, GPU workloads" 60 "$PY" benchmarks/metric_field.py --device cuda \
    --workload gpu --quick --no-memory --repeats 3
step "metric field benchmark, CPU workloads on CUDA" 25 "$PY" benchmarks/metric_field.py \
    --device cuda --workload both --quick --no-memory --repeats 3
step "metrics benchmark" 25 "$PY" benchmarks/metrics.py --device cuda --repeats 5
step "CLI: train digits_cnn on CUDA" 25 "$PY" -m richviz train digits_cnn --out "$tmp/cnn" \
    --steps 60 --device cuda -q
step "CLI: metrics on CUDA" 15 "$PY" -m richviz metrics "$tmp/cnn" --device cuda -q

echo
if [ ${#failed[@]} -eq 0 ]; then
    echo "gpu-check: all steps passed"
else
    printf 'gpu-check: FAILED: %s\n' "${failed[@]}"
    exit 1
fi
