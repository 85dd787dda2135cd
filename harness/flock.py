"""File locks that say what they wait for and who holds it (``atomic.lock`` makes them).

A lock is ``filelock.FileLock`` (an OS lock: a holder that dies releases it).  The holder
records itself beside the lock file (``<lock>.holder``: pid, host, command line, since);
not in the lock file itself, which filelock versions before 4 truncate on every attempt.
A process that finds the lock taken says, once, what it waits for and who holds it; a wait
that outlasts the timeout ends in a StepError naming the holder, never ``filelock.Timeout``.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from pathlib import Path
from types import TracebackType

import filelock

from harness import console
from harness.errors import StepError


def holder_path(path: Path) -> Path:
    return path.with_name(path.name + ".holder")


def holder(path: Path) -> str:
    """Who holds the lock at ``path``, in words (from its ``.holder`` record)."""
    import socket

    try:
        record = json.loads(holder_path(path).read_text(encoding="utf-8"))
        pid, host, command, since = int(record["pid"]), str(record["host"]), str(record["command"]), record["since"]
    except (OSError, ValueError, KeyError, TypeError):
        return "another process"
    where = "" if host == socket.gethostname() else f" on {console.literal(host)}"
    started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(since)))
    return f"pid {pid}{where} ({console.literal(command[:200])}, since {started})"


def _duration(seconds: float) -> str:
    return f"{seconds / 3600:g} h" if seconds >= 3600 else f"{seconds / 60:g} min" if seconds >= 60 else f"{seconds:g} s"


class FileLock:
    """A reentrant file lock at ``path``; ``timeout`` seconds at most (negative: no limit)."""

    def __init__(self, path: Path, timeout: float = -1) -> None:
        self.path = path
        self.timeout = timeout
        self._lock = filelock.FileLock(str(path))
        self._depth = 0

    def acquire(self) -> None:
        try:
            self._lock.acquire(timeout=0)
        except filelock.Timeout:
            limit = f" (up to {_duration(self.timeout)})" if self.timeout >= 0 else ""
            console.info(f"waiting for the lock {self.path}{limit}: held by {holder(self.path)}")
            try:
                self._lock.acquire(timeout=self.timeout)
            except filelock.Timeout:
                raise StepError(
                    f"gave up after {_duration(self.timeout)} waiting for the lock {self.path}: "
                    f"held by {holder(self.path)}",
                    hint="another harness run is using it: let it finish or stop it, then run this again",
                ) from None
        self._depth += 1
        if self._depth == 1:
            self._record()

    def release(self) -> None:
        if self._depth == 1:  # forget the record while still holding the lock: never the next holder's
            with contextlib.suppress(OSError):
                holder_path(self.path).unlink()
        self._depth = max(self._depth - 1, 0)
        self._lock.release()

    @property
    def is_locked(self) -> bool:
        return self._depth > 0

    def _record(self) -> None:
        import shlex
        import socket

        program = Path(sys.argv[0])  # python -m harness: .../harness/__main__.py
        argv = [program.parent.name if program.name == "__main__.py" else program.name, *sys.argv[1:]]
        record = {"pid": os.getpid(), "host": socket.gethostname(), "command": shlex.join(argv), "since": time.time()}
        target = holder_path(self.path)
        tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        with contextlib.suppress(OSError):  # a record is a courtesy to waiters, never a reason to fail
            tmp.write_text(json.dumps(record), encoding="utf-8")
            os.replace(tmp, target)

    def __enter__(self) -> FileLock:
        self.acquire()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()
