"""Hostile rpc peers: the endpoint check ends within its one deadline, whatever the peer does.

A peer that answers one byte every 0.2 s stays under the per-read timeout forever; the check
used to sit in it for minutes (256 device queries of 16 bytes).  A peer claiming a million
devices is refused at once.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from harness.serve.rpc import protocol


def _peer(behaviour: Callable[[socket.socket], None]) -> Iterator[int]:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    stop = threading.Event()

    def serve() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            with conn, contextlib.suppress(OSError):
                behaviour(conn)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    stop.set()
    thread.join()
    server.close()


def _recv(conn: socket.socket, n: int) -> bytes:
    data = conn.recv(n)
    if not data:
        raise ConnectionResetError  # the client gave up
    return data


def _read_request(conn: socket.socket) -> None:
    head = b""
    while len(head) < 9:
        head += _recv(conn, 9 - len(head))
    size = struct.unpack("<Q", head[1:])[0]
    while size:
        size -= len(_recv(conn, size))


def _hello(conn: socket.socket) -> None:
    _read_request(conn)
    conn.sendall(struct.pack("<Q", 4 + protocol.CONN_CAPS_SIZE) + bytes([7, 0, 0, 0]) + bytes(protocol.CONN_CAPS_SIZE))


def _drip(conn: socket.socket) -> None:
    """Answers HELLO, claims 256 devices, then answers each query one byte every 0.2 s."""
    _hello(conn)
    _read_request(conn)
    conn.sendall(struct.pack("<Q", 4) + struct.pack("<I", 256))
    while True:
        _read_request(conn)
        for byte in struct.pack("<Q", 16) + bytes(16):
            conn.sendall(bytes([byte]))
            time.sleep(0.2)


def _drip_hello(conn: socket.socket) -> None:
    _read_request(conn)
    for byte in struct.pack("<Q", 4 + protocol.CONN_CAPS_SIZE) + bytes(4 + protocol.CONN_CAPS_SIZE):
        conn.sendall(bytes([byte]))
        time.sleep(0.2)


def _million(conn: socket.socket) -> None:
    _hello(conn)
    _read_request(conn)
    conn.sendall(struct.pack("<Q", 4) + struct.pack("<I", 1_000_000))
    conn.recv(1)  # until the client closes


@pytest.mark.parametrize("behaviour", [_drip, _drip_hello], ids=["device-queries", "hello"])
def test_a_dripping_peer_is_cut_off_at_the_deadline(behaviour: Callable[[socket.socket], None]) -> None:
    for port in _peer(behaviour):
        t0 = time.monotonic()
        with pytest.raises((protocol.HandshakeFailed, protocol.Busy)):
            protocol.hello("127.0.0.1", port, timeout=2.0)
        assert time.monotonic() - t0 < 3.0


def test_a_peer_claiming_a_million_devices_is_refused() -> None:
    for port in _peer(_million):
        t0 = time.monotonic()
        with pytest.raises(protocol.HandshakeFailed, match="claims 1000000 devices"):
            protocol.hello("127.0.0.1", port, timeout=2.0)
        assert time.monotonic() - t0 < 1.0
