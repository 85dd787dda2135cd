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

ninja and git are stopped the way they expect: they run in a process group of their own and
get SIGTERM (``stop``; on our death, ``preexec(signal.SIGTERM)``), which they pass on to the
children they started (ninja runs each compile in a process group of its own, so SIGKILL to
ninja alone leaves the compilers writing), wait for, and clean up after (ninja deletes the
half-written outputs, git its lock files).  Whatever still runs with its working directory in
a build directory or repository may still write there: ``wait_for_writers`` waits for it
before a new run starts there, and refuses when it does not end.

Long commands take SIGINT and SIGTERM as a request to stop (``handle_stop_signals``): a
build started in the background by a script inherits SIG_IGN for SIGINT, and SIGTERM (what
``timeout`` and service managers send) otherwise ends Python without unwinding.
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
from pathlib import Path
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


def preexec(death_signal: int = signal.SIGKILL) -> Callable[[], None] | None:
    """A ``preexec_fn`` that gives the child ``death_signal`` when this process dies; None where that is unavailable.

    The function only calls prctl, getppid and kill (async-signal-safe), bound before the fork.
    """
    prctl = _PRCTL
    if prctl is None or threading.current_thread() is not threading.main_thread():
        return None
    parent = os.getpid()
    sig = int(death_signal)

    def tie() -> None:
        prctl(PR_SET_PDEATHSIG, sig, 0, 0, 0)
        if os.getppid() != parent:  # the harness died before prctl: nobody would signal us later
            os.kill(os.getpid(), sig)

    return tie


def watch(pgid: int) -> subprocess.Popen[bytes] | None:
    """Where ``preexec`` is unavailable: a watcher that kills process group ``pgid`` when we die.

    Returns the watcher (stop it with ``unwatch`` before the group is reaped), or None when
    ``preexec`` already ties the child."""
    if preexec() is not None:
        return None
    # Started here, not through harness/runner.py: runner ties its children to us with this module (a
    # cycle), and the watcher must outlive us; it gets only what finds Python, none of our secrets.
    env = {k: v for k, v in os.environ.items() if k in ("PATH", "PYTHONPATH", "PYTHONHOME", "SYSTEMROOT")}
    return subprocess.Popen(
        [sys.executable, "-m", "harness.lifetime", str(os.getpid()), str(pgid)],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True, close_fds=True, env=env,
    )


def unwatch(watcher: subprocess.Popen[bytes] | None) -> None:
    if watcher is not None:
        with contextlib.suppress(ProcessLookupError):
            watcher.kill()
        watcher.wait()


STOP_GRACE_S = 30.0  # ninja waits for its compiles to stop; git removes its lock files


def stop(proc: subprocess.Popen[Any], grace: float = STOP_GRACE_S) -> None:
    """Stop a child started in a process group of its own (``process_group=0``): SIGTERM to the
    group, which ninja and git pass on to their own children and wait for; SIGKILL after ``grace``."""
    if proc.poll() is None:
        _killpg(proc.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=grace)
    _killpg(proc.pid, signal.SIGKILL)  # whatever of the group is left (a job that ignored SIGTERM)
    proc.wait()


def _killpg(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def writers(directory: Path) -> list[int]:
    """Live processes (not zombies, not us) whose working directory is ``directory`` or below it.

    ninja runs every job in its build directory and git in its repository: such a process left
    by a killed harness may still write there.  Linux only (``/proc``); elsewhere an empty list."""
    root = os.path.realpath(directory)
    found = []
    me = os.getpid()
    try:
        entries = os.listdir("/proc")
    except OSError:
        return []
    for name in entries:
        if not name.isdigit() or int(name) == me:
            continue
        try:
            cwd = os.readlink(f"/proc/{name}/cwd")
            with open(f"/proc/{name}/stat", "rb") as f:
                state = f.read(4096).rsplit(b")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue  # gone, or not ours to look at
        if state != b"Z" and (cwd == root or cwd.startswith(root + os.sep)):
            found.append(int(name))
    return sorted(found)


def wait_for_writers(directory: Path, *, timeout: float = STOP_GRACE_S, what: str = "") -> None:
    """Wait until no process works in ``directory`` (see ``writers``); a StepError when one is
    still there after ``timeout`` seconds (we never kill what another run started)."""
    deadline = time.monotonic() + timeout
    told = False
    while pids := writers(directory):
        if time.monotonic() >= deadline:
            from harness.errors import StepError

            raise StepError(f"{what or directory}: processes of an earlier run still work in {directory} "
                            f"(pids {', '.join(map(str, pids[:8]))})",
                            hint="wait for them to end, or stop them (kill PID), then run again")
        if not told:
            from harness import console

            console.info(f"{what or directory}: waiting for an earlier run's processes to end "
                         f"(pids {', '.join(map(str, pids[:8]))})")
            told = True
        time.sleep(POLL_S)


def handle_stop_signals() -> None:
    """SIGINT -> KeyboardInterrupt (exit 130) even when started in the background, where shells
    ignore it; SIGTERM -> SystemExit(143).  Both unwind: ``finally`` blocks run, children are
    stopped (``stop``), temp files removed.  Main thread only (signal handlers live there)."""
    if threading.current_thread() is not threading.main_thread():
        return
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _exit_on_signal)


def _exit_on_signal(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)


def _watch_main(parent: int, pgid: int) -> int:
    while True:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return 0  # the group is gone
        except PermissionError:
            return 0  # the group id now belongs to someone else
        if os.getppid() != parent:  # reparented: the harness is gone; stop the group as ``stop`` does
            _killpg(pgid, signal.SIGTERM)
            deadline = time.monotonic() + STOP_GRACE_S
            while time.monotonic() < deadline and _group_alive(pgid):
                time.sleep(POLL_S)
            _killpg(pgid, signal.SIGKILL)
            return 0
        time.sleep(POLL_S)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return True


if __name__ == "__main__":
    sys.exit(_watch_main(int(sys.argv[1]), int(sys.argv[2])))
