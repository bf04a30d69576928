#!/usr/bin/env bash
# Recovery of quantization loss (issue 18 item 6): for each quantized fixture, the holdout
# accuracy of the float model it was made from, of the quantized model, and of the model
# `evolve` ends with (default search: 16 children, partition, σ 0.1, one generation; then
# EXTRA settings if given) over several seeds, with the share of the quantization loss
# recovered ((evolved − quantized) / (float − quantized), of the means) and the sizes of the
# quantized parent and of best.onnx (the parent's bytes with integer payloads changed, plus the
# lineage metadata). Prints a Markdown table.
#
# Usage: benches/quantized.sh [SEEDS...]   (default: 0 1 2 3 4)
#   NO_BUILD=1             use target/release/smd-onnx as it is
#   EXTRA="--generations 5"   more evolve arguments (a second search setting)
#   MODELS="digits_cnn_qdq_int4"   a subset of the quantized fixtures
#   ENSEMBLES=1            instead: the size of evolve's exported ensemble of 16 children
#                          (`--ensemble mean`, seed 0) against 16 copies of the parent
set -euo pipefail
cd "$(dirname "$0")/.."
[ "${NO_BUILD:-0}" = 1 ] || cargo build --release -q
bin=target/release/smd-onnx
seeds=("${@:-0 1 2 3 4}")
extra=${EXTRA:-}
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
if [ "${ENSEMBLES:-0}" != 1 ]; then
  echo "evolve settings: defaults${extra:+ plus $extra}; seeds ${seeds[*]}; holdout accuracy"
  echo
  echo "| quantized model (from) | float | quantized | evolved, mean ± sd | recovered | parent bytes | best.onnx bytes |"
  echo "|---|---|---|---|---|---|---|"
fi
# quantized model, the float model it was made from, data
specs=("digits_cnn_qdq_int4 digits_cnn digits_val" "digits_cnn_qdq_int8 digits_cnn digits_val"
       "digits_cnn_qop_int8 digits_cnn digits_val" "mnist_mlp_dynamic mnist_mlp mnist_val"
       "mnist_mlp_nbits mnist_mlp mnist_val" "mnist_mlp_qdq_block mnist_mlp mnist_val")
if [ "${ENSEMBLES:-0}" = 1 ]; then
  echo "| model | parent | 16 copies | exported ensemble (16 members) | ensemble / parent |"
  echo "|---|---|---|---|---|"
fi
for spec in "${specs[@]}"; do
  set -- $spec
  if [ -n "${MODELS:-}" ] && [[ " $MODELS " != *" $1 "* ]]; then continue; fi
  if [ "${ENSEMBLES:-0}" = 1 ]; then
    "$bin" evolve "models/$1.onnx" --data "fixtures/$3.npz" --children 16 --ensemble mean \
      --seed 0 --out "$out/$1-ens" > /dev/null
    p=$(stat -c %s "models/$1.onnx"); e=$(stat -c %s "$out/$1-ens/ensemble.onnx")
    awk -v m="$1" -v p="$p" -v e="$e" 'BEGIN { printf "| %s | %.1f kB | %.1f kB | %.1f kB | %.1f |\n", m, p/1e3, 16*p/1e3, e/1e3, e/p }'
    continue
  fi
  "$bin" score "models/$2.onnx" --data "fixtures/$3.npz" --split holdout --json > "$out/float.json"
  for seed in ${seeds[@]}; do
    # shellcheck disable=SC2086
    "$bin" evolve "models/$1.onnx" --data "fixtures/$3.npz" --seed "$seed" --export best \
      --out "$out/$1-$seed" $extra --json > "$out/$1-$seed.json"
  done
  python3 - "$1" "$2" "$out" ${seeds[@]} <<'PY'
import json, os, statistics, sys
model, source, out, seeds = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
f = json.load(open(f"{out}/float.json"))["metrics"]["accuracy"]
q, ev, sizes = None, [], []
for s in seeds:
    r = json.load(open(f"{out}/{model}-{s}.json"))
    q = r["parent"]["holdout"]["accuracy"]
    best = r["best"]
    ev.append(best["scores"]["holdout"]["accuracy"] if best else q)
    p = f"{out}/{model}-{s}/best.onnx"
    if os.path.exists(p):
        sizes.append(os.path.getsize(p))
m = statistics.mean(ev)
sd = statistics.stdev(ev) if len(ev) > 1 else 0.0
loss = f - q
rec = f"{100 * (m - q) / loss:.0f}%" if loss > 0 else "no loss"
parent = os.path.getsize(f"models/{model}.onnx")
best = f"{min(sizes)}–{max(sizes)}" if sizes else "parent kept"
print(f"| {model} ({source}) | {100*f:.2f}% | {100*q:.2f}% | {100*m:.2f}% ± {100*sd:.2f} | {rec} | {parent} | {best} |")
PY
done
