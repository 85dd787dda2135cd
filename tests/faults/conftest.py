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


@dataclass(frozen=True)
class Measured:
    returncode: int
    stdout: str
    stderr: str
    seconds: float
    max_rss_mb: float  # the child's own peak resident set (its rusage, from wait4), MiB


def harness_measured(*args: str | os.PathLike[str], cwd: Path | None = None, env: dict[str, str] | None = None,
                     timeout: float = 60) -> Measured:
    """Run ``python -m harness ARGS``; its wall time and its own peak memory (not the test's)."""
    with tempfile.TemporaryFile() as fo, tempfile.TemporaryFile() as fe:
        t0 = time.monotonic()
        proc = subprocess.Popen([sys.executable, "-m", "harness", *map(str, args)], cwd=cwd or REPO,
                                env=env if env is not None else dict(os.environ), stdout=fo, stderr=fe)
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() - t0 > timeout:
                proc.kill()
                pid, status, usage = os.wait4(proc.pid, 0)
                break
            time.sleep(0.01)
        seconds = time.monotonic() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here; keep Popen from waiting again
        fo.seek(0)
        fe.seek(0)
        return Measured(proc.returncode, fo.read().decode(errors="replace"), fe.read().decode(errors="replace"),
                        seconds, usage.ru_maxrss / 1024)  # ru_maxrss is in KiB on Linux
