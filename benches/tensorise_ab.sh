#!/usr/bin/env bash
# A/B of two (or more) weightlake builds on the same tensorise and rebuild
# work: the 2 GiB synthetic BF16 model that benches/tensorise.sh generates,
# ingested once, then per round and per binary a fresh copy of that lake is
# tensorised and verified. Prints one line per run: round, binary,
# tensorise "wall user sys maxrss_kb", verify "wall user sys maxrss_kb".
#
#   cp ~/.cache/weightlake-target/release/weightlake /tmp/wl-a   # build A
#   ...rebuild...; cp ~/.cache/weightlake-target/release/weightlake /tmp/wl-b
#   ROUNDS=3 bash benches/tensorise_ab.sh /tmp/wl-a /tmp/wl-b
set -euo pipefail
[ $# -ge 1 ] || { echo "usage: $0 BINARY..." >&2; exit 2; }
ROUNDS=${ROUNDS:-3}
WORK=${WORK:-/tmp/weightlake-bench-tensorise}
# MODEL / MODEL_ID pick another model (its base lake is kept per MODEL_ID).
MODEL=${MODEL:-$WORK/models/synthetic-bf16/model.safetensors}
MODEL_ID=${MODEL_ID:-synthetic-bf16}
[ -f "$MODEL" ] || { echo "$MODEL missing: run benches/tensorise.sh once" >&2; exit 2; }
BASE=$WORK/ab-lake-base
[ "$MODEL_ID" = synthetic-bf16 ] || BASE=$WORK/ab-lake-base-$MODEL_ID
LAKE=$WORK/ab-lake
if [ ! -d "$BASE" ]; then
  "$1" ingest "$MODEL" --lake "$BASE" --model-id "$MODEL_ID" -q
fi
run() { { /usr/bin/time -f '%e %U %S %M' "$@" >/dev/null; } 2>&1 | tail -1; }
for r in $(seq 1 "$ROUNDS"); do
  for bin in "$@"; do
    rm -rf "$LAKE" && cp -r "$BASE" "$LAKE"
    t=$(run "$bin" tensorise --lake "$LAKE" -q)
    v=$(run "$bin" verify "$MODEL_ID@main" --lake "$LAKE" -q)
    echo "$r $bin tensorise $t verify $v"
  done
done
rm -rf "$LAKE"
