"""Helpers of the fault suite: the real CLI with its time and memory measured."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from tests.conftest import REPO

# Runs the CLI as `python -m harness` does and, at exit, writes the process's peak resident set
# (VmHWM: the high-water mark of its own address space, made fresh by exec).  getrusage's
# ru_maxrss would not do: Linux folds the pre-exec address space into it, so a child of a big
# pytest process reports the parent's size.
_WRAPPER = """
import atexit, runpy, sys
out = sys.argv.pop(1)
def _hwm():
    with open("/proc/self/status") as f:
        kib = next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))
    with open(out, "w") as f:
        f.write(str(kib))
atexit.register(_hwm)
sys.argv[0] = "harness"
runpy.run_module("harness", run_name="__main__", alter_sys=True)
"""


@dataclass(frozen=True)
class Measured:
    returncode: int
    stdout: str
    stderr: str
    seconds: float
    max_rss_mb: float  # the harness process's own peak resident set (VmHWM), MiB


def harness_measured(*args: str | os.PathLike[str], cwd: Path | None = None, env: dict[str, str] | None = None,
                     timeout: float = 60) -> Measured:
    """Run the CLI with ARGS; its wall time and its own peak memory (not the test's)."""
    with tempfile.TemporaryDirectory() as tmp:
        hwm = Path(tmp) / "hwm"
        t0 = time.monotonic()
        res = subprocess.run([sys.executable, "-c", _WRAPPER, str(hwm), *map(str, args)], cwd=cwd or REPO,
                             env=env if env is not None else dict(os.environ), capture_output=True, text=True,
                             timeout=timeout)
        seconds = time.monotonic() - t0
        rss = int(hwm.read_text()) / 1024 if hwm.exists() else float("inf")
    return Measured(res.returncode, res.stdout, res.stderr, seconds, rss)
