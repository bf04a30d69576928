"""The Python API and the console command, on the repository's fixtures."""

import numpy as np
import pytest

import smd_onnx
from conftest import smd_cli

SMALL = dict(children=8, seed=1)


def accuracy(outputs, labels):
    return float(np.mean(outputs.argmax(axis=1) == labels))


def macro_f1(outputs, labels):
    pred = outputs.argmax(axis=1)
    f1 = []
    for c in np.union1d(labels, pred):
        tp = np.sum((pred == c) & (labels == c))
        fp = np.sum((pred == c) & (labels != c))
        fn = np.sum((pred != c) & (labels == c))
        f1.append(0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn))
    return float(np.mean(f1))


def best_id(run):
    b = run.report["best"]
    return None if b is None else (b["generation"], b["index"])


def test_numpy_arrays_give_the_same_run_as_the_npz(tmp_path, model, data, arrays):
    a = smd_onnx.evolve(model, data, out=tmp_path / "a", progress=False, **SMALL)
    inputs = {k: v for k, v in arrays.items() if k != "labels"}
    b = smd_onnx.evolve(model, inputs=inputs, labels=arrays["labels"], out=tmp_path / "b",
                        progress=False, **SMALL)
    assert a.report["children"] == b.report["children"]
    assert a.best_bytes() == b.best_bytes() is not None
    s = smd_onnx.score(model, inputs=inputs, labels=arrays["labels"])
    t = smd_onnx.score(model, data)
    assert s["samples"] == len(arrays["labels"]) == t["samples"]
    assert s["metrics"] == t["metrics"] and s["per_class"] == t["per_class"]


def test_a_hand_written_accuracy_chooses_as_the_built_in_one(tmp_path, model, data):
    built_in = smd_onnx.evolve(model, data, out=tmp_path / "a", progress=False, **SMALL)
    custom = smd_onnx.evolve(model, data, out=tmp_path / "c", metric=accuracy, progress=False,
                             **SMALL)
    assert best_id(custom) == best_id(built_in)
    assert custom.best_bytes() == built_in.best_bytes()
    for c in custom.report["children"]:
        assert c["selection"]["custom"] == c["selection"]["accuracy"]
        assert c["holdout"] is None or c["holdout"]["custom"] == c["holdout"]["accuracy"]
    assert custom.report["settings"]["metric"] == "custom"


def test_macro_f1_in_python_chooses_as_the_built_in_macro_f1_and_not_as_accuracy(tmp_path, model, data):
    acc = smd_onnx.evolve(model, data, out=tmp_path / "a", progress=False, **SMALL)
    f1 = smd_onnx.evolve(model, data, out=tmp_path / "f", metric=macro_f1, progress=False, **SMALL)
    built_in = smd_onnx.evolve(model, data, out=tmp_path / "b", metric="macro_f1",
                               progress=False, **SMALL)
    assert best_id(f1) == best_id(built_in)
    assert best_id(f1) != best_id(acc)
    for c in f1.report["children"]:
        assert c["selection"]["custom"] == pytest.approx(c["selection"]["macro_f1"], abs=1e-12)


def test_the_same_best_onnx_bytes_as_the_cli(tmp_path, model, data):
    run = smd_onnx.evolve(model, data, out=tmp_path / "py", progress=False, **SMALL)
    p = smd_cli("evolve", model, "--data", data, "--out", tmp_path / "cli", "--children", 8,
                "--seed", 1)
    assert p.returncode == 0, p.stderr
    assert (tmp_path / "cli" / "best.onnx").read_bytes() == run.best_bytes()
    assert (tmp_path / "cli" / "ensemble.onnx").read_bytes() == run.ensemble_model.read_bytes()


def test_progress_events_and_a_raising_callback(tmp_path, model, data):
    events = []
    smd_onnx.evolve(model, data, out=tmp_path / "a", progress=events.append, **SMALL)
    kinds = [e["event"] for e in events]
    assert kinds.count("candidate") >= 9 and "generation" in kinds and "phase" in kinds

    class Stop(Exception):
        pass

    def stop(e):
        if e["event"] == "candidate":
            raise Stop("enough")

    with pytest.raises(Stop):
        smd_onnx.evolve(model, data, out=tmp_path / "b", progress=stop, **SMALL)
    assert not (tmp_path / "b" / "report.json").exists()


def test_a_raising_metric_names_the_candidate_and_writes_no_outputs(tmp_path, model, data):
    calls = []

    def bad(outputs, labels):
        calls.append(1)
        if len(calls) > 2:
            raise ZeroDivisionError("boom")
        return 0.5

    with pytest.raises(smd_onnx.SmdValueError) as e:
        smd_onnx.evolve(model, data, out=tmp_path / "x", metric=bad, progress=False, **SMALL)
    assert "candidate g0-c" in str(e.value) and "ZeroDivisionError: boom" in str(e.value)
    assert isinstance(e.value.__cause__, ZeroDivisionError)
    for f in ("best.onnx", "ensemble.onnx", "report.json"):
        assert not (tmp_path / "x" / f).exists()


def test_errors_carry_the_cli_message(tmp_path, model, data):
    missing = tmp_path / "missing.onnx"
    with pytest.raises(smd_onnx.SmdFileNotFoundError) as e:
        smd_onnx.evolve(missing, data, out=tmp_path / "o", progress=False)
    assert isinstance(e.value, FileNotFoundError) and isinstance(e.value, smd_onnx.SmdError)
    p = smd_cli("evolve", missing, "--data", data, "--out", tmp_path / "o2")
    assert p.returncode == 2
    assert p.stderr.strip() == f"error: {e.value}"
    with pytest.raises(smd_onnx.SmdValueError) as e:
        smd_onnx.evolve(model, data, out=tmp_path / "o3", children=0, progress=False)
    assert isinstance(e.value, ValueError)
    with pytest.raises(smd_onnx.SmdValueError, match="metric"):
        smd_onnx.evolve(model, data, out=tmp_path / "o4", metric="f1", progress=False)
    with pytest.raises(smd_onnx.SmdValueError):
        smd_onnx.score(model, inputs={"nope": np.zeros((3, 2), np.float32)},
                       labels=np.zeros(3, np.int64))


def test_inspect_mutate_ensemble(tmp_path, model):
    info = smd_onnx.inspect(model)
    assert info["tensors"]
    children = smd_onnx.mutate(model, tmp_path / "kids", children=2)
    assert len(children) == 2
    out = smd_onnx.ensemble(children, tmp_path / "ens.onnx")
    assert out.exists() and out.stat().st_size > 0


def test_the_console_command(tmp_path, model):
    p = smd_cli("--version")
    assert p.returncode == 0 and p.stdout.startswith("smd-onnx ")
    p = smd_cli("inspect", tmp_path / "none.onnx")
    assert p.returncode == 2 and p.stderr.count("\n") == 1 and p.stderr.startswith("error: ")
    p = smd_cli("inspect", model, "--json")
    assert p.returncode == 0 and '"tensors"' in p.stdout


def test_onnxruntime_of_the_environment_is_used():
    import os

    found = smd_onnx._ort.installed()
    if found is None:
        pytest.skip("onnxruntime is not installed in this environment")
    assert os.environ["ORT_DYLIB_PATH"] == found[0]


def test_ctrl_c_stops_the_run_and_keeps_the_journal(tmp_path, model, data):
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "run"
    code = (
        "import smd_onnx\n"
        f"smd_onnx.evolve({str(model)!r}, {str(data)!r}, out={str(out)!r}, generations=100000,"
        " children=16, progress=False)\n"
    )
    p = subprocess.Popen([sys.executable, "-c", code], stderr=subprocess.PIPE, text=True)
    journal = out / ".smd-journal"
    # Wait (without a time limit of its own: pytest's, or CI's) until candidates are scored.
    while p.poll() is None and not (journal.exists() and len(list(journal.iterdir())) > 3):
        time.sleep(0.05)
    assert p.poll() is None, p.stderr.read()
    p.send_signal(signal.SIGINT)
    _, err = p.communicate()
    assert p.returncode != 0 and err.rstrip().endswith("KeyboardInterrupt"), err
    assert journal.is_dir() and not (out / "report.json").exists()


def test_an_onnxruntime_too_old_for_ort_is_refused_with_a_warning(monkeypatch):
    from smd_onnx import _ort

    monkeypatch.delenv("ORT_DYLIB_PATH", raising=False)
    monkeypatch.setattr(_ort, "installed", lambda: ("/x/libonnxruntime.so.1.20.0", "1.20.0"))
    with pytest.warns(RuntimeWarning, match="onnxruntime 1.20.0 .* needs ONNX Runtime 1.22"):
        assert _ort.configure() is None
    assert "ORT_DYLIB_PATH" not in __import__("os").environ
    monkeypatch.setattr(_ort, "installed", lambda: ("/x/libonnxruntime.so.1.31.1", "1.31.1"))
    assert _ort.configure() == "/x/libonnxruntime.so.1.31.1"
