#!/usr/bin/env bash
# How tensorise and verify scale with the number of files of a model (many
# small files: tokenizer shards, per-layer checkpoints, configs).
#   bash benches/many_files.sh BIN [N ...]      # default N: 2000 10000
# Prints, per N: wall seconds and peak RSS of `tensorise` and of `verify`,
# and the commits tensorise made to silver.files. Read the ratios between
# the rows, not the absolute times.
set -euo pipefail
BIN=${1:?usage: many_files.sh BIN [N ...]}
shift
if [[ $# -gt 0 ]]; then COUNTS=("$@"); else COUNTS=(2000 10000); fi
W=$(mktemp -d /tmp/weightlake-bench-many.XXXXXX)
trap 'rm -rf "$W"' EXIT
printf '| files | tensorise s | tensorise peak MiB | verify s | verify peak MiB | silver.files commits |\n'
printf '|---|---|---|---|---|---|\n'
for n in "${COUNTS[@]}"; do
  src=$W/m$n
  python3 - "$src" "$n" <<'PY'
import os, sys
root, n = sys.argv[1], int(sys.argv[2])
for i in range(n):
    d = os.path.join(root, "g%02d" % (i % 20))
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "f%05d.txt" % i), "wb") as f:
        f.write(("file %d\n" % i).encode() * (i % 7))
PY
  lake=$W/lake$n
  "$BIN" ingest "$src" --lake "$lake" --model-id m -q >/dev/null
  t=$( { /usr/bin/time -f '%e %M' "$BIN" tensorise --lake "$lake" -q >/dev/null; } 2>&1 | tail -1)
  v=$( { /usr/bin/time -f '%e %M' "$BIN" verify m@main --lake "$lake" -q >/dev/null; } 2>&1 | tail -1)
  commits=$(ls "$lake/silver/files/_delta_log" | grep -c '\.json$')
  read -r ts tk <<<"$t"; read -r vs vk <<<"$v"
  printf '| %s | %s | %d | %s | %d | %s |\n' "$n" "$ts" $((tk / 1024)) "$vs" $((vk / 1024)) "$commits"
done
