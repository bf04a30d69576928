import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
MODEL = ROOT / "models" / "digits_cnn_undertrained.onnx"
DATA = ROOT / "fixtures" / "digits_val.npz"


@pytest.fixture
def model():
    return MODEL


@pytest.fixture
def data():
    return DATA


@pytest.fixture
def arrays():
    with np.load(DATA) as z:
        return {k: z[k] for k in z.files}


def smd_cli(*args, cwd=None):
    """The wheel's console command, as a subprocess."""
    exe = shutil.which("smd-onnx", path=os.path.dirname(sys.executable))
    assert exe, "the wheel's smd-onnx command is not installed next to this Python"
    return subprocess.run([exe, *map(str, args)], capture_output=True, text=True, cwd=cwd)
