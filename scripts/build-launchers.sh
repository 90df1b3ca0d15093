#!/usr/bin/env bash
# Build the Databricks task launchers into OUT (default launchers/dist):
#   OUT/weightlake-launcher.jar                          spark_jar_task (javac + jar)
#   OUT/weightlake_launcher-0.1.0-py3-none-any.whl       python_wheel_task (pip wheel)
#
#   bash scripts/build-launchers.sh [OUT]
# PYTHON picks the Python (default: .venv/bin/python, else python3); its
# setuptools and wheel build the wheel offline (--no-build-isolation).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=${1:-$ROOT/launchers/dist}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
if [ -z "${PYTHON:-}" ]; then
  if [ -x "$ROOT/.venv/bin/python" ]; then PYTHON=$ROOT/.venv/bin/python; else PYTHON=python3; fi
fi

# 1. The JAR, for Java 8 and later (Databricks runtimes run 8 or 17).
CLASSES=$(mktemp -d)
WORK=$(mktemp -d)
trap 'rm -rf "$CLASSES" "$WORK"' EXIT
javac --release 8 -Xlint:-options -d "$CLASSES" "$ROOT/launchers/jar/src/ai/weightlake/Launcher.java"
jar --create --file "$OUT/weightlake-launcher.jar" --manifest "$ROOT/launchers/jar/MANIFEST.MF" -C "$CLASSES" .
echo "built $OUT/weightlake-launcher.jar"

# 2. The wheel (built from a copy: setuptools writes build/ and *.egg-info).
cp -r "$ROOT/launchers/wheel/." "$WORK/"
"$PYTHON" -m pip wheel --no-deps --no-build-isolation -q -w "$OUT" "$WORK"
echo "built $(ls "$OUT"/weightlake_launcher-*.whl)"
