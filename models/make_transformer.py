"""Generate models/digits_transformer.onnx and fixtures/digits_tokens_val.npz with PyTorch.

A small transformer encoder classifier on scikit-learn's digits, exported with
`torch.onnx.export` as torch does by default (torch >= 2.9: the dynamo-based exporter, which
uses onnxscript). Run through models/make_fixtures.sh, which makes the separate `.venv-torch`
from models/requirements-torch.txt; standalone:

    .venv-torch/bin/python models/make_transformer.py

Data: each of the 64 pixel intensities (0..16) is a token, id = intensity + 1 (1..17); id 0 is
PAD. Every row drops its trailing zero pixels (after the last non-zero pixel; lengths 60..64) and
one validation row in eight is also cut to its first 48 pixels (the top six image rows); the rest
of the 64 positions hold PAD with attention_mask 0. The 600 validation rows are
fixturelib.digits_split()'s, shared with the other digits fixtures.

Model: token embedding + learned positional embedding (positions = arange(seq)), two
nn.TransformerEncoderLayer (post-norm, d_model 32, 4 heads, feed-forward 64, ReLU) with
src_key_padding_mask = (attention_mask == 0), mean over the unmasked positions, Linear 32 -> 10.
Inputs int64 input_ids [batch, seq] and attention_mask [batch, seq] (batch and seq dynamic,
seq <= 64); output float32 logits [batch, 10].

Export: the default exporter with its default options (opset, graph optimisation, names,
metadata), except external_data=False so the weights are inline in one file. The stack traces
it stores in node metadata name files by absolute path; normalise() makes them relative.

Deterministic: one thread, fixed seeds, torch.use_deterministic_algorithms(True); reruns on the
pinned versions (models/requirements-torch.txt) give byte-identical files.
"""

from __future__ import annotations

import os
import platform
import sys

for _v in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_v, "1")
os.environ.setdefault("PYTHONHASHSEED", "0")
# Like make_models.py's OPENBLAS_CORETYPE=Haswell: torch picks its CPU kernels by CPU (ATen's
# AVX2 / AVX-512 builds, MKL's code paths, oneDNN's ISA), and they sum in different orders, so the
# trained weights would differ in the last bits between machines. Pin all three to AVX2 (x86-64
# only; the committed files were made this way). Set before torch loads.
if platform.machine().lower() in ("x86_64", "amd64"):
    os.environ.setdefault("ATEN_CPU_CAPABILITY", "avx2")
    os.environ.setdefault("MKL_CBWR", "AVX2")
    os.environ.setdefault("ONEDNN_MAX_CPU_ISA", "AVX2")

import numpy as np  # noqa: E402
import onnx  # noqa: E402
import onnxruntime as ort  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fixturelib as fl  # noqa: E402

STEM = "digits_transformer"
DATA = "digits_tokens_val.npz"
SEQ = 64
PAD = 0
VOCAB = 18  # PAD + intensities 0..16
D_MODEL, HEADS, FF, LAYERS, CLASSES = 32, 4, 64, 2, 10
CUT_LEN = 48  # the cut validation rows keep this many tokens
EPOCHS, BATCH, LR = 16, 32, 5e-3  # AdamW, cosine decay to 0


def log(msg):
    print(msg, flush=True)


# --------------------------------------------------------------------------- data


def tokens(x):
    """[n, 64] pixels/16 -> input_ids, attention_mask (int64 [n, 64]), trailing zeros dropped."""
    pix = np.rint(x * 16.0).astype(np.int64)
    assert np.array_equal(pix.astype(np.float32) / 16.0, x) and pix.min() >= 0 and pix.max() <= 16
    nz = pix != 0
    length = SEQ - np.argmax(nz[:, ::-1], axis=1)  # one past the last non-zero pixel
    mask = (np.arange(SEQ)[None, :] < length[:, None]).astype(np.int64)
    ids = np.where(mask == 1, pix + 1, PAD).astype(np.int64)
    return ids, mask


def cut(ids, mask, rows, length):
    """Keep only the first `length` tokens of the given rows (rest PAD, mask 0)."""
    ids, mask = ids.copy(), mask.copy()
    ids[rows, length:] = PAD
    mask[rows, length:] = 0
    return ids, mask


# --------------------------------------------------------------------------- model


class DigitsTransformer(nn.Module):
    def __init__(self):
        super().__init__()
        self.tok = nn.Embedding(VOCAB, D_MODEL)
        self.pos = nn.Embedding(SEQ, D_MODEL)
        layer = nn.TransformerEncoderLayer(
            D_MODEL, HEADS, FF, dropout=0.1, activation="relu", batch_first=True, norm_first=False
        )
        self.encoder = nn.TransformerEncoder(layer, LAYERS, enable_nested_tensor=False)
        self.head = nn.Linear(D_MODEL, CLASSES)

    def forward(self, input_ids, attention_mask):
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)
        h = self.tok(input_ids) + self.pos(positions)
        h = self.encoder(h, src_key_padding_mask=attention_mask == 0)
        m = attention_mask.unsqueeze(-1).to(h.dtype)
        pooled = (h * m).sum(1) / m.sum(1).clamp(min=1.0)
        return self.head(pooled)


def train(model, ids, mask, y):
    g = torch.Generator().manual_seed(2)
    opt = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=0.01)
    steps = EPOCHS * -(-len(y) // BATCH)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda k: 0.5 * (1.0 + np.cos(np.pi * k / steps)))
    ids_t, mask_t, y_t = torch.from_numpy(ids), torch.from_numpy(mask), torch.from_numpy(y)
    n = len(y)
    for epoch in range(EPOCHS):
        model.train()
        perm = torch.randperm(n, generator=g)
        # the same kind of cuts the validation set has: 1/8 of the rows, random length 40..63
        cut_rows = torch.rand(n, generator=g) < 0.125
        cut_len = torch.randint(40, SEQ, (n,), generator=g)
        keep = torch.arange(SEQ)[None, :] < torch.where(cut_rows, cut_len, SEQ)[:, None]
        m_ep = mask_t * keep
        i_ep = torch.where(m_ep == 1, ids_t, PAD)
        total = 0.0
        for s in range(0, n, BATCH):
            idx = perm[s : s + BATCH]
            loss = nn.functional.cross_entropy(model(i_ep[idx], m_ep[idx]), y_t[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item() * len(idx)
        log(f"  epoch {epoch + 1}: train loss {total / n:.4f}")


# --------------------------------------------------------------------------- export


def export(model, ids, mask, path):
    model.eval()
    batch = torch.export.Dim("batch")
    seq = torch.export.Dim("seq", max=SEQ)
    example = (torch.from_numpy(ids[:4]), torch.from_numpy(mask[:4]))
    with torch.no_grad():
        torch.onnx.export(
            model,
            example,
            path,
            input_names=["input_ids", "attention_mask"],
            output_names=["logits"],
            dynamic_shapes={"input_ids": {0: batch, 1: seq}, "attention_mask": {0: batch, 1: seq}},
            # The default (True) writes <model>.onnx.data with the larger tensors (>= 1 KiB)
            # and keeps the small ones inline; this fixture is one self-contained file.
            external_data=False,
        )


def normalise(path):
    """Make the file independent of where the repository and the venv live.

    The exporter's graph, weights, names, value_info and metadata_props are kept as they are,
    except that the stack traces it records (node metadata "pkg.torch.onnx.stack_trace") name
    source files by absolute path: those become relative to the repository root or to
    site-packages. Nothing else in the export varies between runs."""
    prefixes = sorted(
        {os.path.join(fl.ROOT, ""), os.path.join(os.path.dirname(os.path.dirname(torch.__file__)), "")},
        key=len,
        reverse=True,
    )

    def fix(props):
        for p in props:
            for pre in prefixes:
                p.value = p.value.replace(pre, "")

    m = onnx.load(path)
    fix(m.metadata_props)
    fix(m.graph.metadata_props)
    for node in m.graph.node:
        assert not any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for a in node.attribute)
        fix(node.metadata_props)
    for vi in list(m.graph.input) + list(m.graph.output) + list(m.graph.value_info):
        fix(vi.metadata_props)
    leftover = [pre for pre in prefixes if pre in str(m)]
    assert not leftover, f"absolute paths left in the export: {leftover}"
    assert not m.functions
    onnx.save_model(m, path)
    assert not os.path.exists(path + ".data")


def ort_logits(sess, ids, mask, batch=256):
    out = []
    for s in range(0, len(ids), batch):
        out.append(sess.run(["logits"], {"input_ids": ids[s : s + batch], "attention_mask": mask[s : s + batch]})[0])
    return np.concatenate(out, 0)


def verify(path, model, ids, mask, y):
    fl.check_model_file(path)
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    with torch.no_grad():
        ref = model(torch.from_numpy(ids), torch.from_numpy(mask)).numpy()
    got = ort_logits(sess, ids, mask)
    err = float(np.abs(got - ref).max())
    assert err < 1e-4, f"onnxruntime vs torch: max abs diff {err}"
    for b in (1, 7, 256):
        for s in (SEQ, 40):
            o = sess.run(["logits"], {"input_ids": ids[:b, :s], "attention_mask": mask[:b, :s]})[0]
            assert o.shape == (b, CLASSES) and np.isfinite(o).all(), (b, s, o.shape)
            with torch.no_grad():
                r = model(torch.from_numpy(ids[:b, :s]), torch.from_numpy(mask[:b, :s])).numpy()
            assert np.abs(o - r).max() < 1e-4, (b, s)
    # the mask is honoured: what the padded positions hold does not matter ...
    junk = np.where(mask == 1, ids, 5)
    assert np.abs(ort_logits(sess, junk, mask) - got).max() < 1e-4
    # ... and it matters: attending to the PAD positions changes the logits
    assert np.abs(ort_logits(sess, ids, np.ones_like(mask)) - got).max() > 1e-3
    return float((got.argmax(1) == y).mean()), err


def main():
    torch.manual_seed(0)
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)

    x_tr, y_tr, x_val, y_val = fl.digits_split()
    ids_tr, mask_tr = tokens(x_tr)
    ids_val, mask_val = tokens(x_val)
    ids_val, mask_val = cut(ids_val, mask_val, np.arange(7, len(y_val), 8), CUT_LEN)
    assert mask_val[:, :40].all(axis=1).all()  # every row keeps >= 40 real tokens (the seq-40 check)
    fl.save_npz(DATA, {"input_ids": ids_val, "attention_mask": mask_val, "labels": y_val}, compressed=True)
    log(f"{DATA}: {len(y_val)} rows, lengths {mask_val.sum(1).min()}..{mask_val.sum(1).max()}, "
        f"{int((mask_val == 0).any(1).sum())} rows padded")

    model = DigitsTransformer()
    train(model, ids_tr, mask_tr, y_tr)
    model.eval()

    path = os.path.join(fl.MODELS, STEM + ".onnx")
    export(model, ids_val, mask_val, path)
    normalise(path)
    acc, err = verify(path, model, ids_val, mask_val, y_val)
    log(
        f"{STEM}: val accuracy {acc:.4f} (onnxruntime; max |ort - torch| {err:.2e}), "
        f"{os.path.getsize(path)} bytes; torch {torch.__version__}, CPU kernels "
        f"{torch.backends.cpu.get_cpu_capability()}"
    )


if __name__ == "__main__":
    main()
