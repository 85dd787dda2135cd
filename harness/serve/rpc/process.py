"""One rpc-server process: its command line, its start (ready once it answers HELLO) and its stop.

rpc-server's flags (tools/rpc/rpc-server.cpp at 0c1e570): ``-H/--host`` (IPv4 only, default
127.0.0.1), ``-p/--port`` (default 50052), ``-t/--threads``, ``-d/--device``, ``-c/--cache``
(local file cache under ``$LLAMA_CACHE/rpc``).  Older trees also had ``-m/--mem`` (MiB
offered); at 0c1e570 it is gone and the server offers its devices' free memory, so ``mem``
is passed only where ``--help`` lists it.  It prints ``Starting RPC server vX.Y.Z``, the
endpoint and its devices on stdout, and "Accepted client connection" per client.

It starts in a session of its own (Ctrl-C in the terminal does not reach it) and is
stopped as a group by ``harness.serve.server.stop``: SIGTERM, SIGKILL after a grace period.
A server that cannot bind its port prints "Failed to create server socket" and exits 0,
so readiness is the HELLO answer, never the exit code.

SIGPIPE stays ignored in it (Python ignores it; ``restore_signals=False`` keeps that across
exec).  rpc-server writes with plain ``send()`` (ggml-rpc/transport.cpp, no MSG_NOSIGNAL), so
a client that leaves before its answer is written (llama-server aborting, a handshake probe
that gave up on a busy server) kills an rpc-server with the default disposition by SIGPIPE;
ignored, the write fails, rpc-server drops that client and accepts the next.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from harness import console, runner
from harness.errors import InputError, StepError
from harness.serve import server
from harness.serve.rpc import protocol


@dataclass
class RpcServer:
    host: str
    port: int
    pid: int
    argv: list[str]
    log_path: Path
    hello: protocol.Hello
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False, compare=False)

    @property
    def endpoint(self) -> str:
        return f"{self.host}:{self.port}"


def has_mem_flag(binary: Path) -> bool:
    """Whether this rpc-server takes ``-m/--mem`` (removed upstream; see the module docstring)."""
    res = runner.run([binary, "--help"], check=False, timeout=30)
    return bool(re.search(r"(^|\s)--mem\b", res.stdout + res.stderr))


def command(binary: Path, host: str, port: int, *, threads: int | None = None, devices: str | None = None,
            cache: bool = False, mem: int | None = None, extra: Sequence[str] = ()) -> list[str]:
    argv = [str(binary), "--host", host, "--port", str(port)]
    if threads:
        argv += ["--threads", str(threads)]
    if devices:
        argv += ["--device", devices]
    if cache:
        argv += ["--cache"]
    if mem is not None:
        argv += ["--mem", str(mem)]
    return [*argv, *extra]


def port_free(host: str, port: int) -> bool:
    """Whether ``host:port`` can be bound the way rpc-server binds it (SO_REUSEADDR)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


@contextlib.contextmanager
def running(argv: list[str], host: str, port: int, *, log_path: Path | None = None, ready_timeout: float = 60.0,
            env: dict[str, str] | None = None, grace: float = 5.0) -> Iterator[RpcServer]:
    """Start ``argv`` (from ``command``), yield it once it answers HELLO, stop its group on the way out."""
    if not port_free(host, port):
        raise InputError(f"{host}:{port} is in use (another rpc-server?)", hint="pick another --port, or --port 0 for a free one")
    if log_path is None:
        log_path = Path(tempfile.mkdtemp(prefix="harness-rpc-")) / "rpc-server.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    from harness import lifetime, runner

    console.echo_command(argv)
    with open(log_path, "ab") as log:
        log.write(("+ " + shlex.join(argv) + "\n").encode())
        log.flush()
        try:
            # restore_signals=False: SIGPIPE stays ignored in rpc-server (see the module docstring);
            # no secrets in its environment, and it dies with the harness (harness/lifetime.py)
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                    env=runner.child_env(env, argv[0]), start_new_session=True,
                                    restore_signals=False, preexec_fn=lifetime.preexec())
        except OSError as exc:
            raise InputError(f"cannot run {argv[0]}: {exc.strerror}") from None
    watcher = None
    try:
        watcher = lifetime.watch(proc.pid)
        said = _wait_ready(proc, host, port, log_path, argv, ready_timeout)
        yield RpcServer(host, port, proc.pid, argv, log_path, said, proc)
    finally:
        server.stop(proc, grace)
        lifetime.unwatch(watcher)


def exited(proc: subprocess.Popen[bytes]) -> bool:
    """Whether the leader has exited, without reaping it (its group id stays ours until ``stop``)."""
    if proc.returncode is not None:
        return True
    if not hasattr(os, "waitid"):
        return proc.poll() is not None
    try:
        return os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:
        return True


def wait_exit(proc: subprocess.Popen[bytes], poll: float = 0.5) -> None:
    while not exited(proc):
        time.sleep(poll)


def _wait_ready(proc: subprocess.Popen[bytes], host: str, port: int, log_path: Path, argv: list[str],
                timeout: float) -> protocol.Hello:
    connect = "127.0.0.1" if host == "0.0.0.0" else host
    deadline = time.monotonic() + timeout
    while True:
        if exited(proc):
            code = proc.wait()
            raise StepError(f"rpc-server exited (code {code}) before answering on {host}:{port}: {shlex.join(argv)}\n"
                            f"  output (last lines):\n{_indent(server.log_tail(log_path, 15))}\n  full log: {log_path}")
        try:
            return protocol.hello(connect, port, timeout=2.0)
        except protocol.Unreachable:
            pass
        if time.monotonic() > deadline:
            raise StepError(f"rpc-server did not answer on {host}:{port} within {timeout:.0f}s\n"
                            f"  output (last lines):\n{_indent(server.log_tail(log_path, 15))}\n  full log: {log_path}")
        time.sleep(0.1)


def _indent(text: str) -> str:
    return "\n".join("    " + line for line in text.splitlines())
