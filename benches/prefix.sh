#!/usr/bin/env bash
# Shared prefixes (issue 17 item 2): head-only mutation of a model, `smd-onnx evolve` with the
# shared prefix (the default: the unmutated prefix's activations computed once, candidates
# scored on the suffix) against the same run with full passes (SMD_PREFIX=0) and against the
# floor (k + 1 full passes with one ORT session, examples/ort_loop.rs). Interleaved, RUNS
# times each; wall time (process start included) and peak RSS (/usr/bin/time -v), medians.
# Then the shared-prefix run at each k of K_MEM (peak RSS flat in k). Rewrites the
# `prefix.sh` section of benches/RESULTS.md.
#
#   benches/prefix.sh
#   RUNS=1 K=4 K_MEM="" benches/prefix.sh
#
# Environment:
#   MODEL      mobilenet_7mb   (a model of benches/make_models.py)
#   HEAD       ^fc219$         --include: the mutated tensors (the last layer's weight)
#   RUNS       3      runs per tool (medians)
#   K          16     children
#   SIGMA      0.05
#   BATCH      256    samples per run for all three
#   FULL       1      also time the run with full passes (0: skip that column)
#   K_MEM      "16 64"  k values of the RSS check with the shared prefix (empty: skip it)
#   SKIP_BUILD 0      1: do not run cargo build (the binaries are already built)
#   NOTE       a remark for the section's title
#   RESULTS    benches/RESULTS.md (empty: print only)
#   BENCH_DIR  target/bench
set -euo pipefail
cd "$(dirname "$0")/.."
. benches/lib.sh

MODEL=${MODEL:-mobilenet_7mb}
HEAD=${HEAD:-^fc219\$}
RUNS=${RUNS:-3}
K=${K:-16}
SIGMA=${SIGMA:-0.05}
BATCH=${BATCH:-256}
K_MEM=${K_MEM-16 64}
FULL=${FULL:-1}
NOTE=${NOTE:-}
RESULTS=${RESULTS-benches/RESULTS.md}

setup_venv
# SKIP_BUILD=1: use the release binaries already built (another cargo may hold the lock).
[ "${SKIP_BUILD:-0}" = 1 ] || build
make_models
LIB=$(ort_library)
OUT=$BENCH_DIR/out
DATA=$(data_of "$MODEL")
INFO=$(machine_info)
echo "$INFO"

floor_cmd() { echo target/release/examples/ort_loop "$LIB" "$MODEL_DIR/$MODEL.onnx" "$DATA" --passes $(($1 + 1)) --batch "$BATCH"; }
evolve_cmd() { echo "$SMD" evolve "$MODEL_DIR/$MODEL.onnx" --data "$DATA" --children "$1" --sigma "$SIGMA" --batch "$BATCH" --include "$HEAD" --out "$OUT/prefix-$2"; }

# `timed NAME K PREFIX CMD...`: one run with SMD_PREFIX=PREFIX ("" leaves it unset); prints
# "<wall> <rss> <cpu>".
timed() {
    local name=$1 k=$2 prefix=$3
    shift 3
    rm -rf "$OUT/prefix-$name" && mkdir -p "$OUT"
    if [ -n "$prefix" ]; then
        measure "prefix-$name-k$k" env SMD_PREFIX="$prefix" "$@"
    else
        measure "prefix-$name-k$k" "$@"
    fi
}

# `shared REPORT`: the report's shared-prefix entry and children seconds on one line.
shared() {
    "$PY" - "$1" << 'EOF2' || echo "?"
import json, sys
t = json.load(open(sys.argv[1]))["timings"]
p = t.get("prefix") or {}
print(f"used {p.get('used')}, cut {p.get('cut')}, prefix {p.get('prefix_nodes')} nodes / suffix {p.get('suffix_nodes')} nodes, "
      f"prefix pass {p.get('prefix_pass', 0):.3f} s, exactness check (first batch, full and split) {p.get('check', 0):.3f} s; "
      f"load {t['load']:.3f}, parent {t['parent']:.3f}, children {t['children']:.3f}, export {t['export']:.3f}, total {t['total']:.3f}")
EOF2
}

declare -a fw=() fr=() fc=() nw=() nr=() nc=() pw=() pr=() pc=()
for i in $(seq "$RUNS"); do
    # shellcheck disable=SC2046 # word lists without spaces in paths
    read -r w r c < <(timed floor "$K" "" $(floor_cmd "$K")); fw+=("$w"); fr+=("$r"); fc+=("$c")
    printf 'run %d: floor %7.2f s %5d MB (cpu %6.2f s)' "$i" "$w" "$r" "$c"
    if [ "$FULL" = 1 ]; then
        # shellcheck disable=SC2046
        read -r w r c < <(timed full "$K" 0 $(evolve_cmd "$K" full)); nw+=("$w"); nr+=("$r"); nc+=("$c")
        printf ' | full passes %7.2f s %5d MB (cpu %6.2f s)' "$w" "$r" "$c"
    else
        nw+=("0"); nr+=("0"); nc+=("0")
    fi
    # shellcheck disable=SC2046
    read -r w r c < <(timed shared "$K" "" $(evolve_cmd "$K" shared)); pw+=("$w"); pr+=("$r"); pc+=("$c")
    printf ' | shared prefix %7.2f s %5d MB (cpu %6.2f s)\n' "$w" "$r" "$c"
done
FW=$(median "${fw[@]}"); FR=$(median "${fr[@]}")
NW=$(median "${nw[@]}"); NR=$(median "${nr[@]}")
PW=$(median "${pw[@]}"); PR=$(median "${pr[@]}")
FC=$(median "${fc[@]}"); NC=$(median "${nc[@]}"); PC=$(median "${pc[@]}")
# full / shared: only when the full-pass runs were made.
full_ratio() { if [ "$FULL" = 1 ]; then ratio "$1" "$2"; else echo "not run"; fi; }
DETAIL=$(shared "$OUT/prefix-shared/report.json")

mem_rows=()
for k in $K_MEM; do
    declare -a mw=() mr=()
    for i in $(seq "$RUNS"); do
        # shellcheck disable=SC2046
        read -r w r c < <(timed "mem$k" "$k" "" $(evolve_cmd "$k" "mem$k")); mw+=("$w"); mr+=("$r")
        printf 'k=%-3d run %d: shared prefix %7.2f s %5d MB (cpu %6.2f s)\n' "$k" "$i" "$w" "$r" "$c"
    done
    mem_rows+=("| $k | $(median "${mw[@]}") | $(median "${mr[@]}") |")
done

{
    echo "## shared prefixes: head-only mutation${NOTE:+ ($NOTE)}"
    echo
    echo "Produced by \`benches/prefix.sh\` (MODEL=$MODEL HEAD=\"$HEAD\" RUNS=$RUNS K=$K SIGMA=$SIGMA BATCH=$BATCH FULL=$FULL K_MEM=\"$K_MEM\"). Medians of $RUNS interleaved run(s). Wall seconds, process start included; peak RSS in MB (10⁶ bytes). floor: $((K + 1)) full passes with one ORT session; full passes (0: not run, FULL=0): \`SMD_PREFIX=0 smd-onnx evolve --include HEAD\`; shared prefix: the same command with the default (prefix computed once, every candidate scored on the suffix, kept because the first batch's predictions through the split are bit-identical to a full session's)."
    echo
    echo "$INFO"
    echo
    echo "| | floor | full passes | shared prefix | floor / shared | full / shared |"
    echo "|---|---|---|---|---|---|"
    echo "| wall s | $FW | $NW | $PW | $(ratio "$FW" "$PW") | $(full_ratio "$NW" "$PW") |"
    echo "| CPU s (user + system) | $FC | $NC | $PC | $(ratio "$FC" "$PC") | $(full_ratio "$NC" "$PC") |"
    echo "| peak RSS MB | $FR | $NR | $PR | | |"
    echo
    echo "Model $MODEL, data $(basename "$DATA")."
    echo
    echo "Last shared-prefix run (report.json \`timings\`): $DETAIL"
    if [ ${#mem_rows[@]} -gt 0 ]; then
        echo
        echo "Shared prefix against k (peak RSS):"
        echo
        echo "| k | s | MB |"
        echo "|---|---|---|"
        printf '%s\n' "${mem_rows[@]}"
    fi
    echo
    echo "Target (issue 17 item 2): ≥ 5× faster than the floor: $(ratio "$FW" "$PW")×, $(awk "BEGIN { print ($FW >= 5 * $PW) ? \"met\" : \"**not met**\" }")"
    echo
    echo '```sh'
    floor_cmd "$K"
    echo "SMD_PREFIX=0 $(evolve_cmd "$K" full)"
    evolve_cmd "$K" shared
    echo '```'
} > "$BENCH_DIR/prefix.md"
echo
cat "$BENCH_DIR/prefix.md"
if [ -n "$RESULTS" ]; then
    replace_section prefix.sh "$RESULTS" < "$BENCH_DIR/prefix.md"
    echo "(written to $RESULTS)"
fi
