"""The client side of rpc-server's handshake, to check an endpoint before llama-server uses it.

Wire format (ggml/src/ggml-rpc/ggml-rpc.cpp at 0c1e570, protocol 7.0.0; little-endian,
packed): a request is ``cmd (u8) | size (u64) | payload``, a response ``size (u64) |
payload``.  The first command on a connection must be HELLO (14, fixed across versions):
its payload is the client's transport capabilities (24 bytes, zeros: plain TCP, no RDMA),
its answer ``major, minor, patch, pad (u8 each) | caps (24 bytes)``.  Then DEVICE_COUNT
(15; answer u32) and GET_DEVICE_MEMORY (11; payload u32 device; answer u64 free, u64 total).

rpc-server serves one client at a time (its accept loop calls ``rpc_serve_client`` inline),
so a server already serving a llama-server accepts the TCP connection but never answers
HELLO: that is reported as :class:`Busy`, where llama-server itself would wait forever.
A probe that gives up on a busy server leaves its HELLO queued: the server reads it when
its current client leaves and answers into a closed socket.  rpc-servers started by
``harness rpc-server`` survive that (SIGPIPE ignored: harness/serve/rpc/process.py); one started by
hand dies of SIGPIPE then (ggml-rpc/transport.cpp writes without MSG_NOSIGNAL).
The handshake tells the protocol version, not the llama.cpp commit (see endpoints.py).

``timeout`` bounds the whole handshake of one endpoint (connect, HELLO, every device query),
not each read: a peer answering one byte every few seconds is cut off at the deadline.
"""

from __future__ import annotations

import socket
import struct
import time
from dataclasses import dataclass

from harness.errors import StepError

CMD_GET_DEVICE_MEMORY = 11
CMD_HELLO = 14
CMD_DEVICE_COUNT = 15
CONN_CAPS_SIZE = 24  # RPC_CONN_CAPS_SIZE, ggml/src/ggml-rpc/transport.h
SPOKEN_MAJOR = 7  # the HELLO layout above; other majors answer HELLO differently
MAX_DEVICES = 256  # a count beyond this is not a real server's answer


@dataclass(frozen=True)
class Device:
    index: int
    free: int  # bytes
    total: int  # bytes

    def to_json(self) -> dict[str, int]:
        return {"index": self.index, "free_mib": self.free >> 20, "total_mib": self.total >> 20}


@dataclass(frozen=True)
class Hello:
    """What an rpc-server told about itself."""

    protocol: str  # "7.0.0"
    devices: tuple[Device, ...]


class Unreachable(StepError):
    """Nothing answers at the endpoint (refused, no route, unknown host, timeout)."""


class Busy(StepError):
    """The endpoint accepted the connection but did not answer HELLO: serving another client."""


class HandshakeFailed(StepError):
    """Something answered, but not rpc-server's HELLO of a protocol this harness speaks."""


def hello(host: str, port: int, *, timeout: float = 5.0) -> Hello:
    """HELLO, then the device count and each device's memory; raises one of the errors above."""
    where = f"{host}:{port}"
    deadline = time.monotonic() + timeout
    try:
        sock = socket.create_connection((host, port), timeout=timeout)
    except socket.gaierror as exc:
        raise Unreachable(f"{where}: unknown host ({exc.strerror})") from None
    except TimeoutError:
        raise Unreachable(f"{where}: no answer to connect within {timeout:.0f}s") from None
    except OSError as exc:
        raise Unreachable(f"{where}: {exc.strerror or exc} (is rpc-server running there?)") from None
    with sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            payload = _call(sock, CMD_HELLO, bytes(CONN_CAPS_SIZE), None, deadline)
        except TimeoutError:
            raise Busy(f"{where}: accepted the connection but did not answer HELLO within {timeout:.0f}s; "
                       "rpc-server serves one client at a time, so another one (a llama-server?) holds it") from None
        except _Closed as exc:
            raise HandshakeFailed(f"{where}: {exc} during HELLO (an rpc-server of another protocol version, "
                                  "or not an rpc-server)") from None
        if len(payload) != 4 + CONN_CAPS_SIZE:
            if len(payload) >= 3:
                major, minor, patch = payload[:3]
                return Hello(f"{major}.{minor}.{patch}", ())
            raise HandshakeFailed(f"{where}: a {len(payload)}-byte answer to HELLO is not rpc-server's")
        major, minor, patch = payload[0], payload[1], payload[2]
        version = f"{major}.{minor}.{patch}"
        if major != SPOKEN_MAJOR:
            return Hello(version, ())
        try:
            (count,) = struct.unpack("<I", _call(sock, CMD_DEVICE_COUNT, b"", 4, deadline))
            if count > MAX_DEVICES:
                raise HandshakeFailed(f"{where}: claims {count} devices")
            devices = []
            for index in range(count):
                free, total = struct.unpack("<QQ", _call(sock, CMD_GET_DEVICE_MEMORY, struct.pack("<I", index), 16,
                                                  deadline))
                devices.append(Device(index, free, total))
        except (TimeoutError, _Closed) as exc:
            raise HandshakeFailed(f"{where}: answered HELLO (protocol {version}) but not the device queries: "
                                  f"{exc or f'not within {timeout:.0f}s'}") from None
    return Hello(version, tuple(devices))


class _Closed(Exception):
    pass


def _call(sock: socket.socket, cmd: int, payload: bytes, expect: int | None, deadline: float) -> bytes:
    """One request and its answer; ``expect`` the answer's size (None: whatever HELLO sends, bounded)."""
    try:
        _until(sock, deadline)
        sock.sendall(struct.pack("<BQ", cmd, len(payload)) + payload)
    except ConnectionError as exc:
        raise _Closed(f"connection closed ({exc.strerror})") from None
    (size,) = struct.unpack("<Q", _recv(sock, 8, deadline))
    if (expect is not None and size != expect) or size > 4096:
        raise _Closed(f"an answer of {size} bytes to command {cmd}")
    return _recv(sock, size, deadline)


def _until(sock: socket.socket, deadline: float) -> None:
    """The socket's timeout set to what is left of the handshake's deadline (TimeoutError when none)."""
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError
    sock.settimeout(left)


def _recv(sock: socket.socket, n: int, deadline: float) -> bytes:
    data = b""
    while len(data) < n:
        try:
            _until(sock, deadline)
            chunk = sock.recv(n - len(data))
        except ConnectionError as exc:
            raise _Closed(f"connection reset ({exc.strerror})") from None
        if not chunk:
            raise _Closed("the server closed the connection")
        data += chunk
    return data
