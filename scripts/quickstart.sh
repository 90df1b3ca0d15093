#!/usr/bin/env bash
# The quickstart, end to end on local disk, no services: build weightlake, ingest
# the bundled tiny model into ./lake with examples/quickstart.yaml, query it.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/weightlake-target}"
cargo build --locked --bin weightlake
WL="$CARGO_TARGET_DIR/debug/weightlake"
"$WL" validate examples/quickstart.yaml
"$WL" run examples/quickstart.yaml
"$WL" sql --lake ./lake "SELECT model_id, file_path, file_size, chunk_count, substr(file_sha256, 1, 16) AS sha256_prefix FROM bronze.files ORDER BY file_path"
"$WL" sql --lake ./lake "SELECT file_path, COUNT(*) AS chunks, SUM(chunk_len) AS bytes FROM bronze.model_files GROUP BY file_path ORDER BY file_path"
