#!/usr/bin/env python3
"""An independent oracle for `smd-onnx evolve`'s decisions.

Given a run's output folder, the original model and the data, this re-derives from the models
and the data alone (numpy and onnxruntime only; no smd-onnx code path decides or scores
anything here) every number and every decision of the run's report.json, and compares:

- the label-stratified selection/holdout split (re-implemented from src/score/split.rs in
  tests/reference/significance.py, shared with that reference: per class, rows ordered by a splitmix64-keyed hash of (seed, class, row), the first
  round(F * n_c) held out; both parts non-empty);
- the metrics of the original model, of every generation's parent, of every child and of every
  merged candidate, on both parts (accuracy, balanced accuracy, macro F1, top-5, NLL with the
  1e-15 floor, MSE, MAE, exactly as
  fixtures/expected/README.md defines them), scored with onnxruntime in batches of the run's
  batch size over each part's rows in ascending order; a candidate whose outputs are NaN/Inf
  on the selection rows has failed (README, exit codes): no metrics, no selection, no
  ensemble; NaN/Inf holdout rows of a candidate that did not fail count as wrong answers;
- per generation: the best child (selection accuracy, lower NLL breaking ties, the lowest index
  among equals), the merged membership (every child strictly better than the generation's
  parent, when there are at least two), whether the merged candidate's holdout was scored (only
  when it beats the kept child, or the parent), and the kept candidate;
- `best`: generation, index, kind, lineage, scores and both gains; best.onnx's own scores;
- the export gate: McNemar's exact p-value (tests/reference/significance.py) of the selection
  gain of `best` and of each ensemble over the original model (`selection_p`), and best.onnx and
  ensemble.onnx written exactly when it is below `settings.accept_p`;
- the four ensembles of the last generation (mean and mean+parent; greedy and greedy+parent by
  Caruana forward selection with replacement) with their members, weights and scores, and the
  `auto` choice between them (`outputs.ensemble_kind`), and ensemble.onnx's holdout scores. An
  ensemble's predictions are the weighted float64 mean of its members' probabilities (or
  regression values), stored as float32 like any model's; each greedy trial (the running
  members plus one candidate) is scored the same way, by the same metrics as any model.

smd-onnx is used for one thing only: `smd-onnx replay ORIGINAL --from report.json --child G:I`
(or `--merged G`) rebuilds a candidate's model file from the recipes the report stores. The
mutation (a keyed Philox stream decomposed into subspaces) is not re-implemented here; each
rebuilt file is then scored by onnxruntime directly, so a wrong decision or a wrong number in
the report cannot agree with the oracle by sharing smd-onnx's scoring, selection or ensemble
code.

Usage: decisions.py --smd BIN --model ORIGINAL --data DATA --run DIR [--ensemble auto|NAME]
Exit status: 0 when everything agrees, 1 on any disagreement (each printed), 2 on a usage or
environment error.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile

import numpy as np
import onnxruntime as ort

# Relative tolerance on every metric and gain (an absolute floor for values near zero, such as
# a gain of exactly 0): scoring is the same onnxruntime build on the same rows and batches, so
# the only differences left are the order of float64 sums and the last bit of a float64 exp.
REL = 1e-9
ABS = 1e-12
# Exported ensembles combine their members inside one graph (float32 arithmetic): compared as
# tests/it/evolve.rs does, accuracy exactly and NLL/MSE to 1e-5.
EXPORT_REL = 1e-5
NLL_FLOOR = 1e-15
# Greedy selection: at most clamp(2 * candidates, 10, 200) steps; stop after 8 steps in a row
# without a new best (src/evolve/select.rs, `greedy_steps` and `PATIENCE`).
PATIENCE = 8


def fail(message):
    """A usage or environment error: exit status 2."""
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


def greedy_steps(candidates):
    return min(max(2 * candidates, 10), 200)


# ---------------------------------------------------------------------------------------------
# The split (src/score/split.rs): the Python re-implementation tests/reference/significance.py
# already holds (one copy for every oracle; none of it is smd-onnx code).

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "reference"))
from significance import mcnemar_p  # noqa: E402
from significance import split as reference_split  # noqa: E402


def split(labels, fraction, seed):
    """(selection rows, holdout rows), each ascending."""
    selection, holdout = reference_split(labels, fraction, seed)
    return np.array(selection, dtype=np.int64), np.array(holdout, dtype=np.int64)


# ---------------------------------------------------------------------------------------------
# Scoring (fixtures/expected/README.md).

NP_OF_ORT = {
    "tensor(float)": np.float32,
    "tensor(double)": np.float64,
    "tensor(float16)": np.float16,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
    "tensor(uint8)": np.uint8,
    "tensor(int8)": np.int8,
    "tensor(bool)": np.bool_,
}


class Preds:
    """A model's predictions for some rows: float32 probabilities [rows, C] (classification)
    or float32 values [rows] (regression); `failed` when some output was NaN/Inf."""

    def __init__(self, rows, values, regression, failed=False):
        self.rows = rows
        self.values = values
        self.regression = regression
        self.failed = failed


class Scorer:
    def __init__(self, data, regression, batch, output):
        self.data = data
        self.regression = regression
        self.batch = batch
        self.output = output

    def feeds(self, session, rows):
        out = {}
        inputs = session.get_inputs()
        for i in inputs:
            if i.name in self.data:
                arr = self.data[i.name]
            elif len(inputs) == 1 and "x" in self.data:
                arr = self.data["x"]
            else:
                fail(f"no data array for model input {i.name!r}")
            out[i.name] = np.ascontiguousarray(arr[rows].astype(NP_OF_ORT[i.type], copy=False))
        return out

    def predict(self, model, rows):
        session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
        chunks = []
        for start in range(0, len(rows), self.batch):
            part = rows[start : start + self.batch]
            (y,) = session.run([self.output], self.feeds(session, part))
            chunks.append(np.asarray(y).astype(np.float32))
        y = np.concatenate(chunks)
        if self.regression:
            v = y.reshape(len(rows), -1)[:, 0]
            return Preds(rows, v, True, failed=not np.all(np.isfinite(v)))
        y = y.reshape(len(rows), -1)
        finite = np.all(np.isfinite(y), axis=1)
        good = y[finite].astype(np.float64)
        # Probabilities as they are when every row is non-negative and sums to 1 within 1e-4,
        # otherwise a softmax in float64 with the row maximum subtracted.
        if not (np.all(good >= 0) and np.all(np.abs(good.sum(axis=1) - 1.0) <= 1e-4)):
            e = np.exp(good - good.max(axis=1, keepdims=True))
            y = y.copy()
            y[finite] = (e / e.sum(axis=1, keepdims=True)).astype(np.float32)
        return Preds(rows, y, False, failed=not bool(np.all(finite)))


def metrics(preds, labels):
    """The metrics of float32 predictions against the labels of their rows (None: failed)."""
    if preds.failed:
        return None
    n = len(preds.rows)
    if preds.regression:
        t = labels[preds.rows].astype(np.float64)
        d = preds.values.astype(np.float64) - t
        return {"samples": n, "mse": float(np.mean(d * d)), "mae": float(np.mean(np.abs(d)))}
    p = preds.values
    lab = labels[preds.rows].astype(np.int64)
    c = p.shape[1]
    pl = p[np.arange(n), lab]
    pred = np.argmax(p, axis=1)
    m = {"samples": n, "accuracy": float(np.mean(pred == lab))}
    # Balanced accuracy: mean recall over the classes in the labels; macro F1: mean F1 over the
    # classes in the labels or the predictions.
    m["balanced_accuracy"] = float(np.mean([np.mean(pred[lab == k] == k) for k in np.unique(lab)]))
    f1 = [
        2.0 * np.sum((pred == k) & (lab == k)) / (np.sum(lab == k) + np.sum(pred == k))
        for k in np.union1d(lab, pred)
    ]
    m["macro_f1"] = float(np.mean(f1))
    if c >= 5:
        m["top5_accuracy"] = float(np.mean(np.sum(p > pl[:, None], axis=1) < 5))
    m["nll"] = float(np.mean(-np.log(np.maximum(pl.astype(np.float64), NLL_FLOOR))))
    return m


def primary(m):
    return m["accuracy"] if "accuracy" in m else -m["mse"]


def selection_p(original, candidate, labels):
    """McNemar's exact p of a candidate's selection predictions against the original's (None
    for regression)."""
    if original.regression:
        return None
    lab = labels[original.rows].astype(np.int64)
    a = np.argmax(original.values, axis=1) == lab
    b = np.argmax(candidate.values, axis=1) == lab
    return mcnemar_p(int(np.sum(a & ~b)), int(np.sum(~a & b)))


def gain(a, b):
    """(a's holdout primary metric minus b's, the magnitude it is relative to)."""
    x, y = primary(a["holdout"]), primary(b["holdout"])
    return x - y, max(abs(x), abs(y))


def better(a, b):
    """a beats b: higher accuracy (lower MSE), then strictly lower NLL."""
    if primary(a) != primary(b):
        return primary(a) > primary(b)
    return "nll" in a and "nll" in b and a["nll"] < b["nll"]


def best_index(ms):
    """The best of a list of metrics (None = failed), the lowest index among equals."""
    out = None
    for i, m in enumerate(ms):
        if m is not None and (out is None or better(m, ms[out])):
            out = i
    return out


def weighted_mean(members):
    """An ensemble's predictions: sum of w * p in member order in float64, divided by the sum
    of the weights, stored as float32 like any model's predictions."""
    acc = np.zeros(members[0][0].values.shape, dtype=np.float64)
    for p, w in members:
        acc += w * p.values.astype(np.float64)
    total = sum(w for _, w in members)
    first = members[0][0]
    return Preds(first.rows, (acc / total).astype(np.float32), first.regression)


def greedy(pool, labels):
    """Caruana forward selection with replacement: each step adds the pool member that makes
    the running ensemble (the mean of the members so far) best on the selection rows; the
    result is the best ensemble seen (the earliest among equals). Returns the counts."""
    steps = greedy_steps(len(pool))
    total = np.zeros(pool[0].values.shape, dtype=np.float64)
    counts = [0] * len(pool)
    best, best_m, since = None, None, 0
    for step in range(1, steps + 1):
        pick, pick_m = None, None
        for c, p in enumerate(pool):
            mean = (total + p.values.astype(np.float64)) / step
            m = metrics(Preds(p.rows, mean.astype(np.float32), p.regression), labels)
            if pick is None or better(m, pick_m):
                pick, pick_m = c, m
        counts[pick] += 1
        total += pool[pick].values.astype(np.float64)
        if best is None or better(pick_m, best_m):
            best, best_m, since = list(counts), pick_m, 0
        else:
            since += 1
            if since >= PATIENCE:
                break
    return best


# ---------------------------------------------------------------------------------------------
# Comparing with the report.


class Checker:
    def __init__(self):
        self.problems = []
        self.metrics = 0
        self.decisions = 0
        # The largest relative difference seen among numbers that agreed (for the summary).
        self.worst = 0.0

    def close(self, where, got, want, rel=REL, scale=0.0):
        """Metrics objects (or numbers) equal to `rel` relative; `want` is the oracle's. A
        difference of two metrics (a gain) is compared relative to `scale`, the larger of the
        two: it is only as exact as they are."""
        if isinstance(want, dict) or isinstance(got, dict):
            if not isinstance(got, dict) or not isinstance(want, dict):
                self.problems.append(f"{where}: report {got!r}, oracle {want!r}")
                return
            if set(got) != set(want):
                self.problems.append(f"{where}: report has {sorted(got)}, oracle {sorted(want)}")
                return
            for k in sorted(want):
                self.close(f"{where}.{k}", got[k], want[k], rel)
            return
        self.metrics += 1
        if got is None or want is None:
            if got is not want:
                self.problems.append(f"{where}: report {got!r}, oracle {want!r}")
            return
        if isinstance(want, int) and not isinstance(want, bool):
            if got != want:
                self.problems.append(f"{where}: report {got!r}, oracle {want!r}")
            return
        diff = abs(got - want)
        size = max(abs(got), abs(want), scale)
        if not diff <= max(rel * size, ABS):
            self.problems.append(f"{where}: report {got!r}, oracle {want!r}")
        elif rel == REL and diff > 0:
            self.worst = max(self.worst, diff / size)

    def same(self, where, got, want):
        """A decision, exactly."""
        self.decisions += 1
        if got != want:
            self.problems.append(f"{where}: report {got!r}, oracle {want!r}")


def scores(sel, hold):
    return {"selection": sel, "holdout": hold}


class Stop(Exception):
    """A candidate the report names cannot be rebuilt: nothing further can be compared."""


class Oracle:
    def __init__(self, args):
        self.smd = args.smd
        self.model = args.model
        self.run = args.run
        self.ensemble_choice = args.ensemble
        self.report_path = os.path.join(args.run, "report.json")
        with open(self.report_path) as f:
            self.report = json.load(f)
        self.work = tempfile.mkdtemp(prefix="smd-oracle-")
        npz = np.load(args.data)
        self.data = {k: npz[k] for k in npz.files}
        self.labels = self.data.pop("labels")
        self.regression = self.labels.dtype.kind == "f"
        s = self.report["settings"]
        self.sel_rows, self.hold_rows = split(self.labels, s["holdout"], s["split_seed"])
        self.scorer = Scorer(self.data, self.regression, s["batch"], self.scored_output())
        self.check = Checker()
        self.cache = {}

    def scored_output(self):
        """The first float output of rank 2 (for regression, rank 1 also). A model whose
        scores must first be exposed from inside the graph (skl2onnx's ZipMap) is outside this
        oracle."""
        session = ort.InferenceSession(self.model, providers=["CPUExecutionProvider"])
        kinds = ("tensor(float)", "tensor(double)", "tensor(float16)")
        floats = [o for o in session.get_outputs() if o.type in kinds]
        for rank in (2, 1) if self.regression else (2,):
            for o in floats:
                if len(o.shape) == rank:
                    return o.name
        fail(f"{self.model}: no float [N, C] output (ZipMap models are not supported)")

    def replay(self, pick, name):
        """Rebuilds a candidate of the report with `smd-onnx replay`; returns the file."""
        out = os.path.join(self.work, name)
        cmd = [self.smd, "replay", self.model, "--from", self.report_path, "--out", out]
        r = subprocess.run(cmd + ["--force"] + pick, capture_output=True, text=True)
        if r.returncode != 0:
            raise Stop(f"replay {' '.join(pick)} failed: {r.stderr.strip()}")
        return out

    def predict(self, model):
        """(selection predictions, holdout predictions) of a model file, memoised. A model
        that is finite on the selection rows has its NaN/Inf holdout rows made wrong answers:
        probability 0 on the label, the rest spread evenly (README: a candidate fails only on
        the selection rows)."""
        if model not in self.cache:
            sel = self.scorer.predict(model, self.sel_rows)
            hold = self.scorer.predict(model, self.hold_rows)
            if hold.failed and not sel.failed and not hold.regression:
                v = hold.values.copy()
                c = v.shape[1]
                for i in np.where(~np.all(np.isfinite(v), axis=1))[0]:
                    v[i, :] = np.float32(1.0) / np.float32(c - 1)
                    v[i, int(self.labels[hold.rows[i]])] = 0.0
                hold = Preds(hold.rows, v, False)
            self.cache[model] = (sel, hold)
        return self.cache[model]

    def scores_of(self, model):
        """Both parts' metrics, or None when the model's outputs are NaN/Inf on either part
        (a failed candidate: README, exit codes)."""
        sel, hold = self.predict(model)
        s, h = metrics(sel, self.labels), metrics(hold, self.labels)
        return None if s is None or h is None else scores(s, h)

    def run_checks(self):
        r, c = self.report, self.check
        sizes = {"selection": len(self.sel_rows), "holdout": len(self.hold_rows)}
        c.same("samples", r["samples"], sizes)
        c.same("output", r["output"], self.scorer.output)
        k, gens = r["settings"]["children"], r["settings"]["generations"]
        original = self.scores_of(self.model)
        c.close("parent", r["parent"], original)
        children = {(ch["generation"], ch["index"]): ch for ch in r["children"]}
        c.same("children", sorted(children), [(g, i) for g in range(gens) for i in range(k)])
        c.same("generations", [g["generation"] for g in r["generations"]], list(range(gens)))

        # The current parent: its file and scores, and the recipes from the original to it.
        parent = (self.model, original, [])
        best, last = None, None
        for gr in r["generations"]:
            g = gr["generation"]
            models = [self.replay(["--child", f"{g}:{i}"], f"g{g}_c{i}.onnx") for i in range(k)]
            kept = self.check_generation(gr, parent, models, children)
            last = (parent, models)
            if kept is not None:
                kind, index, model, sc, recipe = kept
                lineage = parent[2] + [recipe]
                best = (g, index, kind, lineage, sc, parent[1], model)
                parent = (model, sc, lineage)
        self.check_best(best, original)
        self.check_ensembles(last, original)
        return c

    def check_generation(self, gr, parent, models, children):
        """One generation's children, best child, merged candidate and kept candidate;
        returns what is kept (kind, index, file, scores, recipe), or None for the parent."""
        c, g = self.check, gr["generation"]
        parent_model, parent_scores, _ = parent
        c.close(f"generations[{g}].parent", gr["parent"], parent_scores)
        sel = []
        for i, m in enumerate(models):
            sc = self.scores_of(m)
            ch = children.get((g, i), {})
            c.close(f"child {g}:{i}.selection", ch.get("selection"), sc and sc["selection"])
            c.close(f"child {g}:{i}.holdout", ch.get("holdout"), sc and sc["holdout"])
            c.same(f"child {g}:{i} failed", "failed" in ch, sc is None)
            sel.append(sc and sc["selection"])
        b = best_index(sel)
        c.same(f"generations[{g}].best_child", gr["best_child"], b)
        winners = [
            i for i, m in enumerate(sel) if m is not None and better(m, parent_scores["selection"])
        ]
        # Elitism: the best child only if it beats the parent.
        kept = None
        if b is not None and b in winners:
            kept = ("child", b, models[b], self.scores_of(models[b]), children[(g, b)]["recipe"])
        merged = gr["merged"]
        if len(winners) < 2:
            c.same(f"generations[{g}].merged", merged, None)
        elif merged is None:
            c.same(f"generations[{g}].merged.children", None, winners)
        else:
            c.same(f"generations[{g}].merged.children", merged["children"], winners)
            mm = self.replay(["--merged", str(g)], f"g{g}_merged.onnx")
            ms = self.scores_of(mm)
            where = f"generations[{g}].merged"
            c.close(f"{where}.selection", merged["selection"], ms and ms["selection"])
            bar = kept[3]["selection"] if kept else parent_scores["selection"]
            wins = ms is not None and better(ms["selection"], bar)
            # Its holdout rows are scored only when it wins (it is then what is kept).
            c.close(f"{where}.holdout", merged["holdout"], ms["holdout"] if wins else None)
            if wins:
                kept = ("merged", None, mm, ms, merged["recipe"])
        want = "parent" if kept is None else "merged" if kept[0] == "merged" else f"child {b}"
        c.same(f"generations[{g}].kept", gr["kept"], want)
        return kept

    def check_best(self, best, original):
        r, c = self.report, self.check
        path = os.path.join(self.run, "best.onnx")
        if best is None:
            c.same("best", r["best"], None)
            c.same("best.onnx exists", os.path.exists(path), False)
            return
        g, index, kind, lineage, sc, gen_parent, model = best
        rb = r["best"] or {}
        p = selection_p(self.predict(self.model)[0], self.predict(model)[0], self.labels)
        c.close("best.selection_p", rb.get("selection_p"), p)
        gated = p is not None and p >= r["settings"]["accept_p"] and r["settings"]["accept_p"] < 1
        c.same("best.onnx exists", os.path.exists(path), not gated)
        c.same("best.generation", rb.get("generation"), g)
        c.same("best.index", rb.get("index"), index)
        c.same("best.kind", rb.get("kind"), kind)
        c.same("best.lineage", rb.get("lineage"), lineage)
        c.close("best.scores", rb.get("scores"), sc)
        bases = (("gain_vs_original", original), ("gain_vs_generation_parent", gen_parent))
        for field, base in bases:
            value, scale = gain(sc, base)
            c.close(f"best.{field}", rb.get(field), value, scale=scale)
        if os.path.exists(path):
            # The exported file itself scores what the report says.
            c.close("best.onnx scores", self.scores_of(path), sc)

    def check_ensembles(self, last, original):
        """The four ensembles of the last generation's predictions, the `auto` choice and the
        exported ensemble.onnx."""
        r, c = self.report, self.check
        (parent_model, parent_scores, _), models = last
        preds = [self.predict(m) for m in models]
        ok = [i for i, (s, h) in enumerate(preds) if not s.failed and not h.failed]
        parent = self.predict(parent_model)
        # Members: (kind, index, weight, (selection predictions, holdout predictions)).
        children = [("child", i, 1.0, preds[i]) for i in ok]
        with_parent = [("parent", None, 1.0, parent)] + children
        want = {"mean": children, "mean+parent": with_parent}
        for name, pool in (("greedy", children), ("greedy+parent", with_parent)):
            counts = greedy([p[3][0] for p in pool], self.labels)
            want[name] = [(kd, i, float(n), p) for (kd, i, _, p), n in zip(pool, counts) if n > 0]
        names = ["mean", "mean+parent", "greedy", "greedy+parent"]
        got = {e["name"]: e for e in r["ensembles"]}
        c.same("ensembles", [e["name"] for e in r["ensembles"]], names)
        sel, gate = [], {}
        original_sel = self.predict(self.model)[0]
        for name in names:
            members, e = want[name], got.get(name, {})
            refs = [{"kind": kd, "index": i, "weight": w} for kd, i, w, _ in members]
            c.same(f"ensemble {name}.members", e.get("members"), refs)
            s = metrics(weighted_mean([(p[0], w) for _, _, w, p in members]), self.labels)
            h = metrics(weighted_mean([(p[1], w) for _, _, w, p in members]), self.labels)
            c.close(f"ensemble {name}.scores", e.get("scores"), scores(s, h))
            mean_sel = weighted_mean([(p[0], w) for _, _, w, p in members])
            gate[name] = selection_p(original_sel, mean_sel, self.labels)
            c.close(f"ensemble {name}.selection_p", e.get("selection_p"), gate[name])
            bases = (("gain_vs_original", original), ("gain_vs_generation_parent", parent_scores))
            for field, base in bases:
                value, scale = gain(scores(s, h), base)
                c.close(f"ensemble {name}.{field}", e.get(field), value, scale=scale)
            sel.append(s)
        # `auto`: the best of the four on the selection rows, the first among equals.
        chosen = names[best_index(sel)] if self.ensemble_choice == "auto" else self.ensemble_choice
        p = gate[chosen]
        gated = p is not None and p >= r["settings"]["accept_p"] and r["settings"]["accept_p"] < 1
        c.same("outputs.ensemble_kind", r["outputs"].get("ensemble_kind"), None if gated else chosen)
        path = os.path.join(self.run, "ensemble.onnx")
        c.same("ensemble.onnx exists", os.path.exists(path), not gated)
        if os.path.exists(path):
            want_h = got.get(chosen, {}).get("scores", {}).get("holdout") or {}
            got_h = self.scores_of(path)["holdout"]
            for m in ("accuracy", "top5_accuracy"):
                c.same(f"ensemble.onnx holdout {m}", got_h.get(m), want_h.get(m))
            for m in ("nll", "mse"):
                if m in got_h:
                    c.close(f"ensemble.onnx holdout {m}", got_h[m], want_h.get(m), EXPORT_REL)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--smd", required=True, help="the smd-onnx binary (for `replay` only)")
    ap.add_argument("--model", required=True, help="the original model given to evolve")
    ap.add_argument("--data", required=True, help="the .npz data given to evolve")
    ap.add_argument("--run", required=True, help="evolve's output folder (with report.json)")
    ap.add_argument("--ensemble", default="auto", help="evolve's --ensemble (default auto)")
    args = ap.parse_args()
    oracle = Oracle(args)
    version = oracle.report["runtime"]["version"]
    if version != ort.__version__:
        print(
            f"error: onnxruntime {ort.__version__} here, the run used {version}: "
            "their outputs may differ in the last bits",
            file=sys.stderr,
        )
        return 2
    try:
        c = oracle.run_checks()
    except Stop as e:
        c = oracle.check
        c.problems.append(str(e))
    for p in c.problems:
        print(f"MISMATCH {p}")
    print(
        f"oracle: {c.metrics} numbers and {c.decisions} decisions compared, "
        f"{len(c.problems)} mismatch(es); largest relative difference among agreeing numbers "
        f"{c.worst:.1e}"
    )
    return 1 if c.problems else 0


if __name__ == "__main__":
    sys.exit(main())
