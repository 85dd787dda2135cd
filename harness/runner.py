"""The one subprocess runner: every external command goes through ``run``.

argv lists only (never a shell), the command is echoed as ``+ <shell-quoted argv>``,
long output is streamed to a log file and a per-line callback (progress bars), and
a failure raises :class:`CommandFailed` holding the command, exit code and output tail.

Environment: children get ours without its secrets (``child_env``).  A variable is a
secret when its name matches one of ``SECRET_PATTERNS`` (shell globs, any case; the README
lists the same ones and a test holds them together): ``HF_TOKEN``, ``GITHUB_TOKEN``,
``LLAMA_API_KEY``, ``AWS_SECRET_ACCESS_KEY``, ``PGPASSWORD``, ``MYSQL_PWD``, ``GH_PAT``,
``OPENAI_KEY``; not ``TOKENIZERS_PARALLELISM``, ``PWD`` or ``SSH_AUTH_SOCK``.  None of
the tools we run needs one: cmake, ninja, compilers, llama.cpp's tools and llama-server
read none (the server's key goes in a file, harness/serve/server.py), and the model download
runs in this process (huggingface_hub reads HF_TOKEN itself).  git is the exception:
fetching a private repository may need the user's credentials, so git's network commands
keep the variables its credential helpers read (``GIT_*``, ``GH_*``, ``GITHUB_*``,
``GCM_*``: gh's helper reads ``GH_TOKEN``/``GITHUB_TOKEN``; ``SSH_AUTH_SOCK`` and
``GIT_ASKPASS`` are not secrets by name and always pass); its local commands get none
(harness/source/git.py builds git's environment from an allow-list and runs it through ``run_bytes``).

Long-running children (``stream``: ninja, cmake) run in a process group of their own; they are
stopped with SIGTERM to that group when we unwind (Ctrl-C, SIGTERM) and get SIGTERM when the
harness dies, even by SIGKILL (harness/lifetime.py), so ninja stops its compiles before it exits.
"""

from __future__ import annotations

import collections
import fnmatch
import os
import re
import shlex
import shutil
import signal
import subprocess
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from harness import console, lifetime
from harness.errors import CommandFailed, InputError

TAIL_LINES = 30

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
    set the rest on purpose, git.py's identity and date); git keeps what its credential helpers read."""
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


def _tail_text(text: str, lines: int = TAIL_LINES) -> str:
    return "\n".join(text.rstrip().splitlines()[-lines:])
