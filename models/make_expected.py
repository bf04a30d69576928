"""Write fixtures/expected/<model-stem>.json (tensor inventory + onnxruntime scores).

Definitions: fixtures/expected/README.md. Run after make_models.py (make_fixtures.sh does).
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fixturelib as fl  # noqa: E402

# model file -> validation data file (paths relative to the repository root)
FIXTURE_SET = {
    "digits_cnn.onnx": "digits_val.npz",
    "digits_cnn_undertrained.onnx": "digits_val.npz",
    "mnist_mlp.onnx": "mnist_val.npz",
    "digits_mlp_fp16.onnx": "digits_flat_val.npz",
    "digits_mlp_bf16.onnx": "digits_flat_val.npz",
    "digits_mlp_typed.onnx": "digits_flat_val.npz",
    "digits_mlp_external.onnx": "digits_flat_val.npz",
    "digits_if_const.onnx": "digits_flat_val.npz",
    "digits_batch1.onnx": "digits_flat_val.npz",
    "digits_two_inputs.onnx": "digits_two_inputs_val.npz",
    "iris_skl_mlp.onnx": "iris_val.npz",
    "diabetes_skl_mlp.onnx": "diabetes_val.npz",
    "digits_dynamic_neg.onnx": "digits_flat_val.npz",
    "digits_no_shape.onnx": "digits_flat_val.npz",
    "digits_skl_zipmap.onnx": "digits_flat_val.npz",
    "digits_skl_nozipmap.onnx": "digits_flat_val.npz",
    "digits_skl_logreg.onnx": "digits_flat_val.npz",
    "digits_skl_forest.onnx": "digits_flat_val.npz",
    "digits_cnn_qdq_int4.onnx": "digits_val.npz",
    "digits_cnn_qdq_int8.onnx": "digits_val.npz",
    "digits_cnn_qop_int8.onnx": "digits_val.npz",
    "mnist_mlp_dynamic.onnx": "mnist_val.npz",
    "mnist_mlp_nbits.onnx": "mnist_val.npz",
    "mnist_mlp_qdq_block.onnx": "mnist_val.npz",
    "digits_transformer.onnx": "digits_tokens_val.npz",
    # Inventory only, "scores": null: onnxruntime refuses every batch with rows.
    "digits_dim_zero_refused.onnx": None,
}


def main():
    os.makedirs(fl.EXPECTED, exist_ok=True)
    for model, data in FIXTURE_SET.items():
        exp = fl.expected(f"models/{model}", data and f"fixtures/{data}")
        stem = model[: -len(".onnx")]
        fl.write_json(os.path.join(fl.EXPECTED, stem + ".json"), exp)
        s = exp["scores"]
        if s is None:
            print(f"{stem}: {exp['totals']['tensors']} tensors (not scored)", flush=True)
            continue
        print(
            f"{stem}: {exp['totals']['tensors']} tensors, {exp['totals']['elements']} elements, "
            f"{s['samples']} samples, accuracy={s['accuracy']} nll={s['nll']} mse={s['mse']}",
            flush=True,
        )


if __name__ == "__main__":
    main()
