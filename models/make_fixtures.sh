#!/usr/bin/env bash
# Regenerate every fixture model, validation file and golden expectation:
#   models/make_fixtures.sh
# Creates .venv-fixtures (git-ignored) at the repository root if missing, installs the pinned
# requirements, then runs the generators. Deterministic: a rerun rewrites identical files.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"
venv="${FIXTURES_VENV:-$root/.venv-fixtures}"
python="${PYTHON:-python3}"

if [ ! -x "$venv/bin/python" ]; then
    "$python" -m venv "$venv"
fi
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$here/requirements.txt"

# One BLAS thread: same summation order on every run.
export OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 PYTHONHASHSEED=0
cd "$root"
"$venv/bin/python" "$here/make_models.py"
# The transformer comes from PyTorch, in its own venv (.venv-torch: torch's CUDA wheel, ~5 GB).
if [ "${SMD_FIXTURES_SKIP_TORCH:-}" = 1 ]; then
    echo "*** SMD_FIXTURES_SKIP_TORCH=1: NOT regenerating models/digits_transformer.onnx and" >&2
    echo "*** fixtures/digits_tokens_val.npz; the committed files are kept as they are." >&2
else
    torch_venv="${TORCH_VENV:-$root/.venv-torch}"
    if [ ! -x "$torch_venv/bin/python" ]; then
        "$python" -m venv "$torch_venv"
    fi
    "$torch_venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$here/requirements-torch.txt"
    "$torch_venv/bin/python" "$here/make_transformer.py"
fi
"$venv/bin/python" "$here/make_expected.py"
"$venv/bin/python" "$here/make_metrics.py"
