"""Host names and addresses as llama-server and rpc-server endpoints use them, and the endpoint
syntax (``host:port[@stamp]``) that recipes (``serve.rpc``) and ``--rpc`` share."""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Iterable
from dataclasses import dataclass

from harness.errors import InputError


def is_loopback(host: str) -> bool:
    """``localhost`` or a loopback address (127.0.0.0/8, ::1)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on at ``host`` now (IPv4 or IPv6), for a server about to start there."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


_ENDPOINT = re.compile(r"^(?P<host>[A-Za-z0-9][A-Za-z0-9.-]*):(?P<port>\d{1,5})(?:@(?P<stamp>\S+))?$")
STAMP = re.compile(r"^(?P<commit>[0-9a-f]{7,40})(?:\+stack\.(?P<stack>[0-9a-f]{8,64}))?$")


@dataclass(frozen=True)
class Endpoint:
    host: str
    port: int
    stamp: str | None = None  # the rpc host's build stamp, as its harness rpc-server printed it

    @property
    def address(self) -> str:
        """``host:port``, as llama-server's ``--rpc`` takes it."""
        return f"{self.host}:{self.port}"

    def __str__(self) -> str:
        return self.address + (f"@{self.stamp}" if self.stamp else "")


def parse(text: str) -> Endpoint:
    """``host:port[@stamp]``; a ValueError says what is wrong.  IPv4 or a host name only:
    ggml-rpc's transport (transport.cpp) opens AF_INET sockets and splits at the first ':'."""
    text = text.strip()
    match = _ENDPOINT.match(text)
    if match is None:
        if text.count(":") > 1 or text.startswith("["):
            raise ValueError(f"{text!r}: rpc-server speaks IPv4 only (ggml-rpc's transport); use an IPv4 address or host name")
        raise ValueError(f"{text!r} is not host:port (e.g. 127.0.0.1:50052, or 10.0.0.2:50052@0c1e570+stack.61bf57a5)")
    port = int(match["port"])
    if not 0 < port < 65536:
        raise ValueError(f"{text!r}: port {port} is out of range")
    stamp = match["stamp"]
    if stamp is not None and not STAMP.match(stamp):
        raise ValueError(f"{text!r}: {stamp!r} is not a build stamp (COMMIT or COMMIT+stack.DIGEST, as harness "
                         "rpc-server prints it)")
    return Endpoint(match["host"], port, stamp)


def parse_list(values: Iterable[str]) -> list[Endpoint]:
    """Endpoints from ``--rpc a,b`` and recipe lists; an InputError names the bad one; no duplicates."""
    found: list[Endpoint] = []
    for value in values:
        for part in value.split(","):
            if not part.strip():
                continue
            try:
                ep = parse(part)
            except ValueError as exc:
                raise InputError(f"--rpc: {exc}") from None
            if any(e.address == ep.address for e in found):
                raise InputError(f"--rpc: {ep.address} is listed twice")
            found.append(ep)
    return found
