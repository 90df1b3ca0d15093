#!/usr/bin/env bash
# Tensorise benchmark: storage ratio, throughput per CPU-second, rebuild speed
# and peak RSS of `weightlake tensorise` / `weightlake verify`, side by side with
# a Python baseline (safetensors + deltalake, one row per tensor) in the same run.
#
#   bash benches/tensorise.sh                 # results in benches/results/tensorise.md
#   SYNTH_MIB=512 bash benches/tensorise.sh   # smaller synthetic model
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/weightlake-target}"
SYNTH_MIB=${SYNTH_MIB:-2048}
WORK=${WORK:-/tmp/weightlake-bench-tensorise}
OUT=benches/results
mkdir -p "$WORK" "$OUT"
[ -x /usr/bin/time ] || apt-get install -y -qq time >/dev/null
bash scripts/fetch-models.sh
# BIN_DIR=… uses an already-built binary instead of a release build.
if [ -z "${BIN_DIR:-}" ]; then
  cargo build --release --locked --bin weightlake
  BIN_DIR=$CARGO_TARGET_DIR/release
fi
WL=$BIN_DIR/weightlake
PY=.venv/bin/python

# Models: real MiniLM (F32), its BF16/F16 casts and a BF16 fine-tune (10% of
# tensors perturbed), and a synthetic BF16 model of normal(0, 0.02) weights.
SRC=.cache/models/all-minilm-l6-v2/model.safetensors
[ -f "$WORK/variants/ft/model.safetensors" ] || $PY tests/fixtures/make_variants.py "$SRC" "$WORK/variants" >/dev/null
mkdir -p "$WORK/models/minilm-f32" "$WORK/models/synthetic-bf16"
cp -f "$SRC" "$WORK/models/minilm-f32/model.safetensors"
for v in bf16 f16 ft; do mkdir -p "$WORK/models/minilm-$v"; cp -f "$WORK/variants/$v/model.safetensors" "$WORK/models/minilm-$v/"; done
SYN="$WORK/models/synthetic-bf16/model.safetensors"
if [ ! -f "$SYN" ] || [ "$(stat -c %s "$SYN")" -lt $((SYNTH_MIB << 20)) ]; then
  $PY - "$SYN" "$SYNTH_MIB" <<'PY'
import json, sys, numpy as np
path, mib = sys.argv[1], int(sys.argv[2])
n = mib // 32                       # 32 MiB tensors of 4096 x 4096 BF16
rng = np.random.default_rng(1)
header, off = {"__metadata__": {"format": "pt"}}, 0
for i in range(n):
    header[f"layers.{i}.weight"] = {"dtype": "BF16", "shape": [4096, 4096], "data_offsets": [off, off + (32 << 20)]}
    off += 32 << 20
h = json.dumps(header, separators=(",", ":")).encode(); h += b" " * ((8 - len(h) % 8) % 8)
with open(path, "wb") as f:
    f.write(len(h).to_bytes(8, "little")); f.write(h)
    for i in range(n):
        u = rng.normal(0, 0.02, 4096 * 4096).astype(np.float32).view(np.uint32)
        f.write(((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16).tobytes())
PY
fi

RAW=$OUT/tensorise-raw.txt
: > "$RAW"
timed() { # label cmd... ; appends "label wall cpu rss_kb" and keeps stdout in $WORK/last.out
  local label=$1; shift
  /usr/bin/time -f "%e %U %S %M" -o "$WORK/time.txt" "$@" > "$WORK/last.out" 2> "$WORK/last.err" || { echo "FAILED $label"; cat "$WORK/last.err"; exit 1; }
  read -r wall user sys rss < "$WORK/time.txt"
  echo "$label $wall $(echo "$user + $sys" | bc) $rss" >> "$RAW"
}
stored_bytes() { "$WL" sql --lake "$1" --format csv "SELECT COALESCE(SUM(stored_len), 0) FROM silver.tensor_blobs" | tail -1; }

for m in minilm-f32 minilm-bf16 minilm-f16 synthetic-bf16; do
  rm -rf "$WORK/lake-$m" "$WORK/py-$m"
  "$WL" ingest "$WORK/models/$m/model.safetensors" --lake "$WORK/lake-$m" --model-id "$m" -q > /dev/null
  timed "tensorise $m" "$WL" tensorise --lake "$WORK/lake-$m" -q
  echo "stored $m $(stored_bytes "$WORK/lake-$m") $(stat -c %s "$WORK/models/$m/model.safetensors")" >> "$RAW"
  timed "verify $m" "$WL" verify "$m@main" --lake "$WORK/lake-$m" -q
  timed "python $m" $PY benches/tensorise_baseline.py "$WORK/models/$m/model.safetensors" "$WORK/py-$m"
  echo "pystored $m $(sed -n 's/.*"bytes_stored": \([0-9]*\).*/\1/p' "$WORK/last.out")" >> "$RAW"
done
# Base + fine-tune pair.
rm -rf "$WORK/lake-pair"
"$WL" ingest "$WORK/models/minilm-bf16/model.safetensors" --lake "$WORK/lake-pair" --model-id base -q > /dev/null
"$WL" ingest "$WORK/models/minilm-ft/model.safetensors" --lake "$WORK/lake-pair" --model-id ft -q > /dev/null
timed "tensorise pair" "$WL" tensorise --lake "$WORK/lake-pair" --base-model base@main -q
echo "stored pair $(stored_bytes "$WORK/lake-pair") $(( $(stat -c %s "$WORK/models/minilm-bf16/model.safetensors") + $(stat -c %s "$WORK/models/minilm-ft/model.safetensors") ))" >> "$RAW"

$PY - "$RAW" > "$OUT/tensorise.md" <<'PY'
import sys
rows = {}
stored, pystored = {}, {}
for line in open(sys.argv[1]):
    p = line.split()
    if p[0] == "stored": stored[p[1]] = (int(p[2]), int(p[3]))
    elif p[0] == "pystored": pystored[p[1]] = int(p[2])
    else: rows[(p[0], p[1])] = (float(p[2]), float(p[3]), int(p[4]))
print("| model | size MiB | weightlake ratio | python ratio | tensorise GB/CPU-s | python GB/CPU-s | tensorise RSS MiB | python RSS MiB | rebuild GB/CPU-s | rebuild RSS MiB |")
print("|---|---|---|---|---|---|---|---|---|---|")
for m in ("minilm-f32", "minilm-bf16", "minilm-f16", "synthetic-bf16"):
    if m not in stored: continue
    s, raw = stored[m]; gb = raw / 1e9
    t, v, py = rows[("tensorise", m)], rows[("verify", m)], rows[("python", m)]
    print(f"| {m} | {raw/2**20:.0f} | {raw/s:.3f}x | {raw/pystored[m]:.3f}x | {gb/t[1]:.2f} | {gb/py[1]:.2f} | {t[2]/1024:.0f} | {py[2]/1024:.0f} | {gb/v[1]:.2f} | {v[2]/1024:.0f} |")
if "pair" in stored:
    s, raw = stored["pair"]
    print(f"\nBase (BF16) + fine-tune (10% of tensors changed) stored in {s/raw:.3f} of their raw size together ({s/2**20:.1f} of {raw/2**20:.1f} MiB).")
PY
cat "$OUT/tensorise.md"
