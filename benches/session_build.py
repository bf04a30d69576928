#!/usr/bin/env python3
"""Where a child's session build goes (issue 17 item 1): ONNX Runtime settings against the
build and the pass they cost.

`evolve` builds one session per child from the model with its mutable tensors (float
initializers with >= 2 dims) given as external initializers held in memory. This script
builds the same kind of session with onnxruntime's Python API, from the same library version,
under several settings, and times the build (median of BUILDS) and one pass over the data in
batches of BATCH (median of PASSES):

- default: what evolve uses (all graph optimizations, weight prepacking);
- no prepacking: `session.disable_prepacking = 1`;
- basic: `ORT_ENABLE_BASIC` optimizations;
- none: `ORT_DISABLE_ALL`.

    python benches/session_build.py MODEL.onnx DATA.npz [--batch 256] [--builds 5] [--passes 3]

Prints a Markdown table: build ms, pass ms, and (build + pass) against the default's pass,
i.e. what a child costs against the floor's pass.
"""

import argparse
import statistics
import time

import numpy as np
import onnx
import onnxruntime as ort
from onnx import numpy_helper


def template(path):
    """The model's bytes with its >= 2-dim float initializers taken out, and those tensors."""
    m = onnx.load(path)
    names, values = [], []
    for init in m.graph.initializer:
        if len(init.dims) >= 2 and init.data_type in (onnx.TensorProto.FLOAT,):
            values.append(np.ascontiguousarray(numpy_helper.to_array(init)))
            names.append(init.name)
            init.ClearField("raw_data")
            init.ClearField("float_data")
            init.data_location = onnx.TensorProto.EXTERNAL
            e = init.external_data.add()
            e.key, e.value = "location", "in-memory.bin"
    return m.SerializeToString(), names, values


def options(level, entries, names, ort_values):
    o = ort.SessionOptions()
    o.graph_optimization_level = level
    for k, v in entries.items():
        o.add_session_config_entry(k, v)
    o.add_external_initializers(names, ort_values)
    return o


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model")
    ap.add_argument("data")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--builds", type=int, default=5)
    ap.add_argument("--passes", type=int, default=3)
    a = ap.parse_args()

    data = np.load(a.data)
    model_bytes, names, values = template(a.model)
    ort_values = [ort.OrtValue.ortvalue_from_numpy(v) for v in values]
    first = ort.InferenceSession(model_bytes, options(
        ort.GraphOptimizationLevel.ORT_ENABLE_ALL, {}, names, ort_values),
        providers=["CPUExecutionProvider"])
    feeds_names = [i.name for i in first.get_inputs()]
    arrays = {n: data[n] if n in data else data["x"] for n in feeds_names}
    rows = len(next(iter(arrays.values())))
    L = ort.GraphOptimizationLevel
    settings = [
        ("default (all, prepacking)", L.ORT_ENABLE_ALL, {}),
        ("no prepacking", L.ORT_ENABLE_ALL, {"session.disable_prepacking": "1"}),
        ("basic optimizations", L.ORT_ENABLE_BASIC, {}),
        ("no optimizations", L.ORT_DISABLE_ALL, {}),
    ]
    results = []
    for name, level, entries in settings:
        builds = []
        for _ in range(a.builds):
            t = time.perf_counter()
            s = ort.InferenceSession(model_bytes, options(level, entries, names, ort_values),
                                     providers=["CPUExecutionProvider"])
            builds.append(time.perf_counter() - t)
        passes = []
        for _ in range(a.passes + 1):
            t = time.perf_counter()
            for i in range(0, rows, a.batch):
                s.run(None, {n: v[i:i + a.batch] for n, v in arrays.items()})
            passes.append(time.perf_counter() - t)
        # The first pass warms up (allocations, first-run kernels): not counted.
        results.append((name, statistics.median(builds), statistics.median(passes[1:])))
    base_pass = results[0][2]
    mb = sum(v.nbytes for v in values) / 1e6
    print(f"{a.model}: {len(values)} mutable tensors, {mb:.1f} MB; {rows} rows, batch {a.batch}; "
          f"onnxruntime {ort.__version__}")
    print()
    print("| setting | build ms | pass ms | (build + pass) / default pass |")
    print("|---|---|---|---|")
    for name, b, p in results:
        print(f"| {name} | {1e3 * b:.1f} | {1e3 * p:.1f} | {(b + p) / base_pass:.3f} |")


if __name__ == "__main__":
    main()
