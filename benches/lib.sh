# Shared by the benchmark scripts (sourced, not run). Run from the repository root.
#
# BENCH_DIR (default target/bench): models, data, the Python venv and scratch output.
# PYTHON (default python3): the interpreter the venv is made from.

BENCH_DIR=${BENCH_DIR:-target/bench}
MODEL_DIR=$BENCH_DIR/models
VENV=$BENCH_DIR/venv
PY=$VENV/bin/python
SMD=target/release/smd-onnx
mkdir -p "$BENCH_DIR"

# The Python peer's pinned dependencies (make_models.py needs the same).
setup_venv() {
    if [ ! -x "$PY" ]; then
        "${PYTHON:-python3}" -m venv "$VENV"
    fi
    "$PY" -m pip install --quiet --disable-pip-version-check numpy onnx==1.23.2 onnxruntime==1.31.1
}

# Release binary and the timing examples.
build() {
    cargo build --release --quiet --bin smd-onnx --example ort_loop --example time_models
}

# The benchmark models of benches/make_models.py (skips those already there).
make_models() {
    "$PY" benches/make_models.py "$MODEL_DIR" > /dev/null
}

# The data file make_models.py writes for a model.
data_of() {
    case $1 in
        mlp_small) echo "$MODEL_DIR/mlp_small.npz" ;;
        mobilenet_7mb) echo "$MODEL_DIR/mobilenet_600.npz" ;;
        resnet50) echo "$MODEL_DIR/resnet50_64.npz" ;;
        mlp_wide) echo "$MODEL_DIR/mlp_wide.npz" ;;
        *) echo "unknown model $1 (make_models.py has mlp_small mobilenet_7mb resnet50 mlp_wide)" >&2; return 1 ;;
    esac
}

# The libonnxruntime smd-onnx uses (the floor loads the same one).
ort_library() {
    "$SMD" runtime --json | "$PY" -c 'import json, sys; print(json.load(sys.stdin)["library"])'
}

# `measure NAME CMD...`: runs CMD under /usr/bin/time -v, its stdout to $BENCH_DIR/NAME.out and
# stderr to NAME.err; prints "<wall s> <peak RSS MB> <user+system CPU s>" (the peak RSS and CPU
# time from time -v). Exits on failure.
measure() {
    local name=$1 t0 t1
    shift
    t0=$(date +%s%N)
    if ! /usr/bin/time -v -o "$BENCH_DIR/$name.time" "$@" > "$BENCH_DIR/$name.out" 2> "$BENCH_DIR/$name.err"; then
        echo "failed: $*" >&2
        tail -5 "$BENCH_DIR/$name.err" >&2
        exit 1
    fi
    t1=$(date +%s%N)
    # Wall time from the clock around the command: time -v's "Elapsed" has 10 ms steps.
    awk -F': ' -v ns=$((t1 - t0)) '
        BEGIN { s = ns / 1e9 }
        /Maximum resident set size/ { rss = $2 * 1024 / 1e6 }
        /User time \(seconds\)|System time \(seconds\)/ { cpu += $2 }
        END { printf "%.3f %.0f %.2f\n", s, rss, cpu }' "$BENCH_DIR/$name.time"
}

# `median X...`
median() {
    printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else printf "%.3f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

# `ratio A B`: A / B with two decimals.
ratio() {
    awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }'
}

# Machine, date and versions, as Markdown list items.
machine_info() {
    local cpu mem
    cpu=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)
    mem=$(awk '/MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)
    echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC'); load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "- machine: $(nproc) cores ($cpu), $mem RAM, $(uname -sr)"
    echo "- smd-onnx $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- src Cargo.toml || echo '+changes'), $(rustc --version)"
    echo "- ONNX Runtime library (smd-onnx and the floor): $(ort_library)"
    echo "- peer: $("$PY" --version), $("$PY" -c 'import numpy, onnx, onnxruntime as o; print(f"numpy {numpy.__version__}, onnx {onnx.__version__}, onnxruntime {o.__version__}")')"
}

# `replace_section NAME FILE`: replaces the text between `<!-- NAME begin -->` and
# `<!-- NAME end -->` in FILE with stdin (appends the section when FILE lacks it).
replace_section() {
    local name=$1 file=$2 body
    body=$(cat)
    touch "$file"
    BODY=$body "$PY" - "$name" "$file" <<'EOF'
import os, sys
name, path = sys.argv[1], sys.argv[2]
begin, end = f"<!-- {name} begin -->", f"<!-- {name} end -->"
text = open(path).read()
block = f"{begin}\n{os.environ['BODY'].rstrip()}\n{end}"
if begin in text and end in text:
    text = text[:text.index(begin)] + block + text[text.index(end) + len(end):]
else:
    text = text.rstrip() + ("\n\n" if text.strip() else "") + block + "\n"
open(path, "w").write(text)
EOF
}
