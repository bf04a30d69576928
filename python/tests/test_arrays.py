"""numpy arrays as data: read where they are (no copy, no file), keyed for resume, checked."""

import tempfile

import numpy as np
import pytest

import smd_onnx
from conftest import smd_cli

SMALL = dict(children=8, seed=1)


def split(arrays):
    return {k: v for k, v in arrays.items() if k != "labels"}, arrays["labels"]


def decisions(report):
    """What a run decided (timings and paths left out)."""
    return {k: report[k] for k in ("children", "best", "ensembles", "parent", "generations")}


def no_temp_folders(monkeypatch):
    def refuse(*a, **k):
        raise AssertionError("a temporary folder was made for the data")

    monkeypatch.setattr(tempfile, "mkdtemp", refuse)
    monkeypatch.setattr(tempfile, "TemporaryDirectory", refuse)


def test_arrays_give_the_cli_run_on_the_npz_byte_for_byte(tmp_path, model, data, arrays):
    inputs, labels = split(arrays)
    run = smd_onnx.evolve(model, inputs=inputs, labels=labels, out=tmp_path / "py",
                          progress=False, **SMALL)
    p = smd_cli("evolve", model, "--data", data, "--out", tmp_path / "cli", "--children", 8,
                "--seed", 1, "--json")
    assert p.returncode == 0, p.stderr
    assert (tmp_path / "cli" / "best.onnx").read_bytes() == run.best_bytes() is not None
    assert (tmp_path / "cli" / "ensemble.onnx").read_bytes() == run.ensemble_model.read_bytes()
    import json

    cli = json.loads((tmp_path / "cli" / "report.json").read_text())
    assert decisions(cli) == decisions(run.report)
    assert run.report["data"] == "<numpy arrays: input, labels>"


def test_the_engine_reads_the_arrays_own_memory(tmp_path, model, arrays, monkeypatch):
    """No temporary folder, and a write into the arrays' memory during the run changes what
    the children are scored on: the engine reads that memory, not a copy of it."""
    no_temp_folders(monkeypatch)
    # Every batch from the data itself: no shared prefix computed ahead, no rows copied.
    monkeypatch.setenv("SMD_PREFIX", "0")
    inputs, labels = split(arrays)
    memory = inputs["input"].copy()
    x = memory[:]  # a view: the binding makes it read-only, `memory` stays writeable
    opts = dict(copy_budget=0, export="none", **SMALL)
    seen = []

    def progress(e):
        if e["event"] == "phase" and not seen:
            seen.append(x.flags.writeable)
            memory[...] = 0  # after the parent, before the children

    plain = smd_onnx.evolve(model, inputs={"input": x.copy()}, labels=labels,
                            out=tmp_path / "plain", progress=False, **opts)
    run = smd_onnx.evolve(model, inputs={"input": x}, labels=labels, out=tmp_path / "run",
                          progress=progress, **opts)
    assert run.report["parent"] == plain.report["parent"]
    acc = [c["selection"]["accuracy"] for c in run.report["children"]]
    plain_acc = [c["selection"]["accuracy"] for c in plain.report["children"]]
    # All-zero images: every child predicts one class for every row.
    assert max(acc) < min(plain_acc), (acc, plain_acc)
    assert seen == [False] and x.flags.writeable, "read-only during the run, restored after"
    # score() takes the arrays without a folder too.
    s = smd_onnx.score(model, inputs={"input": x}, labels=labels)
    assert s["data"] == "<numpy arrays: input, labels>" and s["samples"] == len(labels)


def test_non_contiguous_big_endian_and_other_dtypes_are_converted(tmp_path, model, arrays):
    inputs, labels = split(arrays)
    x = inputs["input"]
    before = x.copy()
    base = smd_onnx.evolve(model, inputs={"input": x}, labels=labels, out=tmp_path / "base",
                           export="none", progress=False, **SMALL)
    variants = {
        "fortran": (np.asfortranarray(x), labels),
        "strided": (np.repeat(x, 2, axis=0)[::2], labels[::1]),
        "big-endian": (x.astype(">f4"), labels.astype(">i8")),
        "int32 labels": (x, labels.astype(np.int32)),
        "list labels": (x, labels.tolist()),
    }
    for name, (xi, li) in variants.items():
        run = smd_onnx.evolve(model, inputs={"input": xi}, labels=li, out=tmp_path / name,
                              export="none", progress=False, **SMALL)
        assert run.report["children"] == base.report["children"], name
        s = smd_onnx.score(model, inputs={"input": xi}, labels=li)
        assert s["samples"] == len(labels), name
    np.testing.assert_array_equal(x, before)
    assert x.flags.writeable


def test_resume_continues_on_the_same_arrays_and_not_on_changed_ones(tmp_path, model, arrays):
    inputs, labels = split(arrays)
    out = tmp_path / "run"
    first = smd_onnx.evolve(model, inputs=inputs, labels=labels, out=out, progress=False,
                            **SMALL)
    events = []
    again = smd_onnx.evolve(model, inputs={"input": inputs["input"].copy()},
                            labels=labels.copy(), out=out, resume=True,
                            progress=events.append, **SMALL)
    journaled = [e["journaled"] for e in events if e["event"] == "candidate"]
    assert journaled and all(journaled), "every candidate comes from the journal"
    assert again.best_bytes() == first.best_bytes()
    changed = inputs["input"].copy()
    changed[0, 0, 0, 0] += 1
    with pytest.raises(smd_onnx.SmdValueError, match="different run"):
        smd_onnx.evolve(model, inputs={"input": changed}, labels=labels, out=out,
                        resume=True, progress=False, **SMALL)
    events.clear()
    smd_onnx.evolve(model, inputs={"input": changed}, labels=labels, out=out, force=True,
                    progress=events.append, **SMALL)
    assert not any(e["journaled"] for e in events if e["event"] == "candidate")


def test_bad_arrays_raise_value_errors_naming_the_array(tmp_path, model, arrays):
    inputs, labels = split(arrays)
    x = inputs["input"]
    cases = [
        (dict(inputs=inputs), "array `labels` is missing"),
        (dict(inputs={"input": x.reshape(len(x), -1)}, labels=labels),
         "array `input` has rank 2"),
        (dict(inputs={"input": x}, labels=labels[:-1]),
         "array `input` has 600 samples but array `labels` has 599"),
        (dict(inputs={"pixels": x}, labels=labels), "no array `input`"),
        (dict(inputs={"input": x.astype(np.complex64)}, labels=labels),
         "array `input` has dtype complex64"),
        (dict(inputs={"input": x, "labels": labels}, labels=labels), "array `labels` is given"),
        (dict(inputs={"input": x}, labels=labels.reshape(30, 20)), "array `labels` has shape"),
    ]
    for kwargs, message in cases:
        with pytest.raises(smd_onnx.SmdValueError, match=message.replace("`", ".")):
            smd_onnx.evolve(model, out=tmp_path / "o", progress=False, **kwargs)
        with pytest.raises(smd_onnx.SmdValueError, match=message.replace("`", ".")):
            smd_onnx.score(model, **kwargs)
    assert not (tmp_path / "o" / "report.json").exists()
    assert x.flags.writeable and labels.flags.writeable
