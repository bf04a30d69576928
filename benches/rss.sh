#!/usr/bin/env bash
# Peak resident memory of `smd-onnx evolve` as k grows (issue 6: memory must not grow with k
# beyond the k children's predictions). Not a test: prints a table of peak RSS (/usr/bin/time -v)
# and wall time, with `smd-onnx score` on the same model and data as the floor (ONNX Runtime,
# the data, one session).
#
#   benches/rss.sh                       # k = 4 16 64 on the fixtures
#   KS="4 16 64 256" benches/rss.sh
#   SMD=target/debug/smd-onnx benches/rss.sh   # another binary, no build
#
# When benches/make_models.py has generated its models (target/bench/models/, e.g. by
# benches/compare.sh), the 7 MB MobileNet on 600 images of 3×224×224 is measured too: a bigger
# model shows whether child models pile up in memory (issue 7's 1.5 GB target).
set -euo pipefail
cd "$(dirname "$0")/.."
KS=${KS:-"4 16 64"}
DIR=${BENCH_DIR:-target/rss}
if [ -z "${SMD:-}" ]; then
    cargo build --release --quiet --bin smd-onnx
    SMD=target/release/smd-onnx
fi
mkdir -p "$DIR"

# Prints "<max RSS MiB> <wall seconds>" for a command; its stdout and stderr go to $DIR/last.*.
measure() {
    if ! /usr/bin/time -v -o "$DIR/last.time" "$@" > "$DIR/last.out" 2> "$DIR/last.err"; then
        echo "failed: $*" >&2
        cat "$DIR/last.err" >&2
        exit 1
    fi
    awk -F': ' '
        /Elapsed \(wall clock\)/ { n = split($2, p, ":"); s = 0; for (i = 1; i <= n; i++) s = s * 60 + p[i] }
        /Maximum resident set size/ { rss = $2 / 1024 }
        END { printf "%.0f %.2f\n", rss, s }' "$DIR/last.time"
}

cases=(
    "models/digits_cnn_undertrained.onnx fixtures/digits_val.npz"
    "models/mnist_mlp.onnx fixtures/mnist_val.npz"
)
if [ -f target/bench/models/mobilenet_7mb.onnx ]; then
    cases+=("target/bench/models/mobilenet_7mb.onnx target/bench/models/mobilenet_600.npz")
fi

printf '%-40s %6s %14s %8s\n' model k "peak RSS MiB" "wall s"
for c in "${cases[@]}"; do
    read -r model data <<< "$c"
    read -r rss wall < <(measure "$SMD" score "$model" --data "$data" --json)
    printf '%-40s %6s %14s %8s\n' "$(basename "$model")" "score" "$rss" "$wall"
    for k in $KS; do
        rm -rf "$DIR/run"
        read -r rss wall < <(measure "$SMD" evolve "$model" --data "$data" --children "$k" --out "$DIR/run")
        printf '%-40s %6s %14s %8s\n' "$(basename "$model")" "$k" "$rss" "$wall"
    done
done
rm -rf "$DIR/run"
