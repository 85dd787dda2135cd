"""One rpc-server process: its command line, its start (ready once it answers HELLO) and its stop.

rpc-server's flags (tools/rpc/rpc-server.cpp at 0c1e570): ``-H/--host`` (IPv4 only, default
127.0.0.1), ``-p/--port`` (default 50052), ``-t/--threads``, ``-d/--device``, ``-c/--cache``
(local file cache under ``$LLAMA_CACHE/rpc``).  Older trees also had ``-m/--mem`` (MiB
offered); at 0c1e570 it is gone and the server offers its devices' free memory, so ``mem``
is passed only where ``--help`` lists it.  It prints ``Starting RPC server vX.Y.Z``, the
endpoint and its devices on stdout, and "Accepted client connection" per client.

It runs as a service of harness/runner.py: in a session of its own (Ctrl-C in the terminal does
not reach it), stopped as a group on the way out: SIGTERM, SIGKILL after a grace period.
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
import re
import shlex
import socket
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from harness import runner
from harness.errors import InputError, StepError
from harness.serve.rpc import protocol


@dataclass
class RpcServer(runner.ServiceHolder):
    host: str
    port: int
    hello: protocol.Hello
    service: runner.Service = field(repr=False, compare=False)

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


@contextlib.contextmanager
def running(argv: list[str], host: str, port: int, *, log_path: Path | None = None, ready_timeout: float = 60.0,
            env: dict[str, str] | None = None, grace: float = 5.0) -> Iterator[RpcServer]:
    """Start ``argv`` (from ``command``), yield it once it answers HELLO, stop its group on the way out."""
    if not port_free(host, port):
        raise InputError(f"{host}:{port} is in use (another rpc-server?)", hint="pick another --port, or --port 0 for a free one")
    if log_path is None:
        log_path = Path(tempfile.mkdtemp(prefix="harness-rpc-")) / "rpc-server.log"
    # restore_signals=False: SIGPIPE stays ignored in rpc-server (see the module docstring)
    with runner.service(argv, log_path=log_path, env=env, grace=grace, restore_signals=False) as service:
        said = _wait_ready(service, host, port, ready_timeout)
        yield RpcServer(host, port, said, service)


def _wait_ready(service: runner.Service, host: str, port: int, timeout: float) -> protocol.Hello:
    connect = "127.0.0.1" if host == "0.0.0.0" else host

    def hello() -> protocol.Hello | None:
        try:
            return protocol.hello(connect, port, timeout=2.0)
        except protocol.Unreachable:
            return None

    def output() -> str:
        return f"  output (last lines):\n{_indent(runner.log_tail(service.log_path, 15))}\n  full log: {service.log_path}"

    return service.wait_ready(
        hello, timeout=timeout, poll=0.1,
        exited=lambda code: StepError(f"rpc-server exited (code {code}) before answering on {host}:{port}: "
                                      f"{shlex.join(service.argv)}\n{output()}"),
        timed_out=lambda: StepError(f"rpc-server did not answer on {host}:{port} within {timeout:.0f}s\n{output()}"))


def _indent(text: str) -> str:
    return "\n".join("    " + line for line in text.splitlines())
