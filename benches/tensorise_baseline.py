"""Python baseline for the tensorise benchmark: safetensors + deltalake, one
row per tensor (name, dtype, shape, sha256, stats, zstd-compressed bytes via
Parquet), as a team would write it without weightlake.

usage: tensorise_baseline.py MODEL.safetensors LAKE_DIR
Prints JSON: bytes_in, bytes_stored (size of the Delta table's files).
"""

import hashlib
import json
import os
import sys

import numpy as np
import pyarrow as pa
from deltalake import write_deltalake
from safetensors import safe_open


def main():
    path, lake = sys.argv[1], sys.argv[2]
    rows = {k: [] for k in ("name", "dtype", "shape", "sha256", "min", "max", "mean", "std", "nan_count", "data")}
    with safe_open(path, "np") as f:
        for name in f.keys():
            sl = f.get_slice(name)
            dtype = sl.get_dtype()
            if dtype == "BF16":
                # numpy has no bfloat16: read raw bytes from the file instead.
                raw = None
            arr = None
            try:
                arr = f.get_tensor(name)
                raw = arr.tobytes()
                vals = arr.astype(np.float64)
            except TypeError:
                raw = None
            if raw is None:
                with open(path, "rb") as fh:
                    n = int.from_bytes(fh.read(8), "little")
                    header = json.loads(fh.read(n))
                    b, e = header[name]["data_offsets"]
                    fh.seek(8 + n + b)
                    raw = fh.read(e - b)
                u = np.frombuffer(raw, dtype=np.uint16).astype(np.uint32) << 16
                vals = u.view(np.float32).astype(np.float64)
            finite = vals[np.isfinite(vals)]
            rows["name"].append(name)
            rows["dtype"].append(dtype)
            rows["shape"].append(list(sl.get_shape()))
            rows["sha256"].append(hashlib.sha256(raw).hexdigest())
            rows["min"].append(float(finite.min()) if finite.size else None)
            rows["max"].append(float(finite.max()) if finite.size else None)
            rows["mean"].append(float(finite.mean()) if finite.size else None)
            rows["std"].append(float(finite.std()) if finite.size else None)
            rows["nan_count"].append(int(np.isnan(vals).sum()))
            rows["data"].append(raw)
    table = pa.table(rows)
    write_deltalake(lake, table, mode="append")
    stored = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(lake) for f in fs if f.endswith(".parquet"))
    print(json.dumps({"bytes_in": os.path.getsize(path), "bytes_stored": stored}))


if __name__ == "__main__":
    main()
