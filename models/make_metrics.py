"""Write fixtures/expected/sklearn/<model-stem>.json: scikit-learn's metrics of every scored
fixture (all samples), the reference for smd-onnx's `score --json` (`metrics`, `per_class`).

The model's output comes from onnxruntime as for the other goldens (fixtures/expected/README.md);
the predicted class is the argmax of the probabilities (ties to the lowest index). Run after
make_expected.py (make_fixtures.sh does).
"""

from __future__ import annotations

import os
import sys

import numpy as np
from sklearn import metrics as skm

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fixturelib as fl  # noqa: E402
from make_expected import FIXTURE_SET  # noqa: E402

OUT = os.path.join(fl.EXPECTED, "sklearn")


def classification(out, labels):
    p = fl.probabilities(out)
    classes = p.shape[1]
    y = labels.astype(np.int64)
    pred = p.argmax(1)
    every = list(range(classes))
    precision, recall, f1, support = skm.precision_recall_fscore_support(
        y, pred, labels=every, zero_division=0
    )
    res = {
        "metrics": {
            "accuracy": skm.accuracy_score(y, pred),
            "balanced_accuracy": skm.balanced_accuracy_score(y, pred),
            "macro_f1": skm.f1_score(y, pred, average="macro"),
            "nll": skm.log_loss(y, p, labels=every),
        },
        "per_class": {
            "precision": precision.tolist(),
            "recall": recall.tolist(),
            "f1": f1.tolist(),
            "support": support.tolist(),
            "confusion": skm.confusion_matrix(y, pred, labels=every).tolist(),
        },
    }
    if classes >= 5:
        res["metrics"]["top5_accuracy"] = skm.top_k_accuracy_score(y, p, k=5, labels=every)
    res["metrics"] = {k: float(v) for k, v in res["metrics"].items()}
    return res


def regression(out, labels):
    y = labels.astype(np.float64)
    v = out[:, 0].astype(np.float64)
    return {
        "metrics": {
            "mse": float(skm.mean_squared_error(y, v)),
            "mae": float(skm.mean_absolute_error(y, v)),
        }
    }


def main():
    os.makedirs(OUT, exist_ok=True)
    for model, data in FIXTURE_SET.items():
        if data is None:
            continue
        stem = model[: -len(".onnx")]
        _, _, out, labels = fl.scored_output(
            os.path.join(fl.ROOT, "models", model), os.path.join(fl.ROOT, "fixtures", data)
        )
        if np.issubdtype(labels.dtype, np.floating):
            res = regression(out, labels)
        else:
            res = classification(out, labels)
        res = {"model": f"models/{model}", "data": f"fixtures/{data}", **res}
        fl.write_json(os.path.join(OUT, stem + ".json"), res)
        print(f"{stem}: {res['metrics']}", flush=True)


if __name__ == "__main__":
    main()
