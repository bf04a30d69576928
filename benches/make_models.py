#!/usr/bin/env python3
"""Benchmark models with random weights (timing only, their predictions mean nothing) and data.

Usage: make_models.py OUT_DIR
Writes into OUT_DIR:
  mlp_small.onnx        + mlp_small.npz      784-128-10 MLP, 10,000 samples (fixed costs dominate)
  mobilenet_7mb.onnx    + mobilenet_600.npz  MobileNet-v1-like, ~7 MB, 600 images 3x224x224 (memory target)
  resnet50.onnx         + resnet50_64.npz    ResNet-50-like, ~25M parameters, 64 images (one pass >= 1 s)
  mlp_wide.onnx         + mlp_wide.npz       4096-wide MLP, ~25M parameters, 2,000 samples (large weights, cheap passes)
                          mobilenet_64.npz   64 images for mobilenet_7mb (ensemble speed, benches/ensemble.sh)
Every model has input `input`, output `logits` [N, C], BatchNormalization where a CNN has it.
Data files are uncompressed npz (memory-mappable) with `input` and int64 `labels`.
"""
import os
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

RNG = np.random.default_rng(0)


class Builder:
    def __init__(self):
        self.nodes, self.inits, self.n = [], [], 0

    def name(self, p):
        self.n += 1
        return f"{p}{self.n}"

    def init(self, p, a):
        n = self.name(p)
        self.inits.append(numpy_helper.from_array(a.astype(np.float32), n))
        return n

    def op(self, op, inputs, **attrs):
        out = self.name(op.lower())
        self.nodes.append(helper.make_node(op, inputs, [out], name=out, **attrs))
        return out

    def conv_bn(self, x, cin, cout, k=3, stride=1, groups=1, relu=True, gamma=1.0):
        w = RNG.standard_normal((cout, cin // groups, k, k)) * np.sqrt(2.0 / (cin // groups * k * k))
        y = self.op("Conv", [x, self.init("w", w)], kernel_shape=[k, k], strides=[stride, stride],
                    pads=[k // 2] * 4, group=groups)
        bn = [self.init("g", np.full(cout, gamma)), self.init("b", np.zeros(cout)),
              self.init("m", np.zeros(cout)), self.init("v", np.ones(cout))]
        y = self.op("BatchNormalization", [y] + bn)
        return self.op("Relu", [y]) if relu else y

    def head(self, x, cin, classes):
        y = self.op("GlobalAveragePool", [x])
        y = self.op("Flatten", [y])
        w = RNG.standard_normal((classes, cin)) * np.sqrt(1.0 / cin)
        return self.op("Gemm", [y, self.init("fc", w), self.init("fcb", np.zeros(classes))], transB=1)

    def model(self, out, in_shape, classes, path):
        self.nodes.append(helper.make_node("Identity", [out], ["logits"], name="logits"))
        g = helper.make_graph(self.nodes, "bench",
                              [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N"] + in_shape)],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", classes])],
                              self.inits)
        m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], producer_name="smd-onnx benches")
        m.ir_version = 8
        onnx.checker.check_model(m)
        onnx.save(m, path)


def resnet50(path):
    b = Builder()
    x = b.conv_bn("input", 3, 64, k=7, stride=2)
    x = b.op("MaxPool", [x], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
    cin = 64
    for stage, (blocks, width) in enumerate([(3, 64), (4, 128), (6, 256), (3, 512)]):
        for i in range(blocks):
            stride = 2 if i == 0 and stage > 0 else 1
            y = b.conv_bn(x, cin, width, k=1)
            y = b.conv_bn(y, width, width, k=3, stride=stride)
            y = b.conv_bn(y, width, width * 4, k=1, relu=False, gamma=0.2)
            sc = b.conv_bn(x, cin, width * 4, k=1, stride=stride, relu=False) if i == 0 else x
            x = b.op("Relu", [b.op("Add", [y, sc])])
            cin = width * 4
    b.model(b.head(x, cin, 1000), [3, 224, 224], 1000, path)


def mobilenet(path, alpha=0.6):
    b = Builder()
    c = lambda n: int(n * alpha)
    x = b.conv_bn("input", 3, c(32), stride=2)
    cin = c(32)
    for cout, stride in [(64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2)] + [(512, 1)] * 5 + [(1024, 2), (1024, 1)]:
        x = b.conv_bn(x, cin, cin, stride=stride, groups=cin)
        x = b.conv_bn(x, cin, c(cout), k=1)
        cin = c(cout)
    b.model(b.head(x, cin, 1000), [3, 224, 224], 1000, path)


def mlp(path, sizes):
    b = Builder()
    x = "input"
    for i, (a, o) in enumerate(zip(sizes, sizes[1:])):
        w = RNG.standard_normal((a, o)) * np.sqrt(2.0 / a)
        x = b.op("Gemm", [x, b.init("w", w), b.init("b", np.zeros(o))])
        if i < len(sizes) - 2:
            x = b.op("Relu", [x])
    b.model(x, [sizes[0]], sizes[-1], path)


def data(path, n, shape, classes):
    x = RNG.standard_normal((n, *shape), dtype=np.float32)
    y = RNG.integers(0, classes, n).astype(np.int64)
    np.savez(path, input=x, labels=y)


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    todo = [
        ("mlp_small.onnx", lambda p: mlp(p, [784, 128, 10]), "mlp_small.npz", (10000, [784], 10)),
        ("mobilenet_7mb.onnx", mobilenet, "mobilenet_600.npz", (600, [3, 224, 224], 1000)),
        ("resnet50.onnx", resnet50, "resnet50_64.npz", (64, [3, 224, 224], 1000)),
        ("mlp_wide.onnx", lambda p: mlp(p, [1024, 4096, 4096, 1024, 100]), "mlp_wide.npz", (2000, [1024], 100)),
    ]
    for model, make, npz, (n, shape, classes) in todo:
        if not os.path.exists(os.path.join(out, model)):
            make(os.path.join(out, model))
        if not os.path.exists(os.path.join(out, npz)):
            data(os.path.join(out, npz), n, shape, classes)
        print(model, os.path.getsize(os.path.join(out, model)), "bytes")
    if not os.path.exists(os.path.join(out, "mobilenet_64.npz")):
        data(os.path.join(out, "mobilenet_64.npz"), 64, [3, 224, 224], 1000)


if __name__ == "__main__":
    main()
