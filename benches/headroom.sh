#!/usr/bin/env bash
# Holdout gains of `evolve` with default settings (16 children, partition, sigma 0.1, one
# generation) over several seeds, on the fixtures with headroom. Prints a Markdown table.
# Usage: benches/headroom.sh [SEEDS...]   (default: 0 1 2 3 4)
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q
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
