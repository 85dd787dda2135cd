"""Building with the RPC backend: ``build.rpc: true``.

``GGML_RPC=ON`` (ggml/CMakeLists.txt) builds ggml-rpc into ggml, so llama-server accepts
``--rpc``, and the rpc-server executable is added to the targets.  Its CMake target is
``ggml-rpc-server`` in tools/rpc/ at the pinned llama.cpp (0c1e570); older trees call it
``rpc-server`` (examples/rpc/), so the name is read from the tree being built.  The wire
protocol version (``RPC_PROTO_*_VERSION`` in ggml/include/ggml-rpc.h) goes into the
manifest: ``harness serve --rpc`` compares it with what each endpoint answers.
"""

from __future__ import annotations

import re
from pathlib import Path

from harness.recipe.schema import Build

DEFAULT_TARGET = "ggml-rpc-server"  # tools/rpc/CMakeLists.txt at 0c1e570
_TARGET_FILES = ("tools/rpc/CMakeLists.txt", "examples/rpc/CMakeLists.txt")
_SET_TARGET = re.compile(r"^\s*set\s*\(\s*TARGET\s+([A-Za-z0-9_.+-]+)\s*\)", re.MULTILINE)
_PROTO = re.compile(r"#define\s+RPC_PROTO_(MAJOR|MINOR|PATCH)_VERSION\s+(\d+)")


def server_target(src: Path | None) -> str:
    """The rpc-server's CMake target in the tree at ``src`` (DEFAULT_TARGET when unknown)."""
    for rel in _TARGET_FILES:
        path = src / rel if src is not None else None
        if path is not None and path.is_file():
            match = _SET_TARGET.search(path.read_text(encoding="utf-8", errors="replace"))
            if match:
                return match.group(1)
    return DEFAULT_TARGET


def targets(build: Build, src: Path | None) -> list[str]:
    """The recipe's targets, plus the rpc-server when ``build.rpc`` (once)."""
    names = list(build.targets)
    if build.rpc:
        target = server_target(src)
        if target not in names:
            names.append(target)
    return names


def smoke_checks(build: Build, checks: list[str]) -> list[str]:
    """``checks`` plus ``rpc`` (harness/smoke/rpc.py) for RPC builds wherever ``decode`` runs."""
    if build.rpc and "decode" in checks and "rpc" not in checks:
        return [*checks, "rpc"]
    return checks


def cache_entries(build: Build) -> dict[str, str]:
    """The CMake entries of ``build.rpc`` (none without it, so other builds keep their identity)."""
    return {"GGML_RPC": "ON"} if build.rpc else {}


def protocol(src: Path) -> str | None:
    """``major.minor.patch`` of the RPC wire protocol in the tree at ``src`` (ggml/include/ggml-rpc.h)."""
    header = src / "ggml" / "include" / "ggml-rpc.h"
    if not header.is_file():
        return None
    found = dict(_PROTO.findall(header.read_text(encoding="utf-8", errors="replace")))
    if set(found) != {"MAJOR", "MINOR", "PATCH"}:
        return None
    return f"{found['MAJOR']}.{found['MINOR']}.{found['PATCH']}"


def manifest_entry(build: Build, src: Path) -> dict[str, str | None] | None:
    """What the manifest records of the RPC build: the server binary's name and the protocol."""
    if not build.rpc:
        return None
    return {"server": server_target(src), "protocol": protocol(src)}
