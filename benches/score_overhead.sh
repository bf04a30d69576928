#!/usr/bin/env bash
# Overhead of `smd-onnx score` over the smallest ort loop (examples/ort_loop.rs) on the same
# model, data, library and session options (all cores, no spinning, memory pattern, batch 256).
# Not a test: prints wall-clock times (/usr/bin/time -v), peak RSS and the ratio.
#
#   benches/score_overhead.sh                          # mobilenet_7mb, 600 images, best of 3
#   MODEL=mlp_small REPS=5 benches/score_overhead.sh
#   MODEL=resnet50 IMAGES=320 benches/score_overhead.sh   # one pass ≥ 5 s on 2 cores
#
# IMAGES=N (image models only) scores N random images instead of the model's data file.
#
# Models and data come from benches/make_models.py (MODEL: mlp_small, mobilenet_7mb, resnet50,
# mlp_wide), generated into target/bench/models (git-ignored) with the venv of benches/lib.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
. benches/lib.sh
MODEL=${MODEL:-mobilenet_7mb}
REPS=${REPS:-3}

setup_venv
build
make_models
LIB=$(ort_library)
echo "library: $LIB"
ONNX=$MODEL_DIR/$MODEL.onnx
DATA=$(data_of "$MODEL")
if [ -n "${IMAGES:-}" ]; then
    DATA=$MODEL_DIR/images_$IMAGES.npz
    [ -f "$DATA" ] || "$PY" -c "
import numpy as np, sys
rng = np.random.default_rng(0)
np.savez(sys.argv[1], input=rng.standard_normal(($IMAGES, 3, 224, 224), dtype=np.float32),
         labels=rng.integers(0, 1000, $IMAGES).astype(np.int64))" "$DATA"
fi

best_score=; best_loop=; best_cs=; best_cl=
for i in $(seq "$REPS"); do
    read -r ws rs cs < <(measure score "$SMD" score "$ONNX" --data "$DATA" --batch 256 --json)
    score_acc=$("$PY" -c 'import json, sys; print(json.load(open(sys.argv[1]))["metrics"]["accuracy"])' "$BENCH_DIR/score.out" 2> /dev/null || echo "?")
    read -r wl rl cl < <(measure ort_loop target/release/examples/ort_loop "$LIB" "$ONNX" "$DATA")
    loop_out=$(cat "$BENCH_DIR/ort_loop.out")
    printf 'run %d: score %6.2f s wall %6.2f s cpu (%4.0f MB)   ort_loop %6.2f s wall %6.2f s cpu (%4.0f MB)\n' \
        "$i" "$ws" "$cs" "$rs" "$wl" "$cl" "$rl"
    if [ -z "$best_score" ] || awk "BEGIN{exit !($ws < $best_score)}"; then best_score=$ws; fi
    if [ -z "$best_loop" ] || awk "BEGIN{exit !($wl < $best_loop)}"; then best_loop=$wl; fi
    if [ -z "$best_cs" ] || awk "BEGIN{exit !($cs < $best_cs)}"; then best_cs=$cs; fi
    if [ -z "$best_cl" ] || awk "BEGIN{exit !($cl < $best_cl)}"; then best_cl=$cl; fi
done
echo "score accuracy: $score_acc; ort_loop: $loop_out"
awk -v s="$best_score" -v l="$best_loop" -v cs="$best_cs" -v cl="$best_cl" -v m="$MODEL" -v r="$REPS" 'BEGIN {
    printf "best of %s (%s): wall: smd-onnx score %.2f s, ort_loop %.2f s, ratio %.3f; cpu: %.2f s vs %.2f s, ratio %.3f\n", r, m, s, l, s / l, cs, cl, cs / cl }'
