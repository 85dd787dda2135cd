"""The one subprocess runner: every external command goes through ``run``.

argv lists only (never a shell), the command is echoed as ``+ <shell-quoted argv>``,
long output is streamed to a log file and a per-line callback (progress bars), and
a failure raises :class:`CommandFailed` holding the command, exit code and output tail.
"""

from __future__ import annotations

import collections
import os
import shlex
import shutil
import subprocess
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from harness import console
from harness.errors import CommandFailed, InputError

TAIL_LINES = 30


@dataclass(frozen=True)
class Result:
    argv: list[str]
    returncode: int
    stdout: str
    stderr: str


def which(program: str, *, purpose: str = "") -> str:
    """The full path of ``program``, or an InputError saying what is missing and why."""
    found = shutil.which(program)
    if found is None:
        why = f" (needed {purpose})" if purpose else ""
        raise InputError(f"{program} not found on PATH{why}")
    return found


def run(
    argv: Sequence[str | os.PathLike[str]],
    *,
    cwd: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
    check: bool = True,
    echo: bool = False,
    input: str | None = None,
    timeout: float | None = None,
) -> Result:
    """Run a short command and capture its output (git plumbing, ``--version`` probes)."""
    args = [os.fspath(a) for a in argv]
    if echo or console.verbose():
        console.echo_command(args)
    try:
        proc = subprocess.run(
            args,
            cwd=cwd,
            env=dict(env) if env is not None else None,
            input=input,
            capture_output=True,
            text=True,
            errors="replace",
            timeout=timeout,
            check=False,
        )
    except FileNotFoundError as exc:
        raise InputError(f"{args[0]} not found: {exc.strerror}") from None
    if check and proc.returncode != 0:
        tail = _tail_text((proc.stderr or "") + (proc.stdout or ""))
        raise CommandFailed(args, proc.returncode, tail)
    return Result(args, proc.returncode, proc.stdout, proc.stderr)


def stream(
    argv: Sequence[str | os.PathLike[str]],
    *,
    log_path: Path,
    cwd: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
    on_line: Callable[[str], None] | None = None,
    check: bool = True,
    append: bool = False,
) -> int:
    """Run a long command, its stdout and stderr merged into ``log_path`` line by line.

    ``on_line`` sees every line (progress parsing).  The command is always echoed.
    On failure the raised error carries the log's last lines and the log's path.
    """
    args = [os.fspath(a) for a in argv]
    console.echo_command(args)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    tail: collections.deque[str] = collections.deque(maxlen=TAIL_LINES)
    with open(log_path, "a" if append else "w", encoding="utf-8", errors="replace") as log:
        log.write("+ " + shlex.join(args) + "\n")
        log.flush()
        try:
            proc = subprocess.Popen(
                args,
                cwd=cwd,
                env=dict(env) if env is not None else None,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                text=True,
                errors="replace",
                bufsize=1,
            )
        except FileNotFoundError as exc:
            raise InputError(f"{args[0]} not found: {exc.strerror}") from None
        try:
            assert proc.stdout is not None
            for line in proc.stdout:
                log.write(line)
                log.flush()  # so `tail -f` on the log follows the build
                tail.append(line.rstrip("\n"))
                if on_line is not None:
                    on_line(line.rstrip("\n"))
            returncode = proc.wait()
        except BaseException:
            # Ctrl-C reached the child too (same process group); give it a moment, then make sure.
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            raise
    if check and returncode != 0:
        raise CommandFailed(args, returncode, "\n".join(tail), log=str(log_path))
    return returncode


def _tail_text(text: str, lines: int = TAIL_LINES) -> str:
    return "\n".join(text.rstrip().splitlines()[-lines:])
