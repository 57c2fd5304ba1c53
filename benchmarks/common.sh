# Shared set-up of the GPU check scripts (sourced, not run): strict mode, the repository root as the working folder,
# DATA required, OUT (default benchmarks/results) created, PY (the project's venv, else python), RUNS a temporary
# folder removed on exit, src/ on PYTHONPATH.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
: "${DATA:?set DATA to the CIFAR-10 subset .npz (or cifar-10-python.tar.gz)}"
OUT=${OUT:-benchmarks/results}
PY=${PY:-.venv/bin/python}
[ -x "$PY" ] || PY=python
mkdir -p "$OUT"
RUNS=$(mktemp -d)
trap 'rm -rf "$RUNS"' EXIT
export PYTHONPATH=src${PYTHONPATH:+:$PYTHONPATH}
