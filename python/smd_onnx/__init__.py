"""smd-onnx: gradient-free fine-tuning of pretrained ONNX models (Sparse Mutation Decompositions).

The same engine as the ``smd-onnx`` command (also installed by this wheel, in-process):

>>> import smd_onnx
>>> run = smd_onnx.evolve("model.onnx", data="val.npz", out="runs/x", children=16)
>>> run.best_model, run.report["best"]

Every function takes the CLI command's options as keyword arguments, with the CLI's names
(``--split-seed`` is ``split_seed=``) and defaults: ``True`` gives a flag, ``None``/``False``
leaves it out, a list repeats it. Data is an ``.npz`` file, a folder of ``.npy`` files, or numpy
arrays (``inputs={"name": array}, labels=array``, read where they are: no copy, no file).
Errors raise :class:`SmdError` subclasses carrying the CLI's one-line message.
"""

import json
import os
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Union

from . import _ort

_ORT_LIBRARY = _ort.configure()

from . import _native  # noqa: E402  (after ORT_DYLIB_PATH is set)

__all__ = [
    "SmdError",
    "SmdValueError",
    "SmdFileNotFoundError",
    "SmdCancelled",
    "EvolveResult",
    "evolve",
    "score",
    "mutate",
    "ensemble",
    "inspect",
    "ORT_VERSION",
]

#: The ONNX Runtime version smd-onnx pins (what it fetches when no library is given).
ORT_VERSION: str = _native.ORT_VERSION

PathLike = Union[str, "os.PathLike[str]"]


class SmdError(Exception):
    """Base of every smd-onnx error; ``str(e)`` is the CLI's one-line message."""


class SmdValueError(SmdError, ValueError):
    """Bad input: a model, data set or argument smd-onnx refuses (the CLI exits 2)."""


class SmdFileNotFoundError(SmdError, FileNotFoundError):
    """A file or folder that does not exist."""


class SmdCancelled(SmdError):
    """The run was stopped (the journal keeps what was scored: ``resume=True`` continues)."""


def _raise(err: "_native.NativeError") -> "Exception":
    kind, message = err.args
    cls = {"not_found": SmdFileNotFoundError, "cancelled": SmdCancelled}.get(kind, SmdValueError)
    new = cls(message)
    new.__cause__ = err.__cause__
    return new


def _flags(options: Dict[str, Any]) -> List[str]:
    argv: List[str] = []
    for name, value in options.items():
        flag = "--" + name.replace("_", "-")
        if value is None or value is False:
            continue
        if value is True:
            argv.append(flag)
        elif isinstance(value, (list, tuple)):
            for v in value:
                argv += [flag, os.fspath(v) if isinstance(v, os.PathLike) else str(v)]
        else:
            argv += [flag, os.fspath(value) if isinstance(value, os.PathLike) else str(value)]
    return argv


#: numpy dtypes the engine reads as they are (kind and item size: ``.npy`` data's types).
_DTYPES = {"b1", "i1", "u1", "i2", "u2", "i4", "u4", "i8", "u8", "f2", "f4", "f8"}


def _engine_array(name: Any, arr: Any) -> Any:
    """``arr`` as the engine reads it in place: the array itself when it is C-contiguous,
    aligned and little-endian with a supported dtype, else one converted copy."""
    import numpy as np

    if not isinstance(name, str):
        raise SmdValueError(f"inputs: array names are strings, not {name!r}")
    a = np.asarray(arr)
    if f"{a.dtype.kind}{a.dtype.itemsize}" not in _DTYPES:
        raise SmdValueError(
            f"inputs: array `{name}` has dtype {a.dtype}, which smd-onnx cannot read "
            "(bool, integers or float16/32/64)"
        )
    want = a.dtype.newbyteorder("<") if a.dtype.byteorder == ">" else a.dtype
    if a.dtype != want or not (a.flags.c_contiguous and a.flags.aligned):
        a = np.ascontiguousarray(a, dtype=want)
    return a


class _Data:
    """``data=`` as a path, or numpy arrays handed to the engine where they are: read-only
    for the run (their ``writeable`` flag is cleared, then restored), never copied to disk."""

    def __init__(self, data: Optional[PathLike], inputs: Optional[Dict[str, Any]], labels: Any):
        self.path: Optional[str] = None
        self.arrays: Optional[List["tuple[str, Any]"]] = None
        self._locked: List[Any] = []
        if data is not None:
            if inputs is not None or labels is not None:
                raise SmdValueError("data: give a path or inputs= and labels=, not both")
            self.path = os.fspath(data)
            return
        if inputs is None:
            raise SmdValueError("data: give a path (data=) or numpy arrays (inputs= and labels=)")
        if labels is None:
            raise SmdValueError("labels: array `labels` is missing (labels= with inputs=)")
        if "labels" in inputs:
            raise SmdValueError("inputs: array `labels` is given by labels=, not in inputs=")
        self.arrays = [(n, _engine_array(n, a)) for n, a in {**inputs, "labels": labels}.items()]
        # The engine reads them while the GIL is released: no in-place writes meanwhile.
        for _, a in self.arrays:
            if a.flags.writeable and not any(a is b for b in self._locked):
                a.flags.writeable = False
                self._locked.append(a)

    def close(self) -> None:
        for a in self._locked:
            a.flags.writeable = True
        self._locked = []

    def __enter__(self) -> "_Data":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


@dataclass
class EvolveResult:
    """What :func:`evolve` found: the output folder's files and ``report.json`` as a dict."""

    out: Path
    report: Dict[str, Any]
    best_model: Optional[Path] = None
    ensemble_model: Optional[Path] = None
    ensembles: List[Dict[str, Any]] = field(default_factory=list)

    @property
    def best(self) -> Optional[Dict[str, Any]]:
        """The report's best candidate (``None``: nothing beat the original model)."""
        return self.report.get("best")

    @property
    def candidates(self) -> List[Dict[str, Any]]:
        """Every scored child of every generation: id, selection and holdout metrics."""
        return list(self.report.get("children", []) or [])

    def best_bytes(self) -> Optional[bytes]:
        """``best.onnx``'s bytes (``None`` when it was not written)."""
        return self.best_model.read_bytes() if self.best_model else None


def _progress(progress: Any) -> "tuple[Optional[Callable[[str], None]], Callable[[], None]]":
    """The native callback for ``progress`` and a function closing what it opened."""
    if progress is False:
        return None, lambda: None
    if callable(progress):
        return (lambda text: progress(json.loads(text))), lambda: None
    if progress is None and not sys.stderr.isatty():
        return None, lambda: None
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return None, lambda: None
    state: Dict[str, Any] = {"bar": None}

    def close() -> None:
        if state["bar"] is not None:
            state["bar"].close()
            state["bar"] = None

    def on(text: str) -> None:
        e = json.loads(text)
        if e["event"] == "phase":
            close()
            state["bar"] = tqdm(total=e["total"], desc=e["name"], unit="cand", leave=False)
        elif e["event"] == "candidate" and state["bar"] is not None:
            state["bar"].update(1)
        elif e["event"] == "phase_done":
            close()

    return on, close


def evolve(
    model: PathLike,
    data: Optional[PathLike] = None,
    *,
    inputs: Optional[Dict[str, Any]] = None,
    labels: Any = None,
    out: Optional[PathLike] = None,
    metric: Union[None, str, Callable[[Any, Any], float]] = None,
    greater_is_better: bool = True,
    progress: Any = None,
    copy_budget: Optional[int] = None,
    **options: Any,
) -> EvolveResult:
    """Evolve ``model`` on labelled data; see ``smd-onnx evolve --help`` for ``options``.

    ``metric``: a built-in name (``"macro_f1"``…) or ``callable(outputs, labels) -> float``,
    with ``outputs`` the candidate's probabilities ``(rows, classes)`` (values ``(rows,)`` for
    regression) and ``labels`` the class ids (targets); higher is better unless
    ``greater_is_better=False``. It chooses the best child, the merged candidate and the greedy
    ensembles, and every metric object of the report has its value as ``custom``.
    ``progress``: ``callable(event: dict)``, ``False`` for none, or ``None``: a tqdm bar when
    tqdm is installed and stderr is a terminal. Ctrl-C stops after the candidate being scored
    (``KeyboardInterrupt``; ``resume=True`` continues).

    ``inputs={"name": array}, labels=array``: the engine reads the arrays' own memory, no copy
    and no file, when they are C-contiguous, aligned, little-endian and bool, integer or
    float16/32/64 (anything else, a list included, is converted once with
    ``np.ascontiguousarray``). They are read-only during the run. The run's key hashes their
    names, dtypes, shapes and bytes: ``resume=True`` on the same arrays continues, on changed
    ones it is refused as another run (``force=True`` starts over). The report's ``data`` is ``<numpy arrays: name, ..., labels>``.
    ``copy_budget``: bytes the run may copy to keep the selection and holdout rows contiguous
    (default: half the available memory, at most 16 GiB); ``0`` reads every batch from the
    data where it is.
    """
    model = os.fspath(model)
    if out is None:
        out = Path(model).stem + ".smd"
    callback, close = _progress(progress)
    with _Data(data, inputs, labels) as d:
        argv = ["smd-onnx", "evolve", model, "--out", os.fspath(out)]
        if d.path is not None:
            argv += ["--data", d.path]
        name = ""
        fn = None
        if callable(metric):
            fn = metric
            name = getattr(metric, "__qualname__", None) or type(metric).__name__
        elif metric is not None:
            argv += ["--metric", str(metric)]
        argv += _flags(options)
        try:
            text = _native.evolve(
                argv, fn, name, greater_is_better, callback, d.arrays, copy_budget
            )
        except _native.NativeError as e:
            raise _raise(e) from e.__cause__
        finally:
            close()
    report = json.loads(text)
    outs = report.get("outputs", {}) or {}

    def path(p: Optional[str]) -> Optional[Path]:
        if not p:
            return None
        q = Path(p)
        return q if q.is_absolute() or q.exists() else Path(out) / q

    return EvolveResult(
        out=Path(out),
        report=report,
        best_model=path(outs.get("best")),
        ensemble_model=path(outs.get("ensemble")),
        ensembles=list(report.get("ensembles", []) or []),
    )


def _captured(argv: List[str], arrays: Any = None) -> "tuple[int, str]":
    """Runs the CLI in-process with its stdout captured (on ``arrays`` instead of
    ``--data``: ``score``); raises on an error."""
    sys.stdout.flush()
    with tempfile.TemporaryFile() as f:
        saved = os.dup(1)
        os.dup2(f.fileno(), 1)
        try:
            if arrays is None:
                code = _native.cli_outcome(argv)
            else:
                code = _native.score_arrays(argv, arrays)
        except _native.NativeError as e:
            raise _raise(e) from None
        finally:
            os.dup2(saved, 1)
            os.close(saved)
        f.seek(0)
        return code, f.read().decode("utf-8")


def score(
    model: PathLike,
    data: Optional[PathLike] = None,
    *,
    inputs: Optional[Dict[str, Any]] = None,
    labels: Any = None,
    **options: Any,
) -> Dict[str, Any]:
    """Score ``model`` on labelled data: ``smd-onnx score --json`` as a dict. Arrays are read
    where they are, as in :func:`evolve`."""
    with _Data(data, inputs, labels) as d:
        argv = ["smd-onnx", "score", os.fspath(model), "--json"]
        if d.path is not None:
            argv += ["--data", d.path]
        _, text = _captured(argv + _flags(options), d.arrays)
    return json.loads(text)


def inspect(model: PathLike, **options: Any) -> Dict[str, Any]:
    """A model's tensors and facts: ``smd-onnx inspect --json`` as a dict."""
    _, text = _captured(["smd-onnx", "inspect", os.fspath(model), "--json"] + _flags(options))
    return json.loads(text)


def mutate(model: PathLike, out: PathLike, **options: Any) -> List[Path]:
    """Write sparse-mutation children of ``model`` into ``out``; returns their paths."""
    _captured(["smd-onnx", "mutate", os.fspath(model), "--out", os.fspath(out)] + _flags(options))
    return sorted(p for p in Path(out).iterdir() if p.suffix == ".onnx")


def ensemble(models: Sequence[PathLike], out: PathLike, **options: Any) -> Path:
    """Combine ``models`` into one drop-in ONNX graph at ``out``; returns ``out``."""
    argv = ["smd-onnx", "ensemble", *map(os.fspath, models), "--out", os.fspath(out)]
    _captured(argv + _flags(options))
    return Path(out)
