"""rpc-server endpoints (``host:port[@stamp]``) and the check made before llama-server gets ``--rpc``.

An endpoint is used only when it is reachable, answers rpc-server's HELLO with the wire
protocol of the head's build (the manifest's ``rpc.protocol``), is not serving another
client, and runs the same llama.cpp commit and stack as the head's build.  The wire tells
no commit (HELLO carries the protocol version only; rpc-server links ggml alone and has no
``--version``), so the commit is checked one of two ways:

- **registry**: ``harness rpc-server`` records each server it runs in ``<cache>/rpc/`` (pid,
  binary, and its build's stamp, patched commit and lock digest).  An endpoint on this
  machine whose port has a live entry (the pid runs that binary) is compared with it;
- **stamp**: on another machine, ``harness rpc-server`` prints ``--rpc HOST:PORT@STAMP``,
  STAMP being its build's ``LLAMA_BUILD_COMMIT`` (``0c1e570+stack.61bf57a5``: upstream
  commit and lock digest).  The head compares that stamp with its own build's.

An endpoint with neither is refused unless ``unverified`` (then only the protocol is checked).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness import atomic, paths
from harness.errors import InputError, StepError
from harness.hosts import STAMP, Endpoint, is_loopback
from harness.serve.rpc import protocol
from harness.serve.rpc.protocol import Device

if TYPE_CHECKING:
    from harness.build.manifest import Manifest

def flags(endpoints: Sequence[Endpoint]) -> list[str]:
    """llama-server's ``--rpc`` (common/arg.cpp): one comma list of host:port."""
    return ["--rpc", ",".join(e.address for e in endpoints)] if endpoints else []


# --- what a build is -------------------------------------------------------------------


@dataclass(frozen=True)
class BuildId:
    """The llama.cpp a build runs, from its manifest: what the head and an rpc-server must share."""

    stamp: str  # LLAMA_BUILD_COMMIT: 0c1e570+stack.61bf57a5
    patched_commit: str | None
    base: str | None  # the upstream commit
    lock_digest: str | None  # the stack
    protocol: str | None  # RPC wire protocol, None when built without RPC
    root: str

    @classmethod
    def from_manifest(cls, root: Path, manifest: Manifest) -> BuildId:
        return cls(stamp=manifest.stamp.commit, patched_commit=manifest.patched_commit, base=manifest.base,
                   lock_digest=manifest.lock_digest or None, protocol=manifest.rpc.protocol if manifest.rpc else None,
                   root=str(root))

    def to_json(self) -> dict[str, Any]:
        return {"stamp": self.stamp, "patched_commit": self.patched_commit, "base": self.base,
                "lock_digest": self.lock_digest, "protocol": self.protocol, "root": self.root}


def mismatch(head: BuildId, there: BuildId | str) -> str | None:
    """What differs between the head's build and an rpc-server's (a BuildId, or only its stamp); None if nothing."""
    if isinstance(there, BuildId):
        if head.patched_commit and head.patched_commit == there.patched_commit:
            return None
        if head.base and there.base and head.base != there.base:
            return f"llama.cpp commit {there.base[:12]} there, {head.base[:12]} on the head"
        if head.lock_digest != there.lock_digest:
            return f"stack (lock digest) {str(there.lock_digest)[:8]} there, {str(head.lock_digest)[:8]} on the head"
        return f"patched commit {str(there.patched_commit)[:12]} there, {str(head.patched_commit)[:12]} on the head"
    theirs, ours = STAMP.match(there), STAMP.match(head.stamp)
    if theirs is None or ours is None:
        return None if there == head.stamp else f"build stamp {there} there, {head.stamp} on the head"
    a, b = theirs["commit"], ours["commit"]
    if not (a.startswith(b) or b.startswith(a)):
        return f"llama.cpp commit {a} there, {b} on the head"
    sa, sb = theirs["stack"] or "", ours["stack"] or ""
    if not (sa == sb or (sa and sb and (sa.startswith(sb) or sb.startswith(sa)))):
        return f"stack {'+stack.' + sa if sa else '(none)'} there, {'+stack.' + sb if sb else '(none)'} on the head"
    return None


# --- the registry of rpc-servers this machine runs ---------------------------------------


def registry_dir() -> Path:
    return paths.cache_dir("rpc")


def register(host: str, port: int, pid: int, binary: Path, build: BuildId, log: Path) -> Path:
    """Record a running rpc-server (see the module docstring); returns the entry's path."""
    entry = registry_dir() / f"{host}_{port}.json"
    atomic.write_json(entry, {"host": host, "port": port, "pid": pid, "binary": str(binary.resolve()),
                              "log": str(log), "started": time.time(), "build": build.to_json()})
    return entry


def unregister(entry: Path, pid: int) -> None:
    """Remove the entry if it is still this pid's (another server may have taken the port since)."""
    with contextlib.suppress(OSError, ValueError):
        if json.loads(entry.read_text()).get("pid") == pid:
            entry.unlink()


def registered(ep: Endpoint) -> tuple[int, BuildId] | None:
    """The pid and build of a live harness rpc-server serving ``ep`` on this machine, or None."""
    if not _is_local(ep.host):
        return None
    for path in sorted(registry_dir().glob(f"*_{ep.port}.json")):
        try:
            entry = json.loads(path.read_text())
            bound, pid, binary = str(entry["host"]), int(entry["pid"]), str(entry["binary"])
            build = BuildId(**entry["build"])
        except (OSError, ValueError, KeyError, TypeError):  # not an entry this harness wrote: ignore it
            continue
        if bound not in ("0.0.0.0", ep.host) and not (is_loopback(bound) and is_loopback(ep.host)):
            continue
        if _runs(pid, binary):
            return pid, build
    return None


def _runs(pid: int, binary: str) -> bool:
    """Whether ``pid`` is alive and (where /proc tells) runs ``binary``."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    exe = Path(f"/proc/{pid}/exe")
    if not exe.parent.exists():
        return True
    try:
        return os.readlink(exe).removesuffix(" (deleted)") == binary
    except OSError:
        return False


def _is_local(host: str) -> bool:
    """Whether ``host`` is an address of this machine (we can bind it)."""
    if is_loopback(host):
        return True
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind((host, 0))
        return True
    except OSError:
        return False


# --- the check -------------------------------------------------------------------------


@dataclass(frozen=True)
class Checked:
    """An endpoint that passed: what it said and how its llama.cpp commit was checked."""

    endpoint: Endpoint
    protocol: str
    devices: tuple[Device, ...]
    verified: str  # "registry", "stamp" or "unverified"
    build: dict[str, Any] | None  # the rpc-server's build (registry) or {"stamp": ...}

    def to_json(self) -> dict[str, Any]:
        return {"endpoint": self.endpoint.address, "protocol": self.protocol,
                "devices": [d.to_json() for d in self.devices], "verified": self.verified, "build": self.build}


def check(endpoints: Sequence[Endpoint], head: BuildId, *, unverified: bool = False,
          timeout: float = 5.0) -> list[Checked]:
    """Every endpoint checked (see the module docstring); all problems at once.

    Raises StepError when one is unreachable, busy or not an rpc-server (exit 1), InputError
    when one runs another protocol, commit or stack, or cannot be verified (exit 2)."""
    if head.protocol is None:
        raise InputError(f"the head's build {head.root} has no RPC backend: its llama-server refuses --rpc",
                         hint="set build.rpc: true in the recipe and run harness build")
    down: list[str] = []
    wrong: list[str] = []
    unknown: list[str] = []
    passed: list[Checked] = []
    for ep in endpoints:
        try:
            said = protocol.hello(ep.host, ep.port, timeout=timeout)
        except (protocol.Unreachable, protocol.Busy, protocol.HandshakeFailed) as exc:
            down.append(str(exc))
            continue
        if said.protocol != head.protocol:
            wrong.append(f"{ep.address}: RPC protocol {said.protocol}, the head's build speaks {head.protocol}")
            continue
        entry = registered(ep)
        how, build, differs = "unverified", None, None
        if entry is not None:
            pid, there = entry
            how, build, differs = "registry", {**there.to_json(), "pid": pid}, mismatch(head, there)
            if ep.stamp and not differs:
                differs = mismatch(head, ep.stamp)
        elif ep.stamp:
            how, build, differs = "stamp", {"stamp": ep.stamp}, mismatch(head, ep.stamp)
        elif not unverified:
            unknown.append(ep.address)
            continue
        if differs:
            wrong.append(f"{ep.address}: {differs}")
            continue
        passed.append(Checked(ep, said.protocol, said.devices, how, build))
    if down or wrong or unknown:
        lines = [f"refusing --rpc ({len(endpoints) - len(passed)} of {len(endpoints)} endpoints):"]
        lines += [f"  {line}" for line in down + wrong]
        lines += [f"  {a}: cannot tell which llama.cpp it runs (rpc-server's handshake carries only its protocol "
                  f"version, {head.protocol})" for a in unknown]
        hints = []
        if unknown or wrong:
            hints.append(f"the head's build is {head.stamp}; on each rpc host run `harness rpc-server RECIPE` of the "
                         f"same recipe and lock, and pass the --rpc HOST:PORT@STAMP it prints"
                         + ("; or --rpc-unverified to rely on the protocol check alone" if unknown else ""))
        if down:
            hints.append("start it with `harness rpc-server RECIPE --port N` (or check the address, the port, "
                         "the tunnel)")
        error = StepError if down else InputError
        raise error("\n".join(lines), hint="\n".join(hints))
    return passed
