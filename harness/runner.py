"""The one subprocess runner: every external command goes through ``run``.

argv lists only (never a shell), the command is echoed as ``+ <shell-quoted argv>``,
long output is streamed to a log file and a per-line callback (progress bars), and
a failure raises :class:`CommandFailed` holding the command, exit code and output tail.

Environment: children get ours without its secrets (``child_env``): a name matching one of
``SECRET_PATTERNS`` (``HF_TOKEN``, ``GITHUB_TOKEN``, ``LLAMA_API_KEY``...; not ``TOKENIZERS_PARALLELISM``
or ``PWD``; the README lists the same, a test holds them together).  None of the tools we run needs
one (llama-server's key goes in a file; the model download runs in this process).  git's network
commands keep what its credential helpers read (``GIT_*``, ``GH_*``, ``GITHUB_*``, ``GCM_*``); its local
commands get none (harness/source/git_env.py: an allow-list, run through ``run_bytes``).

Long-running children (``stream``: ninja, cmake) run in a process group of their own; they are
stopped with SIGTERM to that group when we unwind (Ctrl-C, SIGTERM) and get SIGTERM when the
harness dies, even by SIGKILL (harness/lifetime.py), so ninja stops its compiles before it exits.

Services (``service``: llama-server, rpc-server) run until we stop them: each in a session of its
own (Ctrl-C in the terminal does not reach it, and the whole group is stopped together), its
output appended to a log file, killed when the harness dies (even by SIGKILL), ready once the
caller's probe answers (``Service.wait_ready``), and stopped as a group on the way out: SIGTERM,
then SIGKILL after a grace period (``Service.stop``).
"""

from __future__ import annotations

import collections
import contextlib
import fnmatch
import os
import re
import shlex
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeAlias, TypeVar

from harness import console, lifetime
from harness.errors import CommandFailed, InputError

TAIL_LINES = 30
TimeoutExpired = subprocess.TimeoutExpired  # what ``run`` raises past its ``timeout``
Process: TypeAlias = "subprocess.Popen[bytes]"  # a service's leader (``Service.process``)
T = TypeVar("T")

# a secret's name matches one of these (upper-cased); README.md "Children get no secrets" lists them
SECRET_PATTERNS = ("*TOKEN", "*_TOKEN_*", "*SECRET*", "*PASSWORD*", "*PASSWD*", "*PASSPHRASE*", "*_PWD",
                   "*_PAT", "*_KEY", "*_KEY_*", "*APIKEY*", "*CREDENTIAL*")
_SECRET = re.compile("|".join(fnmatch.translate(p) for p in SECRET_PATTERNS))
_GIT_CREDENTIALS = ("GIT_", "GH_", "GITHUB_", "GCM_")
# the GIT_* variables any child may see: how to reach a remote (ssh, proxies, TLS, http, askpass, the
# user's config given as GIT_CONFIG_*) and how to trace; never one that names a repository, an index,
# an object store, a shallow file, refs to replace, an identity or a date (a harness started from a
# git hook has GIT_DIR and GIT_INDEX_FILE: git, and llama.cpp's CMake asking git for build-info,
# would read the hook's repository)
GIT_ALLOWED = re.compile(
    r"^GIT_(EXEC_PATH|TRACE\w*|CURL_VERBOSE|REDACT_COOKIES|SSH|SSH_COMMAND|SSH_VARIANT|ASKPASS|PROXY_\w+|"
    r"SSL_\w+|HTTP_\w+|ALLOW_PROTOCOL|PROTOCOL_FROM_USER|TERMINAL_PROMPT|"
    r"CONFIG_COUNT|CONFIG_KEY_\d+|CONFIG_VALUE_\d+|CONFIG_GLOBAL|CONFIG_SYSTEM|CONFIG_NOSYSTEM|CONFIG_PARAMETERS)$")


def is_secret(name: str) -> bool:
    return bool(_SECRET.match(name.upper()))


def git_variable_allowed(name: str) -> bool:
    """Not a GIT_* variable, or one of ``GIT_ALLOWED``."""
    return not name.startswith("GIT_") or bool(GIT_ALLOWED.match(name))


def child_env(env: Mapping[str, str] | None, argv0: str | os.PathLike[str] = "", *, exact: bool = False) -> dict[str, str]:
    """``env`` (default: ours) without secrets and without the GIT_* variables that would point git at
    another repository (``GIT_ALLOWED``; ``exact``: the caller built ``env`` from that list itself and
    set the rest on purpose, git_env.py's identity and date); git keeps what its credential helpers read."""
    source = os.environ if env is None else env
    is_git = Path(argv0).name in ("git", "git.exe")
    return {k: v for k, v in source.items() if (exact or git_variable_allowed(k))
            and (not is_secret(k) or (is_git and k.upper().startswith(_GIT_CREDENTIALS)))}


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
            env=child_env(env, args[0]),
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


def run_bytes(
    argv: Sequence[str | os.PathLike[str]],
    *,
    env: Mapping[str, str],
    cwd: str | os.PathLike[str] | None = None,
    input: bytes | None = None,
    timeout: float | None = None,
) -> tuple[int, bytes, str]:
    """A short command with bytes in and out (git plumbing): (exit code, stdout, stderr text).

    ``env`` is the whole environment, taken as it is but for its secrets (``child_env(exact=True)``):
    nothing of ours leaks in that the caller left out.  The child gets SIGTERM when the harness dies, even by SIGKILL, so a
    git stops and removes its own lock files.  Running past ``timeout`` is exit code -9.
    """
    args = [os.fspath(a) for a in argv]
    try:
        proc = subprocess.run(args, cwd=cwd, env=child_env(env, args[0], exact=True), input=input,
                              stdin=None if input is not None else subprocess.DEVNULL, capture_output=True,
                              timeout=timeout, check=False, preexec_fn=lifetime.preexec(signal.SIGTERM))
    except FileNotFoundError as exc:
        raise InputError(f"{args[0]} not found: {exc.strerror}") from None
    except subprocess.TimeoutExpired as exc:
        err = exc.stderr.decode("utf-8", "replace") if isinstance(exc.stderr, bytes) else ""
        return -9, b"", f"{err}\n(stopped after {timeout:.0f} s)".strip()
    return proc.returncode, proc.stdout, proc.stderr.decode("utf-8", "replace")


def piped_search(first: Sequence[str | os.PathLike[str]], second: Sequence[str | os.PathLike[str]],
                 match: Callable[[bytes], T | None], *, env: Mapping[str, str]) -> T | None:
    """``first | second`` (``git log -p | git patch-id``): ``match``'s first answer for a line of ``second``'s,
    read as they come (bounded memory), or None; both stopped after a match, both die with us.  A failed
    ``first`` is ``CommandFailed`` with its stderr, read after the lines (for commands that write little there)."""
    a, b = [os.fspath(x) for x in first], [os.fspath(x) for x in second]
    if console.verbose():
        console.echo_command(a)
    try:
        head = subprocess.Popen(a, env=child_env(env, a[0], exact=True), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                stdin=subprocess.DEVNULL, preexec_fn=lifetime.preexec(signal.SIGTERM))
    except FileNotFoundError as exc:
        raise InputError(f"{a[0]} not found: {exc.strerror}") from None
    with head, subprocess.Popen(b, env=child_env(env, b[0], exact=True), stdin=head.stdout, stdout=subprocess.PIPE,
                                stderr=subprocess.DEVNULL, preexec_fn=lifetime.preexec(signal.SIGTERM)) as tail:
        assert head.stdout is not None and head.stderr is not None and tail.stdout is not None
        head.stdout.close()  # the second holds it now
        ran_out = False
        try:
            for line in tail.stdout:
                found = match(line)
                if found is not None:
                    return found
            ran_out = True
        finally:  # a match, an error or Ctrl-C: neither is left writing
            if not ran_out:
                head.kill()
                tail.kill()
        err = head.stderr.read().decode("utf-8", "replace")
        head.wait()
    if head.returncode != 0:
        raise CommandFailed(a, head.returncode, _tail_text(err))
    return None

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
                env=child_env(env, args[0]),
                preexec_fn=lifetime.preexec(signal.SIGTERM),  # ninja/git stop their own children
                process_group=0,  # so that stopping it reaches what it started (lifetime.stop)
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
            # Ctrl-C or SIGTERM (lifetime.handle_stop_signals): ninja and git get SIGTERM, pass it
            # on to their children and wait for them; what is left after the grace gets SIGKILL.
            lifetime.stop(proc)
            raise
    if check and returncode != 0:
        raise CommandFailed(args, returncode, "\n".join(tail), log=str(log_path))
    return returncode


@dataclass
class Service:
    """A long-running child started by ``service``: its leader leads a process group (and session) of its own."""

    argv: list[str]
    log_path: Path
    process: Process = field(repr=False, compare=False)
    watcher: Process | None = field(default=None, repr=False, compare=False)
    reaped: bool = field(default=False, repr=False, compare=False)

    @property
    def pid(self) -> int:
        return self.process.pid

    def exited(self) -> bool:
        """Whether the leader has exited, without reaping it where the platform allows: the unreaped
        leader keeps the group id ours, so signalling the group later cannot hit a stranger."""
        if self.process.returncode is not None:
            return True
        if not hasattr(os, "waitid"):  # macOS: reap (the group id may then be reused; rare enough)
            return self.process.poll() is not None
        try:
            return os.waitid(os.P_PID, self.process.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
        except ChildProcessError:
            return True

    def wait_exit(self, poll: float = 0.5) -> None:
        """Block until the leader exits on its own (it is reaped later, by ``stop``)."""
        while not self.exited():
            time.sleep(poll)

    def wait_ready(self, probe: Callable[[], T | None], *, timeout: float, poll: float,
                   exited: Callable[[int], BaseException], timed_out: Callable[[], BaseException]) -> T:
        """Poll ``probe`` until it returns something other than None, and return that.  If the leader
        exits first, what it left in its group is killed and ``exited(exit code)`` is raised; after
        ``timeout`` seconds, ``timed_out()``.  Polled often at first (a small model is up in
        milliseconds), then every ``poll`` seconds."""
        deadline = time.monotonic() + timeout
        pause = min(0.005, poll)
        while True:
            if self.exited():
                raise exited(self._kill_and_reap())  # and whatever it left behind
            found = probe()
            if found is not None:
                return found
            if time.monotonic() > deadline:
                raise timed_out()
            time.sleep(pause)
            pause = min(pause * 2, poll)

    def stop(self, grace: float = 10.0) -> int:
        """SIGTERM the process group, SIGKILL it after ``grace`` seconds; reap the leader.  Its exit code."""
        try:
            if not self.reaped:
                self._signal_group(signal.SIGTERM)
                deadline = time.monotonic() + grace
                pause = 0.002  # most servers are gone within milliseconds
                while not self.exited() and time.monotonic() < deadline:
                    time.sleep(pause)
                    pause = min(pause * 2, 0.05)
        finally:  # a second Ctrl-C skips the grace period
            self._kill_and_reap()
            lifetime.unwatch(self.watcher)
            self.watcher = None
        return self.process.returncode

    def _kill_and_reap(self) -> int:
        """SIGKILL what is left of the group, then reap the leader (once: a reaped leader's group id
        is no longer ours to signal)."""
        if not self.reaped:
            self._signal_group(signal.SIGKILL)
            self.process.wait()
            self.reaped = True
        return self.process.returncode

    def _signal_group(self, sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, sig)


class ServiceHolder:
    """The process facts of a handle holding its ``service`` (llama-server's and rpc-server's)."""
    service: Service

    @property
    def pid(self) -> int:
        return self.service.pid

    @property
    def argv(self) -> list[str]:
        return self.service.argv

    @property
    def log_path(self) -> Path:
        return self.service.log_path

    @property
    def process(self) -> Process:
        return self.service.process


@contextlib.contextmanager
def service(
    argv: Sequence[str | os.PathLike[str]],
    *,
    log_path: Path,
    env: Mapping[str, str] | None = None,
    grace: float = 10.0,
    restore_signals: bool = True,
) -> Iterator[Service]:
    """Start a long-running child (echoed, output appended to ``log_path``, no secrets in its
    environment: ``child_env``), yield it, and stop its group on the way out (``Service.stop``).

    It runs in a session of its own and dies with the harness, even on SIGKILL (harness/lifetime.py).
    ``restore_signals=False`` keeps the signals Python ignores (SIGPIPE) ignored in the child.
    """
    args = [os.fspath(a) for a in argv]
    log_path.parent.mkdir(parents=True, exist_ok=True)
    console.echo_command(args)
    with open(log_path, "ab") as log:
        log.write(("+ " + shlex.join(args) + "\n").encode())
        log.flush()
        try:
            proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                    env=child_env(env, args[0]), start_new_session=True,
                                    restore_signals=restore_signals, preexec_fn=lifetime.preexec())
        except OSError as exc:
            raise InputError(f"cannot run {args[0]}: {exc.strerror}") from None
    svc = Service(args, log_path, proc)
    try:
        svc.watcher = lifetime.watch(proc.pid)
        yield svc
    finally:
        svc.stop(grace)


def log_tail(path: Path, lines: int = TAIL_LINES) -> str:
    """The last ``lines`` lines of a log file ("" when there is none)."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return "\n".join(line.rstrip("\n") for line in collections.deque(f, maxlen=lines))
    except FileNotFoundError:
        return ""


def _tail_text(text: str, lines: int = TAIL_LINES) -> str:
    return "\n".join(text.rstrip().splitlines()[-lines:])
