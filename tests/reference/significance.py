#!/usr/bin/env python3
"""Independent reference for `smd-onnx evolve`'s significance numbers.

Usage: significance.py ORIGINAL.onnx DATA.npz OUT_DIR

Reads OUT_DIR/report.json only for the run's settings (holdout fraction, split seed, batch,
scored output) and the numbers to check. Everything else is recomputed here from scratch with
numpy and onnxruntime: the selection/holdout split, each model's predictions (the original
model, OUT_DIR/best.onnx and OUT_DIR/ensemble.onnx), per-row correctness, McNemar's exact test
(in integers) and the paired bootstrap (the same SplitMix64 stream). It then compares them with
`best.significance` and the exported ensemble's `significance`: discordant counts, gains, the
interval bounds and the bootstrap seed exactly; the p-value to 1e-12 relative. One exception:
a regression ensemble's values, which smd-onnx averages in f64 from the members' predictions
while ensemble.onnx averages in f32, are compared to 1e-6 of the original model's MSE.

Prints a JSON summary on stdout; exits 1 when something differs.

Definitions (README's report.json paragraph; src/evolve/significance.rs):
- per-row score: argmax (ties -> lowest index) of the row's probabilities == label (1 or 0),
  or minus the squared error for regression; d = score(candidate) - score(original);
- bootstrap: resample r (of B) draws n row positions, draw j being
  splitmix64_output(seed, r*n + j) mod n; its gain is sum(d) (in draw order, f64) / n;
  the 95% interval is [g[k], g[B-1-k]] of the sorted gains with k = B // 40;
- seed: split seed XOR 0x534D442D424F4F54;
- McNemar: p = min(1, 2 * P[Bin(b+c, 1/2) <= min(b, c)]), 1 when b + c = 0.
"""

import json
import math
import sys
from fractions import Fraction
from pathlib import Path

import numpy as np
import onnxruntime as ort

MASK = (1 << 64) - 1
GAMMA = 0x9E3779B97F4A7C15
SEED_SALT = 0x534D442D424F4F54


def mix(z):
    """SplitMix64's output function of one state (Python ints)."""
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK
    return z ^ (z >> 31)


def split_hash(z):
    """The split's stateless SplitMix64 hash: one step from state z."""
    return mix((z + GAMMA) & MASK)


def split_key(seed, cls, row):
    return split_hash(split_hash(split_hash(seed) ^ (cls & MASK)) ^ row)


def round_half_away(x):
    f = math.floor(x)
    return f + 1 if x - f >= 0.5 else f


def split(labels, fraction, seed):
    """(selection, holdout) rows: per class (regression: all rows), rows ordered by a keyed hash,
    the first round(F * n_c) held out; both parts non-empty when n >= 2."""
    n = len(labels)
    if labels.dtype.kind in "iu":
        groups = []
        for c in sorted(set(int(v) for v in labels)):
            rows = [r for r in range(n) if int(labels[r]) == c]
            groups.append(sorted(rows, key=lambda r: (split_key(seed, c, r), r)))
    else:
        groups = [sorted(range(n), key=lambda r: (split_key(seed, MASK, r), r))]
    cut = [min(round_half_away(len(g) * fraction), len(g)) for g in groups]
    if n >= 2:
        largest = max(range(len(groups)), key=lambda i: (len(groups[i]), -i))
        hold = sum(cut)
        if hold == 0:
            cut[largest] = 1
        elif hold == n:
            cut[largest] = len(groups[largest]) - 1
    holdout = sorted(r for g, c in zip(groups, cut) for r in g[:c])
    selection = sorted(r for g, c in zip(groups, cut) for r in g[c:])
    return selection, holdout


DTYPES = {
    "tensor(float)": np.float32,
    "tensor(double)": np.float64,
    "tensor(float16)": np.float16,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
    "tensor(uint8)": np.uint8,
    "tensor(int8)": np.int8,
    "tensor(bool)": np.bool_,
}


def predict(model, data, rows, output, batch, threads):
    """The model's `output` for `rows`, run in batches of `batch` rows in order."""
    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = threads
    sess = ort.InferenceSession(str(model), opts, providers=["CPUExecutionProvider"])
    inputs = sess.get_inputs()
    arrays = {}
    for i in inputs:
        key = i.name if i.name in data else ("x" if len(inputs) == 1 and "x" in data else None)
        if key is None:
            raise SystemExit(f"{model}: no array for input {i.name!r}")
        arrays[i.name] = np.asarray(data[key]).astype(DTYPES.get(i.type, np.float32), copy=False)
    rows = np.asarray(rows, dtype=np.int64)
    parts = []
    for s in range(0, len(rows), batch):
        feed = {k: v[rows[s : s + batch]] for k, v in arrays.items()}
        parts.append(np.asarray(sess.run([output], feed)[0]))
    return np.concatenate(parts, axis=0)


def row_scores(out, labels):
    """Per-row score: 1/0 correct (classification), -(value - target)^2 (regression)."""
    if labels.dtype.kind in "iu":
        p = out.reshape(len(labels), -1).astype(np.float32)
        sums = p.astype(np.float64).sum(axis=1)
        if not (np.all(p >= 0) and np.all(np.abs(sums - 1.0) <= 1e-4)):
            e = np.exp(p.astype(np.float64) - p.max(axis=1, keepdims=True).astype(np.float64))
            p = (e * (1.0 / e.sum(axis=1, keepdims=True))).astype(np.float32)
        return (np.argmax(p, axis=1) == labels).astype(np.float64)
    v = out.reshape(len(labels), -1)[:, 0].astype(np.float32).astype(np.float64)
    d = v - labels.astype(np.float64)
    return -(d * d)


def primary(scores, classification):
    """Accuracy, or -MSE (squared errors added in row order, as smd-onnx's metrics do)."""
    n = len(scores)
    if classification:
        return int(scores.sum()) / n
    return -(float(np.add.accumulate(-scores)[-1]) / n)


def bootstrap_ci95(diff, resamples, seed):
    n = len(diff)
    i = np.arange(1, resamples * n + 1, dtype=np.uint64)
    with np.errstate(over="ignore"):
        z = np.uint64(seed) + i * np.uint64(GAMMA)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    idx = (z % np.uint64(n)).astype(np.int64).reshape(resamples, n)
    # add.accumulate adds in draw order, as the Rust loop does.
    gains = np.sort(np.add.accumulate(diff[idx], axis=1)[:, -1] / n)
    k = resamples // 40
    return [float(gains[k]), float(gains[resamples - 1 - k])]


def mcnemar_p(b, c):
    m, k = b + c, min(b, c)
    if m == 0:
        return 1.0
    tail = sum(math.comb(m, i) for i in range(k + 1))
    return min(1.0, float(Fraction(2 * tail, 2**m)))


def main():
    original, data_path, out = sys.argv[1], sys.argv[2], Path(sys.argv[3])
    report = json.loads((out / "report.json").read_text())
    st = report["settings"]
    data = dict(np.load(data_path))
    labels_all = data["labels"]
    is_class = labels_all.dtype.kind in "iu"
    selection, holdout = split(labels_all, st["holdout"], st["split_seed"])
    assert len(holdout) == report["samples"]["holdout"], "holdout size differs"
    threads = report.get("runtime", {}).get("intra_threads")
    seed = st["split_seed"] ^ SEED_SALT

    def scores(model, rows):
        out_ = predict(model, data, rows, report["output"], st["batch"], threads)
        return row_scores(out_, labels_all[np.asarray(rows)])

    orig = {part: scores(original, rows) for part, rows in [("sel", selection), ("hold", holdout)]}
    checks = []
    if report.get("best") and (out / "best.onnx").exists():
        checks.append(("best", out / "best.onnx", report["best"]["significance"]))
    kind = report["outputs"].get("ensemble_kind")
    for e in report["ensembles"]:
        if e["name"] == kind and (out / "ensemble.onnx").exists():
            checks.append((f"ensemble {kind}", out / "ensemble.onnx", e["significance"]))
    if not checks:
        raise SystemExit("nothing to check: no best.onnx or ensemble.onnx")

    summary, failures = {}, []
    for name, model, theirs in checks:
        # Regression ensembles: the graph's f32 mean vs smd-onnx's f64 mean of the members.
        loose = not is_class and name.startswith("ensemble")
        cand = {part: scores(model, rows) for part, rows in [("sel", selection), ("hold", holdout)]}
        so, sc = orig["hold"], cand["hold"]
        gain = primary(sc, is_class) - primary(so, is_class)
        sel_gain = primary(cand["sel"], is_class) - primary(orig["sel"], is_class)
        ours = {
            "gain": gain,
            "ci95": bootstrap_ci95(sc - so, 2000, seed),
            "selection_gain": sel_gain,
            "gap": sel_gain - gain,
            "bootstrap": {"resamples": 2000, "seed": seed},
        }
        if is_class:
            b = int(np.sum((so == 1) & (sc == 0)))
            c = int(np.sum((so == 0) & (sc == 1)))
            ours["discordant"] = [b, c]
            ours["mcnemar_p"] = mcnemar_p(b, c)
        for key, want in ours.items():
            got = theirs.get(key)
            if key == "mcnemar_p":
                ok = got is not None and abs(got - want) <= 1e-12 * abs(want)
            elif loose and key != "bootstrap":
                scale = abs(primary(so, is_class))
                near = lambda a, b: abs(a - b) <= 1e-6 * scale
                w = want if isinstance(want, list) else [want]
                g = got if isinstance(got, list) else [got]
                ok = got is not None and len(g) == len(w) and all(map(near, g, w))
            else:
                ok = got == want
            if not ok:
                failures.append(f"{name}: {key}: report {got!r}, reference {want!r}")
        if not is_class and "mcnemar_p" in theirs:
            failures.append(f"{name}: mcnemar_p present for regression")
        summary[name] = ours
    print(json.dumps({"checked": summary, "failures": failures}, indent=1))
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
