"""Versions of the tools a build depends on (part of its identity, recorded in the manifest).

Asking ``cmake``, ``ninja``, ``cc`` and ``c++`` for ``--version`` costs a few tens of
milliseconds each, on every build.  The answers are cached in
``<cache>/toolchain-versions.json``, keyed on the program as invoked and the resolved
path, size and mtime of what it runs: a reinstalled or upgraded compiler (or ``cc``
pointed at another one) is asked again.  The cache is written atomically; a lost update only means asking again.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from harness.build import isa

CACHE_NAME = "toolchain-versions.json"


def first_line(argv: list[str]) -> str:
    """The first line a program prints (stdout, else stderr), uncached; ``unknown`` when silent."""
    from harness import runner

    res = runner.run(argv, check=False)
    out = (res.stdout or res.stderr).strip().splitlines()
    return out[0].strip() if out else "unknown"


def _text(argv: list[str]) -> str:
    from harness import runner

    res = runner.run(argv, check=False)
    return (res.stdout or res.stderr).strip()


def compilers() -> dict[str, str]:
    """The C and C++ compilers CMake will pick: ``$CC``/``$CXX``, else ``cc``/``c++`` on PATH."""
    return {
        "cc": os.environ.get("CC") or shutil.which("cc") or "cc",
        "c++": os.environ.get("CXX") or shutil.which("c++") or "c++",
    }


def stat_key(program: str) -> dict[str, Any] | None:
    """What identifies an installed program without running it: resolved path, size, mtime (None: not found)."""
    path = program if os.sep in program else shutil.which(program)
    if not path:
        return None
    try:
        real = os.path.realpath(path)
        st = os.stat(real)
    except OSError:
        return None
    return {"path": real, "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def version(program: str, *args: str) -> str:
    """``first_line([program, *args])``, cached on the program's path, size and mtime."""
    text = version_text(program, *args)
    return text.splitlines()[0].strip() if text else "unknown"


def version_text(program: str, *args: str) -> str:
    """Everything ``program --version`` prints (stdout, else stderr), cached like ``version``."""
    args = args or ("--version",)
    key = stat_key(program)
    if key is None:
        return _text([program, *args])
    cache_file = _cache_file()
    cache = _read(cache_file)
    # keyed on the name as invoked too: `cc --version` and `gcc --version` print their own argv[0]
    slot = "\0".join([program, *args])
    entry = cache.get(slot)
    if isinstance(entry, dict) and {k: entry.get(k) for k in key} == key and "text" in entry:
        return str(entry["text"])
    found = _text([program, *args])
    cache[slot] = {**key, "text": found}
    from harness import atomic

    atomic.write_json(cache_file, cache)
    return found


def versions(cmake: str, ninja: str) -> dict[str, str]:
    tools = {"cmake": cmake, "ninja": ninja, **compilers()}
    return {name: version(path) for name, path in tools.items()}


def compiler() -> isa.Compiler:
    """The C compiler's family and version (``isa.Compiler``), from its full ``--version`` text
    (gcc's first line may just say ``cc``: its copyright line tells)."""
    from harness.build import isa

    cc = compilers()["cc"]
    return isa.detect_compiler(version_text(cc), cc)


def _cache_file() -> Path:
    from harness import paths

    return paths.cache_root() / CACHE_NAME


def _read(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}
