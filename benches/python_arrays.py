"""Peak memory of the Python API's `evolve` on numpy arrays (issue 14: arrays without a copy).

Each run is a fresh Python process: it builds N random 8×8 images (float32, the digits CNN's
input) and labels, notes its resident memory, runs `smd_onnx.evolve` and reports its peak
resident memory (getrusage) and the run's wall time. Ways, interleaved, RUNS times each:

  arrays       inputs=/labels=: the engine reads the arrays' memory (this version)
  arrays, cb0  the same with copy_budget=0: no selection/holdout rows copied either
  npy folder   the arrays written as a folder of .npy files and passed as data= (what the
               binding did before: a full copy on disk, memory-mapped back)

"extra" is the peak minus the memory before the run, in units of the data's size: what the run
added on top of the caller's arrays. Medians. Needs a Python with the smd_onnx wheel installed:

    target/ci-python/bin/python benches/python_arrays.py          # N=400000, RUNS=3
    N=100000 RUNS=1 target/ci-python/bin/python benches/python_arrays.py
"""

import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "models" / "digits_cnn_undertrained.onnx"

CHILD = r"""
import json, os, resource, sys, tempfile, time
import numpy as np
import smd_onnx

way, n, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
rng = np.random.default_rng(0)
x = rng.random((n, 1, 8, 8), dtype=np.float32) * 16
y = rng.integers(0, 10, n)
data_mib = (x.nbytes + y.nbytes) / 2**20
kw = dict(out=out, children=4, seed=1, progress=False, force=True, export="none")

def rss_mib():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024

before = rss_mib()
t = time.perf_counter()
if way == "npy folder":
    with tempfile.TemporaryDirectory() as d:
        np.save(os.path.join(d, "input.npy"), x)
        np.save(os.path.join(d, "labels.npy"), y)
        smd_onnx.evolve(MODEL, d, **kw)
else:
    budget = 0 if way == "arrays, cb0" else None
    smd_onnx.evolve(MODEL, inputs={"input": x}, labels=y, copy_budget=budget, **kw)
wall = time.perf_counter() - t
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"data": data_mib, "before": before, "peak": peak, "wall": wall}))
"""

WAYS = ["arrays", "arrays, cb0", "npy folder"]


def main() -> None:
    n = int(os.environ.get("N", "400000"))
    runs = int(os.environ.get("RUNS", "3"))
    got = {w: [] for w in WAYS}
    with tempfile.TemporaryDirectory() as tmp:
        code = f"MODEL = {str(MODEL)!r}\n" + CHILD
        for _ in range(runs):
            for w in WAYS:
                p = subprocess.run([sys.executable, "-c", code, w, str(n), f"{tmp}/run"],
                                   capture_output=True, text=True)
                if p.returncode != 0:
                    sys.exit(f"{w}: failed\n{p.stderr}")
                got[w].append(json.loads(p.stdout.strip().splitlines()[-1]))
    data = got[WAYS[0]][0]["data"]
    print(f"N = {n} images 1×8×8 float32 + int64 labels: {data:.0f} MiB of data; "
          f"k = 4, 1 generation, {runs} runs, medians")
    print()
    print("| way | peak RSS MiB | extra (× data) | wall s |")
    print("|---|---:|---:|---:|")
    for w in WAYS:
        r = got[w]
        peak = statistics.median(g["peak"] for g in r)
        extra = statistics.median((g["peak"] - g["before"]) / g["data"] for g in r)
        wall = statistics.median(g["wall"] for g in r)
        print(f"| {w} | {peak:.0f} | {extra:.2f} | {wall:.1f} |")


if __name__ == "__main__":
    main()
