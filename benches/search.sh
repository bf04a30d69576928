#!/usr/bin/env bash
# Fixed σ against `--sigma auto` at the same budget of forward passes (issue 12): for each
# fixture and σ, `evolve --generations auto --budget BUDGET` over SEEDS; the holdout gain of
# the exported best model (0 when the parent is kept: nothing beat it, or the export gate held
# it back), and of the exported ensemble (0 when none was written), against the original; mean
# ± standard deviation over seeds, the worst run, and the passes spent.
# Prints a Markdown table.
#   benches/search.sh                      (BUDGET=200 SEEDS="0 1 2 3 4")
#   BUDGET=100 SEEDS="0 1" SIGMAS="0.1 auto" benches/search.sh
#   EXTRA="--line-search" benches/search.sh   (extra evolve arguments, shown in the σ column)
#   SMD_BIN=/path/to/smd-onnx benches/search.sh   (measure that binary, build nothing)
set -euo pipefail
cd "$(dirname "$0")/.."
BUDGET=${BUDGET:-200}
SEEDS=${SEEDS:-0 1 2 3 4}
SIGMAS=${SIGMAS:-0.03 0.1 0.3 1.0 auto}
FIXTURES=${FIXTURES:-mnist_mlp:mnist_val digits_cnn_undertrained:digits_val}
EXTRA=${EXTRA:-}
# SMD_BIN: a binary to measure instead of building this checkout's release binary.
bin=${SMD_BIN:-target/release/smd-onnx}
[ -n "${SMD_BIN:-}" ] || cargo build --release -q --bin smd-onnx
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
echo "budget $BUDGET passes over the selection split, seeds $SEEDS, 16 children, --generations auto (patience 2)"
echo
echo "| model | σ | best Δ holdout (points) | ensemble Δ holdout | worst best / ensemble Δ | significant best (p<0.05, CI>0) | generations | selection passes |"
echo "|---|---|---|---|---|---|---|---|"
for spec in $FIXTURES; do
  model=${spec%%:*}; data=${spec##*:}
  for sigma in $SIGMAS; do
    for seed in $SEEDS; do
      "$bin" evolve "models/$model.onnx" --data "fixtures/$data.npz" --seed "$seed" \
        --sigma "$sigma" --generations auto --budget "$BUDGET" --export ensemble $EXTRA \
        --out "$out/$model-$sigma-$seed" --json > "$out/$model-$sigma-$seed.json"
    done
    python3 - "$model" "$sigma${EXTRA:+ $EXTRA}" "$out" $SEEDS <<'PY'
import json, statistics, sys
model, sigma, out, seeds = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
best, ens, sig, gens, passes = [], [], 0, [], []
for s in seeds:
    r = json.load(open(f"{out}/{model}-{sigma.split()[0]}-{s}.json"))
    # What the run exports as best.onnx (this script writes the ensemble only): nothing when
    # no candidate beat the parent or the export gate (--accept-p) holds the best back, 0.
    b = r["best"]
    if b and b.get("selection_p", 0.0) >= r["settings"]["accept_p"] and r["settings"]["accept_p"] < 1:
        b = None
    best.append(100 * b["gain_vs_original"] if b else 0.0)
    if b:
        si = b["significance"]
        sig += int(si.get("mcnemar_p", 1.0) < 0.05 and si["ci95"][0] > 0)
    e = {x["name"]: x for x in r["ensembles"]}
    # No ensemble (every child of the last generation dropped by racing): the parent stays.
    kind = r["outputs"].get("ensemble_kind")
    ens.append(100 * e[kind]["gain_vs_original"] if kind else 0.0)
    gens.append(len(r["generations"]))
    passes.append(r["passes"]["selection"])
ms = lambda v: f"{statistics.mean(v):+.2f} ± {statistics.stdev(v) if len(v) > 1 else 0:.2f}"
print(f"| {model} | {sigma} | {ms(best)} | {ms(ens)} | {min(best):+.2f} / {min(ens):+.2f} | {sig}/{len(seeds)} | {statistics.mean(gens):.1f} | {statistics.mean(passes):.0f} |")
PY
  done
done
