"""Evolve a fixture model from Python with a metric written in Python (macro-F1).

    pip install ./python
    python examples/python_custom_metric.py

Runs smd-onnx twice on the repository's undertrained digits CNN, once choosing by accuracy
(the default) and once by a macro-F1 written below, and prints what each chose.
"""

from pathlib import Path
import tempfile

import numpy as np

import smd_onnx

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "models" / "digits_cnn_undertrained.onnx"
DATA = ROOT / "fixtures" / "digits_val.npz"


def macro_f1(outputs: np.ndarray, labels: np.ndarray) -> float:
    """Mean F1 over the classes in the labels or the predictions."""
    pred = outputs.argmax(axis=1)
    scores = []
    for c in np.union1d(labels, pred):
        tp = np.sum((pred == c) & (labels == c))
        fp = np.sum((pred == c) & (labels != c))
        fn = np.sum((pred != c) & (labels == c))
        scores.append(0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn))
    return float(np.mean(scores))


def chosen(run: smd_onnx.EvolveResult) -> str:
    best = run.best
    greedy = next(e for e in run.ensembles if e["name"] == "greedy")
    members = ", ".join(f"child {m['index']}×{m['weight']:g}" for m in greedy["members"])
    who = "the parent" if best is None else f"child {best['index']}"
    return f"best: {who}; greedy ensemble: {members}"


def main() -> None:
    with np.load(DATA) as z:
        inputs = {k: z[k] for k in z.files if k != "labels"}
        labels = z["labels"]
    with tempfile.TemporaryDirectory() as tmp:
        by_accuracy = smd_onnx.evolve(MODEL, DATA, out=f"{tmp}/acc", children=8, seed=1)
        # The same data as numpy arrays, and the metric as a Python function.
        by_f1 = smd_onnx.evolve(MODEL, inputs=inputs, labels=labels, out=f"{tmp}/f1",
                                children=8, seed=1, metric=macro_f1)
        print("accuracy:", chosen(by_accuracy))
        print("macro-F1:", chosen(by_f1))
        b = by_f1.best
        if b is not None:
            print(f"macro-F1 of its best on holdout: {b['scores']['holdout']['custom']:.4f} "
                  f"(accuracy {b['scores']['holdout']['accuracy']:.2%})")


if __name__ == "__main__":
    main()
