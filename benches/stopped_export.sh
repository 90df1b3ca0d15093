#!/usr/bin/env bash
# How often an export to S3 stopped by SIGTERM leaves a multipart upload
# pending (docs/BENCHMARKS.md, "Stopped exports to S3 leave no pending
# multipart upload"). Usage: benches/stopped_export.sh [BIN] [ROUNDS]
# BIN defaults to the debug build; each round stops 6 exports after
# 0.6 .. 2.6 s. Needs the test venv (scripts/test.sh makes it).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${1:-${CARGO_TARGET_DIR:-$HOME/.cache/weightlake-target}/debug/weightlake}
ROUNDS=${2:-2}
PY=.venv/bin/python
PORT=${PORT:-19610}
W=$(mktemp -d /tmp/weightlake-stopped-export.XXXXXX)
$PY scripts/s3_server.py 127.0.0.1 "$PORT" > "$W/s3.log" 2>&1 & S3=$!
trap 'kill $S3 2>/dev/null; rm -rf "$W"' EXIT
export AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test AWS_REGION=us-east-1 \
  AWS_ENDPOINT_URL=http://127.0.0.1:$PORT AWS_ALLOW_HTTP=true
for _ in $(seq 50); do curl -sf -X PUT "http://127.0.0.1:$PORT/serving" && break; sleep 0.2; done
# A gold model of 3 shards of 60 MiB (F32 normal values) and a config.
$PY - "$W/m" <<'PY'
import os, sys, numpy as np
from safetensors.numpy import save_file
out = sys.argv[1]; os.makedirs(out, exist_ok=True); rng = np.random.default_rng(1)
for s in range(3):
    d = {f"layer{s}.{t}.weight": rng.standard_normal(60 * 2**20 // 32, dtype=np.float32).reshape(-1, 256) for t in range(8)}
    save_file(d, f"{out}/model-{s:05d}-of-00003.safetensors")
open(f"{out}/config.json", "w").write("{}")
PY
"$BIN" ingest "$W/m" --lake "$W/lake" --model-id m -q >/dev/null
"$BIN" tensorise --lake "$W/lake" -q >/dev/null
"$BIN" promote m@main --lake "$W/lake" --name g -q >/dev/null
pending() {
  $PY -c "import boto3,sys; c=boto3.client('s3', endpoint_url='http://127.0.0.1:$PORT'); \
print(sum(1 for u in c.list_multipart_uploads(Bucket='serving').get('Uploads', []) if u['Key'].startswith(sys.argv[1])))" "$1"
}
runs=0; leaking=0; total=0
for r in $(seq "$ROUNDS"); do
  for s in 0.6 1.0 1.4 1.8 2.2 2.6; do
    p="r$r-$s/"
    "$BIN" export g --lake "$W/lake" --to "s3://serving/$p" -q >/dev/null 2>&1 & pid=$!
    sleep "$s"; kill -TERM "$pid" 2>/dev/null || true; wait "$pid" || true
    n=$(pending "$p"); runs=$((runs + 1)); total=$((total + n))
    [ "$n" -gt 0 ] && leaking=$((leaking + 1))
    echo "stopped after ${s}s: $n pending"
  done
done
echo "runs $runs, runs leaving pending uploads $leaking, pending uploads $total"
