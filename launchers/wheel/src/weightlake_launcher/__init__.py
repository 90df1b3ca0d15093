"""The weightlake launcher wheel: the entry point of a Databricks
`python_wheel_task`. It runs the weightlake binary with the task's parameters
(e.g. `task ingest --pipeline /Volumes/.../p.yaml --run-id 42`), streams its
stdout and stderr, and exits with the binary's exit code.

The binary is `$WEIGHTLAKE_BIN` when set (the exported job sets it on the
cluster), else `weightlake` on the PATH.
"""

import os
import subprocess
import sys

__all__ = ["main", "run"]


def binary():
    """The binary to run: $WEIGHTLAKE_BIN, else `weightlake` on the PATH."""
    return os.environ.get("WEIGHTLAKE_BIN") or "weightlake"


def run(args):
    """Run the binary with `args` (output inherited); return its exit code."""
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        return subprocess.call([binary(), *args])
    except OSError as e:
        print(
            f"weightlake-launcher: cannot run {binary()}: {e} "
            "(set WEIGHTLAKE_BIN to the weightlake binary)",
            file=sys.stderr,
        )
        return 127


def main(argv=None):
    """Console entry point: `weightlake-launcher ARGS...`."""
    args = sys.argv[1:] if argv is None else argv
    code = run(args)
    if code < 0:  # killed by a signal: report it the shell way
        code = 128 - code
    sys.exit(code)
