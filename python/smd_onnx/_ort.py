"""Use the ONNX Runtime of an installed ``onnxruntime`` / ``onnxruntime-gpu`` package."""

import glob
import importlib.util
import os
import warnings
from importlib import metadata
from typing import Optional, Tuple

#: The oldest ONNX Runtime the ``ort`` crate inside smd-onnx accepts (its C API level 22).
MIN_VERSION = (1, 22)


def _version(text: str) -> Tuple[int, ...]:
    parts = []
    for p in text.split("."):
        digits = "".join(c for c in p if c.isdigit())
        if not digits:
            break
        parts.append(int(digits))
    return tuple(parts)


def installed() -> Optional[Tuple[str, str]]:
    """The library of the importable onnxruntime package and its version, if any."""
    spec = importlib.util.find_spec("onnxruntime")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = os.path.join(list(spec.submodule_search_locations)[0], "capi")
    libs = sorted(glob.glob(os.path.join(folder, "libonnxruntime.so*")) +
                  glob.glob(os.path.join(folder, "libonnxruntime*.dylib")) +
                  glob.glob(os.path.join(folder, "onnxruntime.dll")))
    if not libs:
        return None
    version = None
    for dist in ("onnxruntime", "onnxruntime-gpu"):
        try:
            version = metadata.version(dist)
            break
        except metadata.PackageNotFoundError:
            continue
    return libs[0], version or "unknown"


def configure() -> Optional[str]:
    """Point smd-onnx at the onnxruntime package's library (unless ``ORT_DYLIB_PATH`` is set).

    One ONNX Runtime per process: the package's own library, not a second download. A version
    ``ort`` does not support is left alone with a warning (smd-onnx then provisions its
    pinned one, as without the package). Returns the library used, if any.
    """
    if os.environ.get("ORT_DYLIB_PATH"):
        return os.environ["ORT_DYLIB_PATH"]
    found = installed()
    if found is None:
        return None
    lib, version = found
    if _version(version) < MIN_VERSION:
        warnings.warn(
            f"onnxruntime {version} is installed but smd-onnx needs ONNX Runtime "
            f"{MIN_VERSION[0]}.{MIN_VERSION[1]} or newer: using its own pinned ONNX Runtime "
            f"instead (two copies in this process if you import onnxruntime too); "
            f"`pip install -U onnxruntime` to share one",
            RuntimeWarning,
            stacklevel=3,
        )
        return None
    os.environ["ORT_DYLIB_PATH"] = lib
    return lib
