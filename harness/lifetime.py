"""Children die with the harness, even when it is killed with SIGKILL.

Linux: ``prctl(PR_SET_PDEATHSIG, SIGKILL)`` in the child between fork and exec
(``preexec``); the kernel kills the child when the thread that started it dies, which
for the harness's main thread is the process (prctl(2): "the parent thread").  The flag
survives exec.  Elsewhere (macOS has no parent-death signal), or when a child is started
off the main thread, ``watch`` starts a small watcher (``python -m harness.lifetime``) in
a session of its own that SIGKILLs the child's process group once the harness is gone.

Without this, ``kill -9`` of ``harness serve`` left llama-server running as an orphan,
holding its port and its GPU memory, and a killed build left ninja compiling into a
build directory the next build then shared.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

PR_SET_PDEATHSIG = 1  # linux/prctl.h
POLL_S = 0.2


def _load_prctl() -> Any:
    if not sys.platform.startswith("linux"):
        return None
    try:
        fn = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    fn.restype = ctypes.c_int
    return fn


_PRCTL = _load_prctl()


def preexec() -> Callable[[], None] | None:
    """A ``preexec_fn`` that gives the child SIGKILL when this process dies; None where that is unavailable.

    The function only calls prctl and getppid (async-signal-safe), bound before the fork.
    """
    prctl = _PRCTL
    if prctl is None or threading.current_thread() is not threading.main_thread():
        return None
    parent = os.getpid()
    sigkill = int(signal.SIGKILL)

    def tie() -> None:
        prctl(PR_SET_PDEATHSIG, sigkill, 0, 0, 0)
        if os.getppid() != parent:  # the harness died before prctl: nobody would kill us later
            os.kill(os.getpid(), sigkill)

    return tie


def watch(pgid: int) -> subprocess.Popen[bytes] | None:
    """Where ``preexec`` is unavailable: a watcher that kills process group ``pgid`` when we die.

    Returns the watcher (stop it with ``unwatch`` before the group is reaped), or None when
    ``preexec`` already ties the child."""
    if preexec() is not None:
        return None
    return subprocess.Popen(
        [sys.executable, "-m", "harness.lifetime", str(os.getpid()), str(pgid)],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True, close_fds=True,
    )


def unwatch(watcher: subprocess.Popen[bytes] | None) -> None:
    if watcher is not None:
        with contextlib.suppress(ProcessLookupError):
            watcher.kill()
        watcher.wait()


def _watch_main(parent: int, pgid: int) -> int:
    while True:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return 0  # the group is gone
        except PermissionError:
            return 0  # the group id now belongs to someone else
        if os.getppid() != parent:  # reparented: the harness is gone
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pgid, signal.SIGKILL)
            return 0
        time.sleep(POLL_S)


if __name__ == "__main__":
    sys.exit(_watch_main(int(sys.argv[1]), int(sys.argv[2])))
