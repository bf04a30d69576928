#!/usr/bin/env bash
# The GPU checks behind the README's CUDA figures, for a lent GPU machine without internet
# (see ../shared/gpu/README.md). Upload, in separate calls, ONNX Runtime's CUDA build (packed by
# ../shared/gpu/pack-ort-gpu.sh and re-split into 4 parts of 48 MB: .gpua/p0 … .gpud/p3, copied
# to /tmp/parts on the machine) and a folder .gpubin with this script, the stripped, xz-packed
# release `smd-onnx` and `examples/strategies` binaries. Then run `bash .gpubin/check.sh`; results
# go to $OUT. About 4 minutes on an H200.
set -u
T0=$(date +%s)
el() { echo "[$(( $(date +%s) - T0 ))s] $*"; }
mkdir -p /tmp/ort && cat /tmp/parts/p0 /tmp/parts/p1 /tmp/parts/p2 .gpud/p3 | xz -d | tar xf - -C /tmp/ort
mkdir -p /tmp/bin && xz -dc .gpubin/smd-onnx.xz > /tmp/bin/smd-onnx && xz -dc .gpubin/strategies.xz > /tmp/bin/strategies && chmod +x /tmp/bin/*
B=/tmp/bin
export ORT_DYLIB_PATH=/tmp/ort/libonnxruntime.so.1.31.1
export SMD_ONNX_CACHE=/tmp/smdcache
unset LD_LIBRARY_PATH   # smd-onnx must find CUDA and cuDNN by itself
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader > $OUT/gpu.txt 2>&1
el "runtime"
timeout 120 $B/smd-onnx runtime --device cuda > $OUT/runtime_cuda.txt 2>&1; echo "rc=$?" >> $OUT/runtime_cuda.txt
el "models"
timeout 180 python3 - <<'PY' > $OUT/make.txt 2>&1
import numpy as np, torch, torchvision
m = torchvision.models.resnet50().eval()
torch.onnx.export(m, torch.randn(1,3,224,224), '/tmp/r50.onnx', dynamo=False, opset_version=17,
                  input_names=['input'], output_names=['logits'], dynamic_axes={'input': {0: 'N'}, 'logits': {0: 'N'}})
rng = np.random.default_rng(0)
x = rng.standard_normal((5000, 3, 224, 224), dtype=np.float32)
y = rng.integers(0, 1000, 5000).astype(np.int64)
np.savez('/tmp/r50_5000.npz', input=x, labels=y)
np.savez('/tmp/r50_1000.npz', input=x[:1000], labels=y[:1000])
print("ok")
PY
el "score"
timeout 60 $B/smd-onnx score models/digits_cnn.onnx --data fixtures/digits_val.npz --device cuda --json > $OUT/score_digits_cuda.json 2>&1
timeout 60 $B/smd-onnx score models/digits_cnn.onnx --data fixtures/digits_val.npz --json > $OUT/score_digits_cpu.json 2>&1
timeout 120 $B/smd-onnx score /tmp/r50.onnx --data /tmp/r50_5000.npz --device cuda --json > $OUT/score_r50_cuda.json 2>&1
el "floor"
/usr/bin/time -f "floor wall %e s maxrss %M KB" timeout 150 $B/strategies /tmp/r50.onnx /tmp/r50_5000.npz 16 cuda 4 0.1 floor > $OUT/floor.txt 2>&1
el "evolve, export both"
/usr/bin/time -f "wall %e s maxrss %M KB" timeout 150 $B/smd-onnx evolve /tmp/r50.onnx --data /tmp/r50_5000.npz --children 16 --device cuda --out /tmp/ev2 --json > $OUT/evolve_both.json 2> $OUT/evolve_both.time
el "evolve, export none"
/usr/bin/time -f "wall %e s maxrss %M KB" timeout 150 $B/smd-onnx evolve /tmp/r50.onnx --data /tmp/r50_5000.npz --children 16 --device cuda --out /tmp/ev3 --export none --json > $OUT/evolve_none.json 2> $OUT/evolve_none.time
el "strategies side by side, 1000 images"
timeout 240 $B/strategies /tmp/r50.onnx /tmp/r50_1000.npz 16 cuda 4 0.1 > $OUT/strategies_1000.txt 2>&1
el "done"
cat $OUT/floor.txt $OUT/strategies_1000.txt
for f in both none; do
  tail -1 $OUT/evolve_$f.time
  python3 -c "
import json; r=json.load(open('$OUT/evolve_$f.json')); t=r['timings']
print('$f', {k:(round(v,2) if isinstance(v,float) else round(sum(v)/max(len(v),1),2)) for k,v in t.items()})"
done
