#!/usr/bin/env bash
# Size and speed of `smd-onnx ensemble` (issue 5). For each model, decomposition mode, k and
# mutation scope (full: every default-mutable tensor; head: only the last layer's weight):
#   smd-onnx mutate MODEL --children k --mode MODE --sigma 0.05 [--include HEAD] --out DIR
#   smd-onnx ensemble DIR/child_*.onnx --out DIR/ensemble.onnx
#   target/release/examples/time_models LIB DATA --ensemble DIR/ensemble.onnx DIR/child_*.onnx
# and reports the ensemble's file size against the parent and the k children's files, and the
# inference time of the ensemble (one session, one pass) against the k children's sessions run
# one after another (session creation and inference listed apart; medians of RUNS runs).
# Rewrites the `ensemble.sh` section of benches/RESULTS.md.
#
#   benches/ensemble.sh
#   MODELS=digits_cnn KS="4 16" RUNS=1 benches/ensemble.sh
#
# A full run takes about 15 minutes on 2 cores.
# Environment: MODELS (default: mobilenet_7mb digits_cnn), KS ("4 16 64"), MODES ("partition
# density"), SCOPES ("full head"), RUNS (3), SPEED (1; 0 reports sizes only), NOTE, RESULTS
# (benches/RESULTS.md; empty: print only), BENCH_DIR (target/bench).
# Models: mobilenet_7mb (benches/make_models.py, 64 images of 3x224x224) and the committed
# fixture models/digits_cnn.onnx (600 digits, 8x8); also the quantized fixtures
# digits_cnn_qdq_int8, digits_cnn_qdq_int4, digits_cnn_qop_int8 and mnist_mlp_dynamic.
set -euo pipefail
cd "$(dirname "$0")/.."
. benches/lib.sh

MODELS=${MODELS:-mobilenet_7mb digits_cnn}
KS=${KS:-4 16 64}
MODES=${MODES:-partition density}
SCOPES=${SCOPES:-full head}
RUNS=${RUNS:-3}
SPEED=${SPEED:-1}
RESULTS=${RESULTS-benches/RESULTS.md}
NOTE=${NOTE:-}

setup_venv
build
make_models
LIB=$(ort_library)
INFO=$(machine_info)
echo "$INFO"
OUT=$BENCH_DIR/ensemble
rm -rf "$OUT" && mkdir -p "$OUT"

# `model_files NAME`: "<model> <data> <head regex>".
model_files() {
    case $1 in
        mobilenet_7mb) echo "$MODEL_DIR/mobilenet_7mb.onnx $MODEL_DIR/mobilenet_64.npz ^fc[0-9]+\$" ;;
        digits_cnn) echo "models/digits_cnn.onnx fixtures/digits_val.npz ^fc\\.weight\$" ;;
        # Quantized fixtures: their ensembles store the members whole (see README).
        digits_cnn_qdq_int8|digits_cnn_qdq_int4|digits_cnn_qop_int8)
            echo "models/$1.onnx fixtures/digits_val.npz ^fc\\.weight_quantized\$" ;;
        mnist_mlp_dynamic) echo "models/mnist_mlp_dynamic.onnx fixtures/mnist_val.npz ^fc2\\.weight_quantized\$" ;;
        *) echo "unknown model $1 (mobilenet_7mb, digits_cnn, digits_cnn_qdq_int8/int4, digits_cnn_qop_int8, mnist_mlp_dynamic)" >&2; return 1 ;;
    esac
}

RAW=$OUT/raw.jsonl
: > "$RAW"
for m in $MODELS; do
    read -r model data head < <(model_files "$m")
    for mode in $MODES; do
        for scope in $SCOPES; do
            for k in $KS; do
                dir=$OUT/$m-$mode-$scope-$k
                include=()
                [ "$scope" = head ] && include=(--include "$head")
                "$SMD" mutate "$model" --children "$k" --mode "$mode" --sigma 0.05 "${include[@]}" --out "$dir" > /dev/null
                "$SMD" ensemble "$dir"/child_*.onnx --out "$dir/ensemble.onnx" > "$dir/ensemble.log"
                children=$(cat "$dir"/child_*.onnx | wc -c)
                line="{\"model\": \"$m\", \"mode\": \"$mode\", \"scope\": \"$scope\", \"k\": $k, \"parent_bytes\": $(stat -c %s "$model"), \"children_bytes\": $children, \"ensemble_bytes\": $(stat -c %s "$dir/ensemble.onnx")"
                if [ "$SPEED" = 1 ]; then
                    for i in $(seq "$RUNS"); do
                        t=$(target/release/examples/time_models "$LIB" "$data" --ensemble "$dir/ensemble.onnx" "$dir"/child_*.onnx)
                        echo "$line, \"run\": $i, \"timing\": $t}" >> "$RAW"
                        echo "$m $mode $scope k=$k run $i: $t"
                    done
                else
                    echo "$line}" >> "$RAW"
                    echo "$m $mode $scope k=$k: $line}"
                fi
                rm -f "$dir"/child_*.onnx
            done
        done
    done
done

{
    echo "## ensemble size and speed${NOTE:+ ($NOTE)}"
    echo
    echo "Produced by \`benches/ensemble.sh\` (MODELS=\"$MODELS\" KS=\"$KS\" MODES=\"$MODES\" SCOPES=\"$SCOPES\" RUNS=$RUNS). Children: \`smd-onnx mutate MODEL --children k --mode MODE --sigma 0.05\` (head: plus \`--include\` on the last layer's weight); ensemble: \`smd-onnx ensemble child_*.onnx --out ensemble.onnx\`; timing: \`target/release/examples/time_models LIB DATA --ensemble ensemble.onnx child_*.onnx\` (each child: own session, created, one pass, dropped; then the ensemble: one session, one pass). Medians of $RUNS run(s). kB, MB = 10³, 10⁶ bytes."
    echo
    echo "$INFO"
    echo
    "$PY" - "$RAW" <<'EOF'
import json, statistics, sys
rows = {}
for line in open(sys.argv[1]):
    r = json.loads(line)
    rows.setdefault((r["model"], r["mode"], r["scope"], r["k"]), []).append(r)
speed = any("timing" in r[0] for r in rows.values())
head = "| model | mode | scope | k | parent | k children | ensemble | ensemble / parent |"
if speed:
    head += " k sessions: create + run s | ensemble: create + run s | speedup | accuracy members / ensemble |"
print(head)
print("|" + "---|" * (head.count("|") - 1))
mb = lambda b: f"{b / 1e6:.2f} MB" if b >= 1e6 else f"{b / 1e3:.1f} kB"
for (m, mode, scope, k), rs in rows.items():
    r = rs[0]
    s = (f"| {m} | {mode} | {scope} | {k} | {mb(r['parent_bytes'])} | {mb(r['children_bytes'])} | "
         f"{mb(r['ensemble_bytes'])} | {r['ensemble_bytes'] / r['parent_bytes']:.2f} |")
    if speed:
        med = lambda key: statistics.median(x["timing"][key] for x in rs)
        sep = med("separate_session_s") + med("separate_run_s")
        ens = med("ensemble_session_s") + med("ensemble_run_s")
        t = rs[0]["timing"]
        s += (f" {med('separate_session_s'):.3f} + {med('separate_run_s'):.3f} = {sep:.3f} |"
              f" {med('ensemble_session_s'):.3f} + {med('ensemble_run_s'):.3f} = {ens:.3f} |"
              f" {sep / ens:.2f}× | {t['member_mean_accuracy']:.3f} / {t['ensemble_accuracy']:.3f} |")
    print(s)
EOF
} > "$BENCH_DIR/ensemble.md"
echo
cat "$BENCH_DIR/ensemble.md"
if [ -n "$RESULTS" ]; then
    replace_section ensemble.sh "$RESULTS" < "$BENCH_DIR/ensemble.md"
    echo "(written to $RESULTS)"
fi
