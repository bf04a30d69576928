#!/usr/bin/env bash
# Local workers (issue 16): `evolve --workers N` (N CPU worker processes, the cores split
# between them, the merge step in the driver) against one process using every core, side by
# side in one run, on the benchmark models of benches/make_models.py. Runs alternate (one,
# workers, one, workers …) so that load from elsewhere hits both; wall-clock medians of RUNS
# runs and their ratio (workers / one: below 1 means the workers are faster). Both runs'
# best.onnx are compared byte for byte first. Prints a Markdown table.
#   benches/workers.sh          (MODELS="mlp_small mobilenet_7mb" K=8 G=2 WORKERS="2" RUNS=3)
#   SMD_BIN=/path/to/smd-onnx benches/workers.sh   (measure that binary, build nothing)
set -euo pipefail
cd "$(dirname "$0")/.."
. benches/lib.sh
MODELS=${MODELS:-mlp_small mobilenet_7mb}
K=${K:-8}
G=${G:-2}
WORKERS=${WORKERS:-2}
RUNS=${RUNS:-3}
if [ -n "${SMD_BIN:-}" ]; then SMD=$SMD_BIN; else cargo build --release --quiet --bin smd-onnx; fi
setup_venv
make_models
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
echo "$(nproc) cores; $K children, $G generations; median of $RUNS runs (wall seconds)"
echo
echo "| model | one process | workers | workers / one |"
echo "|---|---|---|---|"
wall() { local t0 t1; t0=$(date +%s%N); "$@" > /dev/null; t1=$(date +%s%N); echo "$(( (t1 - t0) / 1000000 ))"; }
median() { tr ' ' '\n' | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
for model in $MODELS; do
  data=$(data_of "$model")
  run=("$SMD" evolve "$MODEL_DIR/$model.onnx" --data "$data" --children "$K" --generations "$G" --export best --force)
  for n in $WORKERS; do
    one=""; many=""
    for r in $(seq "$RUNS"); do
      one="$one $(wall "${run[@]}" --out "$scratch/one")"
      many="$many $(wall "${run[@]}" --out "$scratch/workers" --workers "$n")"
      if [ -f "$scratch/one/best.onnx" ] || [ -f "$scratch/workers/best.onnx" ]; then
        cmp "$scratch/one/best.onnx" "$scratch/workers/best.onnx" || { echo "best.onnx differs ($model, $n workers)" >&2; exit 1; }
      fi
    done
    a=$(echo $one | median); b=$(echo $many | median)
    awk -v m="$model" -v n="$n" -v a="$a" -v b="$b" 'BEGIN { printf "| %s | %.2f | %.2f (%d workers) | %.2f |\n", m, a/1000, b/1000, n, b/a }'
  done
done
