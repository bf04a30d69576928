#!/usr/bin/env bash
# smd-onnx evolve against its floor and against the Python peer, in one run on this machine
# (issue 7). For each model of benches/make_models.py, RUNS times each (interleaved):
#   floor  target/release/examples/ort_loop LIB MODEL DATA --passes K+1   (one ORT session)
#   smd    target/release/smd-onnx evolve MODEL --data DATA --children K --sigma SIGMA --out DIR
#   peer   python ../shared/baseline/smd_reference.py MODEL DATA --children K --sigma SIGMA --out DIR
# then `smd-onnx evolve` on mobilenet_7mb with each k of K_MEM (peak RSS independent of k), at
# smd-onnx's default batch unless MEM_BATCH is set.
# Wall time (process start included) and peak RSS (/usr/bin/time -v), medians of RUNS runs.
# Prints a Markdown table, checks the targets of issue 7 and rewrites the `compare.sh` section
# of benches/RESULTS.md. A full run takes 20 to 30 minutes on 2 quiet cores.
#
#   benches/compare.sh
#   MODELS="mlp_small mobilenet_7mb" RUNS=1 K=4 K_MEM="4 8" benches/compare.sh
#
# Environment:
#   MODELS     mlp_small mobilenet_7mb resnet50 mlp_wide   (any subset)
#   RUNS       3      runs per tool and model (medians)
#   K          16     children
#   SIGMA      0.05   σ for both tools
#   BATCH      256    samples per run for all three (the peer's default; smd-onnx's own default
#                     is 256 or fewer so that a batch's inputs take at most 64 MiB)
#   K_MEM      "16 64"  the k values of the RSS check (empty: skip it); a k equal to K on a
#                     MEM_MODEL that is in MODELS reuses the table's runs
#   SMD_ARGS   extra `smd-onnx evolve` arguments (e.g. "--export none" leaves out the writes)
#   MEM_BATCH  ""     the RSS check's --batch (empty: smd-onnx's default)
#   MEM_MODEL  mobilenet_7mb
#   MEM_RUNS   RUNS
#   PEER       ../shared/baseline/smd_reference.py
#   NOTE       a remark for the section's title (e.g. "smoke run")
#   RESULTS    benches/RESULTS.md (empty: print only)
#   BENCH_DIR  target/bench (models, venv, outputs)
set -euo pipefail
cd "$(dirname "$0")/.."
. benches/lib.sh

MODELS=${MODELS:-mlp_small mobilenet_7mb resnet50 mlp_wide}
RUNS=${RUNS:-3}
K=${K:-16}
SIGMA=${SIGMA:-0.05}
BATCH=${BATCH:-256}
SMD_ARGS=${SMD_ARGS:-}
K_MEM=${K_MEM-16 64}
MEM_RUNS=${MEM_RUNS:-$RUNS}
MEM_BATCH=${MEM_BATCH:-}
MEM_MODEL=${MEM_MODEL:-mobilenet_7mb}
PEER=${PEER:-../shared/baseline/smd_reference.py}
RESULTS=${RESULTS-benches/RESULTS.md}
NOTE=${NOTE:-}
[ -f "$PEER" ] || { echo "no peer at $PEER (set PEER)" >&2; exit 1; }

setup_venv
build
make_models
LIB=$(ort_library)
OUT=$BENCH_DIR/out
INFO=$(machine_info)
echo "$INFO"

floor_cmd() { echo target/release/examples/ort_loop "$LIB" "$MODEL_DIR/$1.onnx" "$(data_of "$1")" --passes $(($2 + 1)) --batch "$BATCH"; }
smd_cmd() { echo "$SMD" evolve "$MODEL_DIR/$1.onnx" --data "$(data_of "$1")" --children "$2" --sigma "$SIGMA" --batch "$BATCH" --out "$OUT/smd-$1" $SMD_ARGS; }
# The RSS check's command: the same at MEM_BATCH (empty: without --batch).
smdmem_cmd() { echo "$SMD" evolve "$MODEL_DIR/$1.onnx" --data "$(data_of "$1")" --children "$2" --sigma "$SIGMA" ${MEM_BATCH:+--batch "$MEM_BATCH"} --out "$OUT/smdmem-$1" $SMD_ARGS; }
peer_cmd() { echo "$PY" "$PEER" "$MODEL_DIR/$1.onnx" "$(data_of "$1")" --children "$2" --sigma "$SIGMA" --batch "$BATCH" --out "$OUT/peer-$1"; }

# `phase_timings REPORT`: the `timings` of an evolve report.json on one line.
phase_timings() {
    "$PY" - "$1" 2> /dev/null << 'EOF' || echo "?"
import json, statistics, sys
t = json.load(open(sys.argv[1])).get("timings", {})
def fmt(k, v):
    if isinstance(v, dict) and "used" in v:
        return f"{k} {'used' if v['used'] else 'not used'}" + (f" ({v['reason']})" if v.get("reason") else "")
    if isinstance(v, list) and v:
        return f"{k} median {statistics.median(v):.3f} (of {len(v)})"
    return f"{k} {v:.3f}" if isinstance(v, (int, float)) else f"{k} {v}"
print(", ".join(fmt(k, v) for k, v in t.items()))
EOF
}

# `timed TOOL MODEL K`: one run; prints "<wall> <rss> <cpu>". Fresh output folders each run.
timed() {
    rm -rf "$OUT/$1-$2" && mkdir -p "$OUT"
    # shellcheck disable=SC2046 # the commands are word lists without spaces in paths
    measure "$1-$2-k$3" $("$1_cmd" "$2" "$3")
}

rows=()
declare -A WALL RSS TIMINGS
for m in $MODELS; do
    data_of "$m" > /dev/null
    declare -a fw=() fr=() sw=() sr=() pw=() pr=()
    for i in $(seq "$RUNS"); do
        read -r w r c < <(timed floor "$m" "$K"); fw+=("$w"); fr+=("$r")
        printf '%-14s run %d: floor %7.2f s %5d MB (cpu %6.2f s)' "$m" "$i" "$w" "$r" "$c"
        read -r w r c < <(timed smd "$m" "$K"); sw+=("$w"); sr+=("$r")
        printf ' | smd %7.2f s %5d MB (cpu %6.2f s)' "$w" "$r" "$c"
        read -r w r c < <(timed peer "$m" "$K"); pw+=("$w"); pr+=("$r")
        printf ' | peer %7.2f s %5d MB (cpu %6.2f s)\n' "$w" "$r" "$c"
    done
    WALL[$m.floor]=$(median "${fw[@]}"); RSS[$m.floor]=$(median "${fr[@]}")
    WALL[$m.smd]=$(median "${sw[@]}"); RSS[$m.smd]=$(median "${sr[@]}")
    WALL[$m.peer]=$(median "${pw[@]}"); RSS[$m.peer]=$(median "${pr[@]}")
    # The last run's phase timings (report.json) say where smd-onnx spends its time.
    TIMINGS[$m]=$(phase_timings "$OUT/smd-$m/report.json")
    rows+=("| $m | $(stat -c %s "$MODEL_DIR/$m.onnx" | awk '{ printf "%.1f", $1 / 1e6 }') MB | ${WALL[$m.floor]} | ${WALL[$m.smd]} | ${WALL[$m.peer]} | ${RSS[$m.floor]} | ${RSS[$m.smd]} | ${RSS[$m.peer]} | $(ratio "${WALL[$m.smd]}" "${WALL[$m.floor]}") | $(ratio "${WALL[$m.peer]}" "${WALL[$m.smd]}") |")
done

mem_rows=()
declare -A MEM
for k in $K_MEM; do
    if [ "$k" = "$K" ] && [ "$MEM_BATCH" = "$BATCH" ] && [ -n "${RSS[$MEM_MODEL.smd]:-}" ]; then
        # Same command as in the table above: reuse its runs.
        MEM[$k]=${RSS[$MEM_MODEL.smd]}
        mem_rows+=("| $MEM_MODEL | $k | ${WALL[$MEM_MODEL.smd]} | ${MEM[$k]} |")
        continue
    fi
    declare -a mw=() mr=()
    for i in $(seq "$MEM_RUNS"); do
        read -r w r c < <(timed smdmem "$MEM_MODEL" "$k"); mw+=("$w"); mr+=("$r")
        printf '%-14s k=%-3d run %d: smd %7.2f s %5d MB (cpu %6.2f s)\n' "$MEM_MODEL" "$k" "$i" "$w" "$r" "$c"
    done
    MEM[$k]=$(median "${mr[@]}")
    mem_rows+=("| $MEM_MODEL | $k | $(median "${mw[@]}") | ${MEM[$k]} |")
done

# Targets of issue 7, checked on what was measured.
verdict() { if awk "BEGIN { exit !($1) }"; then echo "met"; else echo "**not met**"; fi; }
targets=()
for m in $MODELS; do
    case $m in
        mlp_small) targets+=("- mlp_small: \`evolve\` total ≤ 0.25 s (process start included): ${WALL[$m.smd]} s, $(verdict "${WALL[$m.smd]} <= 0.25")") ;;
        *) targets+=("- $m: \`evolve\` ≤ 1.05× the floor: $(ratio "${WALL[$m.smd]}" "${WALL[$m.floor]}")×, $(verdict "${WALL[$m.smd]} <= 1.05 * ${WALL[$m.floor]}")") ;;
    esac
    targets+=("- $m: faster than the peer: peer/smd $(ratio "${WALL[$m.peer]}" "${WALL[$m.smd]}")×, $(verdict "${WALL[$m.peer]} > ${WALL[$m.smd]}")")
done
best=; best_ratio=0
for m in $MODELS; do
    [ "$m" = mlp_small ] && continue
    r=$(ratio "${WALL[$m.peer]}" "${WALL[$m.smd]}")
    if awk "BEGIN { exit !($r > $best_ratio) }"; then best=$m; best_ratio=$r; fi
done
[ -n "$best" ] && targets+=("- ≥ 2× faster than the peer on at least one mid-size model: best $best_ratio× ($best), $(verdict "$best_ratio >= 2")")
# shellcheck disable=SC2086 # K_MEM is a list of numbers
set -- $K_MEM
if [ $# -ge 2 ]; then
    lo=${MEM[$1]}; hi=${MEM[${!#}]}
    targets+=("- $MEM_MODEL peak RSS, k = ${!#} within 10% of k = $1: $hi MB vs $lo MB ($(ratio "$hi" "$lo")×), $(verdict "$hi <= 1.1 * $lo && $hi >= 0.9 * $lo"); ≤ 1.5 GB: $(verdict "$hi <= 1500 && $lo <= 1500")")
fi

{
    echo "## evolve vs floor vs Python peer${NOTE:+ ($NOTE)}"
    echo
    echo "Produced by \`benches/compare.sh\` (MODELS=\"$MODELS\" RUNS=$RUNS K=$K SIGMA=$SIGMA BATCH=$BATCH SMD_ARGS=\"$SMD_ARGS\" K_MEM=\"$K_MEM\" MEM_RUNS=$MEM_RUNS MEM_BATCH=\"$MEM_BATCH\"). Medians of $RUNS run(s) ($MEM_RUNS for the RSS check). Wall seconds, process start included; peak RSS in MB (10⁶ bytes) from \`/usr/bin/time -v\`. The floor holds a copy of the input array (npz members are not 4-byte aligned), so its RSS is no memory target."
    echo
    echo "$INFO"
    echo
    echo "| model | file | floor s | smd s | peer s | floor MB | smd MB | peer MB | smd/floor | peer/smd |"
    echo "|---|---|---|---|---|---|---|---|---|---|"
    printf '%s\n' "${rows[@]}"
    if [ ${#mem_rows[@]} -gt 0 ]; then
        echo
        echo "Peak RSS of \`smd-onnx evolve\` against k (batch: ${MEM_BATCH:-the default}):"
        echo
        echo "| model | k | smd s | smd MB |"
        echo "|---|---|---|---|"
        printf '%s\n' "${mem_rows[@]}"
    fi
    echo
    echo "Targets (issue 7):"
    echo
    printf '%s\n' "${targets[@]}"
    echo
    echo "smd-onnx phase seconds (report.json \`timings\`, last run):"
    echo
    for m in $MODELS; do echo "- $m: ${TIMINGS[$m]}"; done
    echo
    echo "Commands (k = $K; DIR = $OUT; the RSS check runs the last one with each k of K_MEM):"
    echo
    echo '```sh'
    for m in $MODELS; do
        floor_cmd "$m" "$K"
        smd_cmd "$m" "$K"
        peer_cmd "$m" "$K"
    done
    [ -n "$K_MEM" ] && smdmem_cmd "$MEM_MODEL" "$K"
    echo '```'
} > "$BENCH_DIR/compare.md"
echo
cat "$BENCH_DIR/compare.md"
if [ -n "$RESULTS" ]; then
    replace_section compare.sh "$RESULTS" < "$BENCH_DIR/compare.md"
    echo "(written to $RESULTS)"
fi
