import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Literal, Optional, Sequence, Union

import numpy as np
import numpy.typing as npt

PathLike = Union[str, os.PathLike[str]]
#: ``metric(outputs, labels) -> float``: outputs ``(rows, classes)`` probabilities (``(rows,)``
#: values for regression), labels the class ids (targets).
MetricFn = Callable[[npt.NDArray[np.float32], npt.NDArray[Any]], float]
#: ``progress(event)``: ``{"event": "phase", "name", "total"}``, ``{"event": "candidate", "id",
#: "selection", "holdout", "failed", "journaled"}``, ``{"event": "phase_done"}``,
#: ``{"event": "generation", "report"}``.
ProgressFn = Callable[[Dict[str, Any]], None]

ORT_VERSION: str

class SmdError(Exception): ...
class SmdValueError(SmdError, ValueError): ...
class SmdFileNotFoundError(SmdError, FileNotFoundError): ...
class SmdCancelled(SmdError): ...

@dataclass
class EvolveResult:
    out: Path
    report: Dict[str, Any]
    best_model: Optional[Path] = ...
    ensemble_model: Optional[Path] = ...
    ensembles: List[Dict[str, Any]] = ...
    @property
    def best(self) -> Optional[Dict[str, Any]]: ...
    @property
    def candidates(self) -> List[Dict[str, Any]]: ...
    def best_bytes(self) -> Optional[bytes]: ...

def evolve(
    model: PathLike,
    data: Optional[PathLike] = None,
    *,
    inputs: Optional[Dict[str, npt.ArrayLike]] = None,
    labels: Optional[npt.ArrayLike] = None,
    out: Optional[PathLike] = None,
    metric: Union[None, str, MetricFn] = None,
    greater_is_better: bool = True,
    progress: Union[None, bool, ProgressFn] = None,
    copy_budget: Optional[int] = None,
    children: Optional[int] = None,
    generations: Union[None, int, Literal["auto"]] = None,
    sigma: Union[None, float, Literal["auto"]] = None,
    seed: Optional[int] = None,
    mode: Optional[str] = None,
    density: Optional[float] = None,
    budget: Optional[int] = None,
    patience: Optional[int] = None,
    line_search: bool = False,
    accept_p: Optional[float] = None,
    race: bool = False,
    holdout: Optional[float] = None,
    split_seed: Optional[int] = None,
    batch: Optional[int] = None,
    output: Optional[str] = None,
    device: Optional[str] = None,
    export: Optional[Literal["best", "ensemble", "both", "none"]] = None,
    ensemble: Optional[str] = None,
    combine: Optional[str] = None,
    force: bool = False,
    resume: bool = False,
    **options: Any,
) -> EvolveResult: ...
def score(
    model: PathLike,
    data: Optional[PathLike] = None,
    *,
    inputs: Optional[Dict[str, npt.ArrayLike]] = None,
    labels: Optional[npt.ArrayLike] = None,
    device: Optional[str] = None,
    batch: Optional[int] = None,
    output: Optional[str] = None,
    **options: Any,
) -> Dict[str, Any]: ...
def inspect(model: PathLike, **options: Any) -> Dict[str, Any]: ...
def mutate(model: PathLike, out: PathLike, *, children: Optional[int] = None,
           seed: Optional[int] = None, sigma: Optional[float] = None,
           **options: Any) -> List[Path]: ...
def ensemble(models: Sequence[PathLike], out: PathLike, **options: Any) -> Path: ...
