#!/usr/bin/env bash
# Runs `evolve` on every fixture with fixed settings and writes best.onnx, ensemble.onnx and
# report.json (timings removed) under OUT, for byte-for-byte comparisons of two builds:
#   tools/outputs_snapshot.sh BIN OUT      (then: diff -r OUT_before OUT_after)
set -euo pipefail
bin="$1"; out="$2"
cd "$(dirname "$0")/.."
mkdir -p "$out"
python=${PYTHON:-python3}
while read -r model data extra; do
    [ -z "$model" ] && continue
    dir="$out/$model"
    rm -rf "$dir"
    # shellcheck disable=SC2086
    "$bin" evolve "models/$model.onnx" --data "fixtures/$data.npz" --out "$dir" \
        --generations 2 --seed 3 $extra --json > /dev/null
    rm -rf "$dir/.smd-journal"
    "$python" - "$dir/report.json" <<'PY'
import json, sys
p = sys.argv[1]
r = json.load(open(p))
r.pop("timings", None)
r["outputs"] = {k: (v.rsplit("/", 1)[-1] if isinstance(v, str) else v) for k, v in r["outputs"].items()}
r["runtime"].pop("cache_dir", None); r["runtime"].pop("library", None)
json.dump(r, open(p, "w"), indent=1, sort_keys=True)
PY
done <<'LIST'
digits_cnn digits_val --children 6
digits_cnn_undertrained digits_val --mode density --antithetic --children 6
mnist_mlp mnist_val --static --children 6
digits_mlp_fp16 digits_flat_val --mode layer --children 2
digits_mlp_bf16 digits_flat_val --children 6
digits_mlp_typed digits_flat_val --ensemble mean --combine logits --children 6
digits_mlp_external digits_flat_val --children 6
digits_if_const digits_flat_val --children 6
digits_batch1 digits_flat_val --children 6
digits_two_inputs digits_two_inputs_val --children 6
iris_skl_mlp iris_val --sigma 0.5 --children 6
diabetes_skl_mlp diabetes_val --children 6
digits_dynamic_neg digits_flat_val --children 6
digits_no_shape digits_flat_val --children 6
digits_skl_zipmap digits_flat_val --sigma 0.5 --children 6
digits_transformer digits_tokens_val --children 6
digits_skl_logreg digits_flat_val --children 6
digits_skl_forest digits_flat_val --sigma 0.5 --children 6
digits_cnn_qdq_int4 digits_val --children 6
digits_cnn_qdq_int8 digits_val --children 6
LIST
echo "wrote $out"
