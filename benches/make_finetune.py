"""Fine-tune test models for the tensorise memory and CPU figures in docs/BENCHMARKS.md.

    python benches/make_finetune.py emb OUT_DIR
        OUT_DIR/base/model.safetensors: one [65536, 4096] BF16 tensor (512 MiB)
        of normal(0, 0.02); OUT_DIR/ft/model.safetensors: the same with the low
        1-2 mantissa bits of 30 % of its elements flipped.

    python benches/make_finetune.py emb-tail OUT_DIR
        The same base; the fine-tune changes only the last 4096 rows (new
        tokens trained, the rest frozen), so its first 15 of 16 parts equal
        the base's.

    python benches/make_finetune.py perturb SRC DST NAME...
        DST: a copy of the safetensors file SRC with tensors NAME... changed the
        same way (BF16 only).

Seeds are fixed, so the files are the same on every run. Needs numpy.
"""
import json
import shutil
import sys
import os

import numpy as np


def flip_low_bits(u, rng):
    mask = rng.random(u.size) < 0.3
    u[mask] ^= rng.integers(1, 4, int(mask.sum())).astype(np.uint16)


def emb(out, tail_rows=None):
    rows, cols = 65536, 4096
    nb = rows * cols * 2
    rng = np.random.default_rng(7)
    header = {"__metadata__": {"format": "pt"},
              "embed.weight": {"dtype": "BF16", "shape": [rows, cols], "data_offsets": [0, nb]}}
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    u = rng.normal(0, 0.02, rows * cols).astype(np.float32).view(np.uint32)
    b = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)
    del u
    for name in ("base", "ft"):
        if name == "ft" and tail_rows:
            tail = b[(rows - tail_rows) * cols:]
            flip_low_bits(tail, rng)
        elif name == "ft":
            flip_low_bits(b, rng)
        os.makedirs(os.path.join(out, name), exist_ok=True)
        with open(os.path.join(out, name, "model.safetensors"), "wb") as f:
            f.write(len(h).to_bytes(8, "little"))
            f.write(h)
            f.write(b.tobytes())


def perturb(src, dst, names):
    shutil.copyfile(src, dst)
    with open(src, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        header = json.loads(f.read(n))
    rng = np.random.default_rng(5)
    with open(dst, "r+b") as f:
        for name in names:
            a, b = header[name]["data_offsets"]
            f.seek(8 + n + a)
            u = np.frombuffer(f.read(b - a), dtype=np.uint16).copy()
            flip_low_bits(u, rng)
            f.seek(8 + n + a)
            f.write(u.tobytes())


if __name__ == "__main__":
    if len(sys.argv) >= 3 and sys.argv[1] == "emb":
        emb(sys.argv[2])
    elif len(sys.argv) >= 3 and sys.argv[1] == "emb-tail":
        emb(sys.argv[2], tail_rows=4096)
    elif len(sys.argv) >= 5 and sys.argv[1] == "perturb":
        perturb(sys.argv[2], sys.argv[3], sys.argv[4:])
    else:
        sys.exit(__doc__)
