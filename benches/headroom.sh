#!/usr/bin/env bash
# Holdout gains of `evolve` with default settings (16 children, partition, sigma 0.1, one
# generation) over several seeds, on the fixtures with headroom. Prints a Markdown table.
#
# Then the gradient anchor (issue 12 item 6): for mnist_mlp and digits_cnn_undertrained,
# benches/gradient_anchor.py fine-tunes the model with Adam on smd-onnx's selection rows (same
# split) and reports its holdout gain; against it, `evolve --generations auto --budget BUDGET`
# at each σ of SIGMAS over the same seeds: holdout gain of the model the run ends with (best
# candidate, or the parent kept: 0) and of the exported ensemble, mean ± sd over seeds, and
# smd gain / gradient gain (of the means). Prints a second Markdown table.
#
# Usage: benches/headroom.sh [SEEDS...]   (default: 0 1 2 3 4)
#   ANCHOR=0        only the first table
#   NO_BUILD=1      use target/release/smd-onnx as it is (no cargo build)
#   BUDGET=200 SIGMAS="0.1 auto"   the anchor table's evolve settings
#   ANCHOR_PY=.venv-fixtures/bin/python   interpreter with numpy, onnx, onnxruntime
#                                         (models/make_fixtures.sh creates that venv)
set -euo pipefail
cd "$(dirname "$0")/.."
[ "${NO_BUILD:-0}" = 1 ] || cargo build --release -q
bin=target/release/smd-onnx
seeds=("${@:-0 1 2 3 4}")
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
echo "| model | seed | parent holdout | best child (Δ) | mean ensemble (Δ) | greedy ensemble (Δ) | exported |"
echo "|---|---|---|---|---|---|---|"
for spec in "digits_cnn_undertrained digits_val" "mnist_mlp mnist_val" "digits_cnn digits_val"; do
  set -- $spec
  for seed in ${seeds[@]}; do
    "$bin" evolve "models/$1.onnx" --data "fixtures/$2.npz" --seed "$seed" --out "$out/$1-$seed" --json > "$out/r.json"
    python3 - "$1" "$seed" "$out/r.json" <<'PY'
import json, sys
model, seed, path = sys.argv[1], sys.argv[2], sys.argv[3]
r = json.load(open(path))
p = r["parent"]["holdout"]["accuracy"]
fmt = lambda a: f"{100*a:.2f}% ({100*(a-p):+.2f})"
best = r["best"]
b = fmt(best["scores"]["holdout"]["accuracy"]) if best else "parent kept"
ens = {e["name"]: e for e in r["ensembles"]}
m = fmt(ens["mean"]["scores"]["holdout"]["accuracy"])
g = fmt(ens["greedy"]["scores"]["holdout"]["accuracy"])
kind = r["outputs"].get("ensemble_kind") or "-"
print(f"| {model} | {seed} | {100*p:.2f}% | {b} | {m} | {g} | {kind} |")
PY
  done
done

[ "${ANCHOR:-1}" = 1 ] || exit 0
BUDGET=${BUDGET:-200}
SIGMAS=${SIGMAS:-0.1 auto}
ANCHOR_PY=${ANCHOR_PY:-.venv-fixtures/bin/python}
if [ ! -x "$ANCHOR_PY" ]; then
  echo "$ANCHOR_PY: not found (models/make_fixtures.sh creates .venv-fixtures; or set ANCHOR_PY)" >&2
  exit 1
fi
echo
echo "Gradient anchor: Adam on the selection rows (benches/gradient_anchor.py, grid epochs 5/10/20 × lr 1e-3/3e-3, batch 32, chosen by selection accuracy; gain: mean over 5 shuffle seeds). smd: \`evolve --generations auto --budget $BUDGET\`, 16 children, seeds ${seeds[*]}. Δ in holdout accuracy points against the original model; ratio = mean smd Δ / anchor Δ."
echo
echo "| model | anchor Δ holdout (setting) | σ | smd best Δ holdout | smd ensemble Δ holdout | best / anchor | ensemble / anchor |"
echo "|---|---|---|---|---|---|---|"
for spec in "mnist_mlp mnist_val" "digits_cnn_undertrained digits_val"; do
  set -- $spec
  "$ANCHOR_PY" benches/gradient_anchor.py "models/$1.onnx" "fixtures/$2.npz" > "$out/$1-anchor.json" 2> "$out/$1-anchor.err" \
    || { cat "$out/$1-anchor.err" "$out/$1-anchor.json" >&2; exit 1; }
  for sigma in $SIGMAS; do
    for seed in ${seeds[@]}; do
      "$bin" evolve "models/$1.onnx" --data "fixtures/$2.npz" --seed "$seed" \
        --sigma "$sigma" --generations auto --budget "$BUDGET" --export ensemble \
        --out "$out/$1-$sigma-$seed" --json > "$out/$1-$sigma-$seed.json"
    done
    python3 - "$1" "$sigma" "$out" ${seeds[@]} <<'PY'
import json, statistics, sys
model, sigma, out, seeds = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
a = json.load(open(f"{out}/{model}-anchor.json"))
best, ens = [], []
for s in seeds:
    r = json.load(open(f"{out}/{model}-{sigma}-{s}.json"))
    # The anchor must score the same holdout rows: same parent accuracy, same count.
    if (r["parent"]["holdout"]["accuracy"], r["samples"]["holdout"]) != (
        a["parent"]["holdout_accuracy"], a["split"]["holdout_rows"]):
        sys.exit(f"{model}: the anchor's holdout differs from smd-onnx's ({a['parent']}, {r['parent']['holdout']})")
    b = r["best"]
    best.append(100 * b["gain_vs_original"] if b else 0.0)
    e = {x["name"]: x for x in r["ensembles"]}
    ens.append(100 * e[r["outputs"]["ensemble_kind"]]["gain_vs_original"])
ms = lambda v: f"{statistics.mean(v):+.2f} ± {statistics.stdev(v) if len(v) > 1 else 0:.2f}"
g = a["gain_points"]
ratio = lambda v: f"{statistics.mean(v) / g:.2f}" if g > 0 else "n/a"
c = a["chosen"]
anchor = f"{g:+.2f} ± {a['gain_sd']:.2f} ({c['epochs']} ep, lr {c['lr']:g})"
print(f"| {model} | {anchor} | {sigma} | {ms(best)} | {ms(ens)} | {ratio(best)} | {ratio(ens)} |")
PY
  done
done
