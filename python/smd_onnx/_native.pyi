from typing import Any, Callable, List, Optional, Tuple

import numpy as np

ORT_VERSION: str

class NativeError(Exception): ...

def run_cli(argv: List[str]) -> int: ...
def cli_outcome(argv: List[str]) -> int: ...
def evolve(
    argv: List[str],
    metric: Optional[Callable[[Any, Any], float]] = None,
    metric_name: str = "",
    greater_is_better: bool = True,
    progress: Optional[Callable[[str], None]] = None,
    arrays: Optional[List[Tuple[str, np.ndarray]]] = None,
    copy_budget: Optional[int] = None,
) -> str: ...
def score_arrays(argv: List[str], arrays: List[Tuple[str, np.ndarray]]) -> int: ...
