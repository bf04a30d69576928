#!/usr/bin/env bash
# `evolve --race` against full evaluation, side by side in one run (issue 12 item 4): for each
# fixture, σ and seed, `evolve --generations auto --budget BUDGET` with and without --race;
# passes over the selection and holdout splits, and the holdout gains of the best model and of
# the exported ensemble (0 when none was built) against the original; mean ± sd over seeds.
# The ratio column is raced / full selection passes. Prints a Markdown table.
#   benches/race.sh                          (BUDGET=200 SEEDS="0 1 2 3 4" SIGMAS="0.1 0.3 1.0")
#   SMD_BIN=/path/to/smd-onnx benches/race.sh   (measure that binary, build nothing)
set -euo pipefail
cd "$(dirname "$0")/.."
BUDGET=${BUDGET:-200}
SEEDS=${SEEDS:-0 1 2 3 4}
SIGMAS=${SIGMAS:-0.1 0.3 1.0}
FIXTURES=${FIXTURES:-mnist_mlp:mnist_val digits_cnn_undertrained:digits_val}
bin=${SMD_BIN:-target/release/smd-onnx}
[ -n "${SMD_BIN:-}" ] || cargo build --release -q --bin smd-onnx
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
echo "budget $BUDGET passes over the selection split, seeds $SEEDS, 16 children, --generations auto (patience 2)"
echo
echo "| model | σ | selection passes: full → raced (ratio) | holdout passes: full → raced | best Δ: full / raced | ensemble Δ: full / raced | children dropped |"
echo "|---|---|---|---|---|---|---|"
for spec in $FIXTURES; do
  model=${spec%%:*}; data=${spec##*:}
  for sigma in $SIGMAS; do
    for seed in $SEEDS; do
      for how in full race; do
        extra=""; [ "$how" = race ] && extra="--race"
        "$bin" evolve "models/$model.onnx" --data "fixtures/$data.npz" --seed "$seed" \
          --sigma "$sigma" --generations auto --budget "$BUDGET" --export ensemble $extra \
          --out "$out/$model-$sigma-$seed-$how" --json > "$out/$model-$sigma-$seed-$how.json"
      done
    done
    python3 - "$model" "$sigma" "$out" $SEEDS <<'PY'
import json, statistics, sys
model, sigma, out, seeds = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
def stats(how):
    sel, hold, best, ens, dropped, children = [], [], [], [], 0, 0
    for s in seeds:
        r = json.load(open(f"{out}/{model}-{sigma}-{s}-{how}.json"))
        sel.append(r["passes"]["selection"]); hold.append(r["passes"]["holdout"])
        best.append(100 * r["best"]["gain_vs_original"] if r["best"] else 0.0)
        kind = r["outputs"].get("ensemble_kind")
        e = {x["name"]: x for x in r["ensembles"]}
        ens.append(100 * e[kind]["gain_vs_original"] if kind else 0.0)
        dropped += sum(1 for c in r["children"] if c.get("dropped_after") is not None)
        children += len(r["children"])
    return sel, hold, best, ens, dropped, children
ms = lambda v: f"{statistics.mean(v):+.2f} ± {statistics.stdev(v) if len(v) > 1 else 0:.2f}"
m = statistics.mean
f, r = stats("full"), stats("race")
print(f"| {model} | {sigma} | {m(f[0]):.0f} → {m(r[0]):.1f} ({m(r[0]) / m(f[0]):.2f}) | {m(f[1]):.0f} → {m(r[1]):.0f} "
      f"| {ms(f[2])} / {ms(r[2])} | {ms(f[3])} / {ms(r[3])} | {r[4]} of {r[5]} |")
PY
  done
done
