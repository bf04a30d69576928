#!/usr/bin/env python3
"""Gradient anchor, for measurement only (issue 12 item 6): what plain gradient fine-tuning of a
fixture model reaches on the same selection rows that `smd-onnx evolve` selects on, so that the
evolve's holdout gain can be read as a fraction of it.

Usage: benches/gradient_anchor.py MODEL.onnx DATA.npz [--holdout 0.5] [--split-seed 0]
           [--epochs 5,10,20] [--lrs 1e-3,3e-3] [--batch 32] [--seeds 0,1,2,3,4] [--weights-only]

Runs in `.venv-fixtures` (numpy, onnx, onnxruntime). Prints one JSON object on stdout and one
human line on stderr.

- Split: smd-onnx's label-stratified selection/holdout split, imported from
  tests/reference/significance.py (the independent re-implementation the tests check against
  smd-onnx's reports), so the anchor trains on exactly smd-onnx's selection rows and scores on
  exactly its holdout rows. The holdout rows are never used for training or for choosing.
- Network: the ONNX graph (a chain of MatMul+Add / Gemm / Conv / BatchNormalization / Relu /
  MaxPool 2x2 / Flatten, as models/fixturelib.py writes them) is loaded into fixturelib's numpy
  layers with the initializers' values (onnx.numpy_helper). Before training, the numpy network's
  holdout predictions are checked against onnxruntime's, row by row (exit 1 if the accuracy
  differs).
- BatchNormalization: inference mode with the model's stored running mean/variance, kept fixed
  (the exported node's semantics, so what is trained is what the ONNX model computes); its scale
  and bias are trained like the other parameters. fixturelib's BatchNorm2d would train with batch
  statistics, which is a different function than the ONNX node; not used.
- Trained: every Conv/Gemm/MatMul weight and bias and the BatchNormalization scale/bias
  (`--weights-only`: only tensors of two or more dimensions, smd-onnx's default candidate rule).
- Training: fixturelib's Adam (β 0.9/0.999, ε 1e-8) on softmax cross-entropy, minibatches of
  `--batch` selection rows in a seeded shuffle, for each setting of the grid epochs × lr and each
  shuffle seed, always starting from the model's weights.
- Choice: the setting with the best mean SELECTION accuracy over the seeds (ties: lower mean
  selection loss, then the earlier setting in the grid, i.e. fewer epochs, smaller lr). The
  holdout accuracy of every setting is also reported (`grid`), for information only.
- Reported holdout accuracies are onnxruntime's, of the model with the fine-tuned initializers
  written back (per-row score as smd-onnx defines it: argmax of the probabilities, ties to the
  lowest index); the numpy network's must agree.

Deterministic: seeded shuffles; one BLAS thread and, on x86-64, OpenBLAS's Haswell kernels
(as models/make_models.py), unless set in the environment.
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
if os.uname().machine in ("x86_64", "AMD64"):
    os.environ.setdefault("OPENBLAS_CORETYPE", "Haswell")

import argparse  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
import onnx  # noqa: E402
import onnxruntime as ort  # noqa: E402
from onnx import numpy_helper  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "models"))
sys.path.insert(0, os.path.join(ROOT, "tests", "reference"))
import fixturelib as fl  # noqa: E402
from significance import row_scores, split  # noqa: E402


class FrozenBatchNorm2d:
    """Inference-mode BatchNormalization: y = (x - mean) / sqrt(var + eps) * scale + B with the
    stored statistics (fixed); scale and B are parameters."""

    def __init__(self, name, scale, bias, mean, var, eps):
        self.name = name
        self.params = {"scale": scale, "B": bias}
        self.mean, self.var = mean, var
        self.inv = (1.0 / np.sqrt(var + np.float32(eps))).astype(np.float32)

    def forward(self, x, train):
        self.xhat = (x - self.mean[None, :, None, None]) * self.inv[None, :, None, None]
        return self.xhat * self.params["scale"][None, :, None, None] + self.params["B"][None, :, None, None]

    def backward(self, g):
        self.grads = {"scale": (g * self.xhat).sum((0, 2, 3)), "B": g.sum((0, 2, 3))}
        return g * (self.params["scale"] * self.inv)[None, :, None, None]


def _attrs(node):
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def load_net(model):
    """The ONNX graph as a fixturelib Net. Returns (net, names): names[(layer index, param key)]
    = (initializer name, transposed) for writing the parameters back."""
    g = model.graph
    init = {t.name: numpy_helper.to_array(t) for t in g.initializer}
    for k, v in init.items():
        if v.dtype != np.float32:
            raise SystemExit(f"initializer {k}: {v.dtype}, only float32 is supported")
    rng = np.random.default_rng(0)  # only to construct layers; every value is overwritten
    layers, names = [], {}
    cur = g.input[0].name
    nodes = list(g.node)
    i = 0

    def need(name):
        if name not in init:
            raise SystemExit(f"{name}: not an initializer (only constant weights are supported)")
        return init[name].copy()

    while i < len(nodes):
        n, a = nodes[i], _attrs(nodes[i])
        if n.input[0] != cur:
            raise SystemExit(f"node {n.name} ({n.op_type}): not a chain (input {n.input[0]}, expected {cur})")
        li = len(layers)
        if n.op_type == "MatMul":
            w = need(n.input[1])
            nxt = nodes[i + 1] if i + 1 < len(nodes) else None
            layer = fl.Dense(n.name, w.shape[0], w.shape[1], rng)
            layer.params["W"] = w
            names[(li, "W")] = (n.input[1], False)
            if nxt is not None and nxt.op_type == "Add" and nxt.input[0] == n.output[0] and nxt.input[1] in init:
                layer.params["b"] = need(nxt.input[1])
                names[(li, "b")] = (nxt.input[1], False)
                i += 1
                n = nxt
            else:
                layer.params["b"] = np.zeros(w.shape[1], np.float32)
        elif n.op_type == "Gemm":
            if a.get("transA", 0) or a.get("alpha", 1.0) != 1.0 or a.get("beta", 1.0) != 1.0:
                raise SystemExit(f"Gemm {n.name}: transA/alpha/beta not supported")
            tb = bool(a.get("transB", 0))
            w = need(n.input[1])
            w = np.ascontiguousarray(w.T) if tb else w
            layer = fl.Dense(n.name, w.shape[0], w.shape[1], rng)
            layer.params["W"] = w
            names[(li, "W")] = (n.input[1], tb)
            if len(n.input) > 2 and n.input[2]:
                b = need(n.input[2])
                if b.shape != (w.shape[1],):
                    raise SystemExit(f"Gemm {n.name}: bias shape {b.shape} not supported")
                layer.params["b"] = b
                names[(li, "b")] = (n.input[2], False)
            else:
                layer.params["b"] = np.zeros(w.shape[1], np.float32)
        elif n.op_type == "Conv":
            w = need(n.input[1])
            k = w.shape[2]
            pads = a.get("pads", [0, 0, 0, 0])
            ok = (
                w.shape[2] == w.shape[3]
                and len(set(pads)) == 1
                and a.get("group", 1) == 1
                and set(a.get("strides", [1, 1])) == {1}
                and set(a.get("dilations", [1, 1])) == {1}
                and a.get("auto_pad", b"NOTSET") in (b"NOTSET", "NOTSET")
            )
            if not ok:
                raise SystemExit(f"Conv {n.name}: only square stride-1 group-1 kernels with equal pads")
            layer = fl.Conv2d(n.name, w.shape[1], w.shape[0], k, pads[0], rng)
            layer.params["W"] = w
            names[(li, "W")] = (n.input[1], False)
            if len(n.input) > 2 and n.input[2]:
                layer.params["b"] = need(n.input[2])
                names[(li, "b")] = (n.input[2], False)
        elif n.op_type == "BatchNormalization":
            if len(n.output) > 1 and any(n.output[1:]) or a.get("training_mode", 0):
                raise SystemExit(f"BatchNormalization {n.name}: training mode not supported")
            sc, bi, mu, var = (need(x) for x in n.input[1:5])
            layer = FrozenBatchNorm2d(n.name, sc, bi, mu, var, a.get("epsilon", 1e-5))
            names[(li, "scale")] = (n.input[1], False)
            names[(li, "B")] = (n.input[2], False)
        elif n.op_type == "Relu":
            layer = fl.Relu()
        elif n.op_type == "MaxPool":
            ok = list(a.get("kernel_shape", [])) == [2, 2] and list(a.get("strides", [1, 1])) == [2, 2]
            ok = ok and set(a.get("pads", [0])) == {0} and not a.get("ceil_mode", 0)
            if not ok:
                raise SystemExit(f"MaxPool {n.name}: only 2x2, stride 2, no padding")
            layer = fl.MaxPool2()
        elif n.op_type == "Flatten":
            if a.get("axis", 1) != 1:
                raise SystemExit(f"Flatten {n.name}: only axis 1")
            layer = fl.Flatten()
        else:
            raise SystemExit(f"node {n.name}: {n.op_type} not supported")
        layers.append(layer)
        cur = n.output[0]
        i += 1
    if cur != g.output[0].name:
        raise SystemExit(f"the chain ends in {cur}, not the first output {g.output[0].name}")
    return fl.Net(layers), names


def snapshot(net):
    return [{k: v.copy() for k, v in layer.params.items()} for layer in net.layers]


def restore(net, snap):
    for layer, p in zip(net.layers, snap):
        for k, v in p.items():
            layer.params[k] = v.copy()


def trainable(net, names, weights_only):
    """(layer index, key) of the trained parameters: those that are ONNX initializers."""
    keys = []
    for li, layer in enumerate(net.layers):
        for k, v in layer.params.items():
            if (li, k) in names and (not weights_only or v.ndim >= 2):
                keys.append((li, k))
    return keys


def logits(net, x, batch=256):
    return np.concatenate([net.forward(x[s : s + batch]) for s in range(0, len(x), batch)], 0)


def loss_of(out, y):
    return float(fl.softmax_xent(out, y)[0])


def with_params(model, net, names):
    """A copy of the ONNX model with the network's current parameters as initializers."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    by_name = {t.name: t for t in m.graph.initializer}
    for (li, k), (name, transposed) in names.items():
        v = net.layers[li].params[k]
        v = np.ascontiguousarray(v.T if transposed else v, np.float32)
        by_name[name].CopyFrom(numpy_helper.from_array(v, name))
    return m


def ort_outputs(model, x, output, batch=256):
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    return np.concatenate([sess.run([output], {name: x[s : s + batch]})[0] for s in range(0, len(x), batch)], 0)


def accuracy(out, y):
    return float(row_scores(out, y).mean())


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model")
    ap.add_argument("data")
    ap.add_argument("--holdout", type=float, default=0.5)
    ap.add_argument("--split-seed", type=int, default=0)
    ap.add_argument("--epochs", default="5,10,20")
    ap.add_argument("--lrs", default="1e-3,3e-3")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--seeds", default="0,1,2,3,4", help="shuffle seeds; each setting is trained once per seed")
    ap.add_argument("--weights-only", action="store_true", help="train only tensors of rank >= 2")
    args = ap.parse_args()
    t0 = time.time()

    model = onnx.load(args.model)
    data = np.load(args.data)
    in_name = model.graph.input[0].name
    x = np.asarray(data[in_name] if in_name in data else data["input"], np.float32)
    y = np.asarray(data["labels"])
    if y.dtype.kind not in "iu":
        raise SystemExit("classification labels (integers) only")
    sel, hold = (np.asarray(r, np.int64) for r in split(y, args.holdout, args.split_seed))
    xs, ys, xh, yh = x[sel], y[sel], x[hold], y[hold]
    output = model.graph.output[0].name

    net, names = load_net(model)
    parent = snapshot(net)

    # The numpy network must compute what onnxruntime computes.
    ort_h = ort_outputs(model, xh, output)
    np_h = logits(net, xh)
    parent_hold = accuracy(ort_h, yh)
    parent_hold_np = accuracy(np_h, yh)
    rows_differ = int((row_scores(ort_h, yh) != row_scores(np_h, yh)).sum())
    check = {
        "holdout_accuracy_onnxruntime": parent_hold,
        "holdout_accuracy_numpy": parent_hold_np,
        "rows_scored_differently": rows_differ,
        "max_abs_logit_diff": float(np.abs(ort_h.astype(np.float64) - np_h).max()),
    }
    if parent_hold != parent_hold_np:
        print(json.dumps({"error": "numpy network differs from onnxruntime", "check": check}), flush=True)
        sys.exit(1)
    parent_sel = accuracy(ort_outputs(model, xs, output), ys)

    keys = trainable(net, names, args.weights_only)
    seeds = [int(s) for s in args.seeds.split(",")]
    grid = []
    for epochs in (int(e) for e in args.epochs.split(",")):
        for lr in (float(v) for v in args.lrs.split(",")):
            runs = []
            for seed in seeds:
                restore(net, parent)
                steps = fl.train(net, xs, ys, epochs=epochs, batch=args.batch, lr=lr, seed=seed, keys=keys)
                out_s = logits(net, xs)
                out_h = ort_outputs(with_params(model, net, names), xh, output)
                np_hold = accuracy(logits(net, xh), yh)
                hold_acc = accuracy(out_h, yh)
                runs.append(
                    {
                        "seed": seed,
                        "steps": steps,
                        "selection_accuracy": accuracy(out_s, ys),
                        "selection_loss": loss_of(out_s, ys),
                        "holdout_accuracy": hold_acc,
                        "holdout_accuracy_numpy": np_hold,
                    }
                )
            mean = lambda key: statistics.mean(r[key] for r in runs)  # noqa: E731
            gains = [100 * (r["holdout_accuracy"] - parent_hold) for r in runs]
            grid.append(
                {
                    "epochs": epochs,
                    "lr": lr,
                    "selection_accuracy": mean("selection_accuracy"),
                    "selection_loss": mean("selection_loss"),
                    "holdout_accuracy": mean("holdout_accuracy"),
                    "holdout_gain_points": statistics.mean(gains),
                    "holdout_gain_sd": statistics.stdev(gains) if len(gains) > 1 else 0.0,
                    "numpy_onnxruntime_disagree": sum(r["holdout_accuracy"] != r["holdout_accuracy_numpy"] for r in runs),
                    "runs": runs,
                }
            )
    # Chosen by the selection rows only; holdout numbers above are for information.
    best_i = min(range(len(grid)), key=lambda i: (-grid[i]["selection_accuracy"], grid[i]["selection_loss"], i))
    best = grid[best_i]
    report = {
        "model": os.path.relpath(os.path.abspath(args.model), ROOT),
        "data": os.path.relpath(os.path.abspath(args.data), ROOT),
        "split": {"holdout": args.holdout, "split_seed": args.split_seed, "selection": len(sel), "holdout_rows": len(hold)},
        "trained": [names[k][0] for k in keys],
        "bn": "inference mode, stored statistics fixed; scale/bias trained unless --weights-only",
        "optimizer": {"name": "adam", "batch": args.batch, "seeds": seeds},
        "check": check,
        "parent": {"selection_accuracy": parent_sel, "holdout_accuracy": parent_hold},
        "chosen": {"epochs": best["epochs"], "lr": best["lr"], "by": "mean selection accuracy (ties: selection loss)"},
        "finetuned": {
            "selection_accuracy": best["selection_accuracy"],
            "holdout_accuracy": best["holdout_accuracy"],
            "holdout_accuracies": [r["holdout_accuracy"] for r in best["runs"]],
        },
        "gain_points": best["holdout_gain_points"],
        "gain_sd": best["holdout_gain_sd"],
        "grid": grid,
        "seconds": round(time.time() - t0, 1),
    }
    print(json.dumps(report, indent=1))
    print(
        f"{report['model']}: parent holdout {100 * parent_hold:.2f}%, fine-tuned {100 * best['holdout_accuracy']:.2f}% "
        f"({best['holdout_gain_points']:+.2f} ± {best['holdout_gain_sd']:.2f} points over {len(seeds)} seeds; "
        f"{best['epochs']} epochs, lr {best['lr']:g}, chosen by selection accuracy {100 * best['selection_accuracy']:.2f}%)",
        file=sys.stderr,
    )


if __name__ == "__main__":
    main()
