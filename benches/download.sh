#!/usr/bin/env bash
# End-to-end download benchmark: weightlake vs aria2c vs hf_transfer, all against
# one local HTTP server (weightlake-testserver) serving a >= 1 GiB file, in two
# modes: unthrottled, and WAN-emulated (each response capped at 25 MB/s, +40 ms).
# Then bronze ingest of a 2 GiB file vs weightlake's own download-only figure.
#
#   bash benches/download.sh                 # full run, results in benches/results/
#   RUNS=1 NS="8" SIZE_MIB=256 WAN_MIB=256 bash benches/download.sh   # quick look
#
# The WAN mode runs once per size in WAN_MIB (default "1024 4096": the issue's
# 1 GiB, and a typical 4-5 GB checkpoint shard, where the fixed round trips of
# a transfer weigh less). Caches are dropped before every run, then each tool's
# executable is loaded once (`--version`, `import hf_transfer`), so a run
# measures the transfer, not reading a cold binary from disk.
#
# Reports medians of RUNS runs: throughput (MB/s), CPU seconds per GiB
# (user+sys of the client process), and peak RSS (MiB). Needs aria2c (Debian
# `aria2`) and `hf_transfer` (pip); installs them when missing.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/weightlake-target}"
RUNS=${RUNS:-3}
NS=${NS:-"8 16 32"}
SIZE_MIB=${SIZE_MIB:-1024}
WAN_MIB=${WAN_MIB:-"1024 4096"}
INGEST_MIB=${INGEST_MIB:-2048}
PORT=${PORT:-18765}
WORK=${WORK:-/tmp/weightlake-bench}
OUT=benches/results
mkdir -p "$WORK/data" "$OUT"

command -v aria2c >/dev/null || apt-get install -y -qq aria2 >/dev/null
[ -x /usr/bin/time ] || apt-get install -y -qq time >/dev/null
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -c 'import hf_transfer' 2>/dev/null || .venv/bin/pip install -q -r scripts/requirements-bench.txt

# BIN_DIR=… uses already-built binaries (e.g. a dev build) instead of a release build.
if [ -z "${BIN_DIR:-}" ]; then
  cargo build --release --locked --bins
  BIN_DIR=$CARGO_TARGET_DIR/release
fi
WL=$BIN_DIR/weightlake
SERVER=$BIN_DIR/weightlake-testserver

# Realistic weights: normal(0, 0.02) as BF16 bytes, made once.
make_file() { # name MiB
  [ -f "$WORK/data/$1" ] && [ "$(stat -c %s "$WORK/data/$1")" -eq $(($2 << 20)) ] && return 0
  .venv/bin/python - "$WORK/data/$1" "$2" <<'PY'
import sys, numpy as np
path, mib = sys.argv[1], int(sys.argv[2])
rng = np.random.default_rng(0)
with open(path, "wb") as f:
    for _ in range(mib // 16):
        a = rng.normal(0, 0.02, 8 << 20).astype(np.float32).view(np.uint32)  # 16 MiB of BF16
        f.write(((a + 0x7FFF + ((a >> 16) & 1)) >> 16).astype(np.uint16).tobytes())
PY
}
make_file weights.bin "$SIZE_MIB"
for m in $WAN_MIB; do make_file "wan-$m.bin" "$m"; done  # seed 0: wan-1024.bin = weights.bin
make_file ingest.bin "$INGEST_MIB"
SIZE_BYTES=$(stat -c %s "$WORK/data/weights.bin")

SERVER_PID=
start_server() { # rate_mbps latency_ms
  stop_server
  "$SERVER" "$WORK/data" --port "$PORT" --rate-mbps "$1" --latency-ms "$2" >"$WORK/server.log" 2>&1 &
  SERVER_PID=$!
  for _ in $(seq 1 900); do curl -fsS -o /dev/null -r 0-0 "http://127.0.0.1:$PORT/weights.bin" 2>/dev/null && return 0; sleep 0.1; done
  echo "server did not start"; cat "$WORK/server.log"; exit 1
}
stop_server() { if [ -n "$SERVER_PID" ]; then kill "$SERVER_PID" 2>/dev/null || true; wait "$SERVER_PID" 2>/dev/null || true; fi; SERVER_PID=; }
trap stop_server EXIT

# measure LABEL CMD... -> appends "label wall user sys maxrss_kb" to $RAW
measure() {
  local label=$1; shift
  rm -f "$WORK/dl.bin"
  sync; echo 1 > /proc/sys/vm/drop_caches 2>/dev/null || true
  case "$1" in
    */python) "$1" -c 'import hf_transfer' ;;
    *) "$1" --version >/dev/null 2>&1 || true ;;
  esac
  /usr/bin/time -f "%e %U %S %M" -o "$WORK/time.txt" "$@" >/dev/null 2>"$WORK/err.txt" || { echo "FAILED: $label"; cat "$WORK/err.txt"; return 1; }
  echo "$label $(cat "$WORK/time.txt")" >> "$RAW"
}

RAW=$OUT/download-raw.txt
: > "$RAW"
run_tools() { # mode url
  for n in $NS; do
    for r in $(seq 1 "$RUNS"); do
      measure "$1 weightlake $n" "$WL" download "$2" -o "$WORK/dl.bin" -n "$n" --chunk-size 16MiB -q
      # aria2c allows at most 16 connections per server (-x); -s still splits N ways.
      measure "$1 aria2c $n" aria2c -q -x "$(( n < 16 ? n : 16 ))" -s "$n" -k 16M --file-allocation=none --allow-overwrite=true -d "$WORK" -o dl.bin "$2"
      measure "$1 hf_transfer $n" .venv/bin/python -c "import hf_transfer; hf_transfer.download(url='$2', filename='$WORK/dl.bin', max_files=$n, chunk_size=16*1024*1024)"
    done
  done
}
start_server 0 0
run_tools unthrottled "http://127.0.0.1:$PORT/weights.bin"
start_server 25 40
for m in $WAN_MIB; do run_tools "wan-$m" "http://127.0.0.1:$PORT/wan-$m.bin"; done

# Ingest into a local-disk bronze table vs download-only, same file, same server.
start_server 0 0
INGEST_URL="http://127.0.0.1:$PORT/ingest.bin"
INGEST_BYTES=$(stat -c %s "$WORK/data/ingest.bin")
for r in $(seq 1 "$RUNS"); do
  measure "ingest download-only 16" "$WL" download "$INGEST_URL" -o "$WORK/dl.bin" -n 16 --chunk-size 16MiB -q
  rm -rf "$WORK/lake"
  measure "ingest bronze 16" "$WL" ingest "$INGEST_URL" --lake "$WORK/lake" -n 16 --chunk-size 16MiB -q
done
# The same over the emulated WAN (8 connections x 25 MB/s), where the network,
# not the CPU, sets the pace.
start_server 25 40
for r in $(seq 1 "$RUNS"); do
  measure "ingestwan download-only 8" "$WL" download "$INGEST_URL" -o "$WORK/dl.bin" -n 8 --chunk-size 16MiB -q
  rm -rf "$WORK/lake"
  measure "ingestwan bronze 8" "$WL" ingest "$INGEST_URL" --lake "$WORK/lake" -n 8 --chunk-size 16MiB -q
done
stop_server

.venv/bin/python - "$RAW" "$SIZE_BYTES" "$INGEST_BYTES" > "$OUT/download.md" <<'PY'
import sys, statistics as st, collections
raw, size, isize = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
MiB = 2**20
rows = collections.defaultdict(list)
for line in open(raw):
    *label, wall, user, sysc, rss = line.split()
    rows[" ".join(label)].append((float(wall), float(user) + float(sysc), int(rss)))
def summary(label, nbytes):
    v = rows[label]
    wall = st.median(x[0] for x in v); cpu = st.median(x[1] for x in v); rss = st.median(x[2] for x in v)
    return nbytes / wall / 1e6, cpu / (nbytes / 2**30), rss / 1024, len(v)
print(f"Files: BF16 normal(0,0.02) weights; medians of the runs shown.\n")
modes = ["unthrottled"] + sorted({l.split()[0] for l in rows if l.startswith("wan-")}, key=lambda m: int(m[4:]))
for mode in modes:
    wan = mode.startswith("wan-")
    nbytes = int(mode[4:]) * MiB if wan else size
    print(f"### {mode}: {nbytes/MiB:.0f} MiB file" + (", 25 MB/s per connection, +40 ms per response" if wan else ""))
    print("\n| N | tool | MB/s | % of N x 25 MB/s | CPU-s/GiB | peak RSS MiB | runs |\n|---|---|---|---|---|---|---|")
    for n in sorted({int(l.split()[2]) for l in rows if l.startswith(mode + " ")}):
        for tool in ("weightlake", "aria2c", "hf_transfer"):
            label = f"{mode} {tool} {n}"
            if label not in rows: continue
            mbps, cpu, rss, runs = summary(label, nbytes)
            pct = f"{100*mbps/(n*25):.0f}%" if wan else "-"
            print(f"| {n} | {tool} | {mbps:.0f} | {pct} | {cpu:.2f} | {rss:.0f} | {runs} |")
    print()
if "ingest bronze 16" in rows:
    d = summary("ingest download-only 16", isize); i = summary("ingest bronze 16", isize)
    print(f"### ingest ({isize/2**20:.0f} MiB file, N=16, 16 MiB chunks, local-disk lake)\n")
    print("| run | MB/s | CPU-s/GiB | peak RSS MiB |\n|---|---|---|---|")
    print(f"| download only | {d[0]:.0f} | {d[1]:.2f} | {d[2]:.0f} |")
    print(f"| ingest to bronze | {i[0]:.0f} | {i[1]:.2f} | {i[2]:.0f} |")
    print(f"\nIngest reaches {100*i[0]/d[0]:.0f}% of download-only throughput.")
if "ingestwan bronze 8" in rows:
    d = summary("ingestwan download-only 8", isize); i = summary("ingestwan bronze 8", isize)
    print(f"\n### ingest over the emulated WAN ({isize/2**20:.0f} MiB file, N=8 x 25 MB/s, +40 ms)\n")
    print("| run | MB/s | CPU-s/GiB | peak RSS MiB |\n|---|---|---|---|")
    print(f"| download only | {d[0]:.0f} | {d[1]:.2f} | {d[2]:.0f} |")
    print(f"| ingest to bronze | {i[0]:.0f} | {i[1]:.2f} | {i[2]:.0f} |")
    print(f"\nIngest reaches {100*i[0]/d[0]:.0f}% of download-only throughput.")
PY
cat "$OUT/download.md"
