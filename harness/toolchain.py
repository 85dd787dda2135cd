"""Versions of the tools a build depends on (part of its identity, recorded in the manifest)."""

from __future__ import annotations

import os
import shutil
from typing import TYPE_CHECKING

from harness import runner

if TYPE_CHECKING:
    from harness import isa


def first_line(argv: list[str]) -> str:
    out = version_text(argv).splitlines()
    return out[0].strip() if out else "unknown"


def version_text(argv: list[str]) -> str:
    res = runner.run(argv, check=False)
    return (res.stdout or res.stderr).strip()


def c_compiler() -> str:
    """The C compiler CMake will pick: ``$CC``, else ``cc`` on PATH."""
    return os.environ.get("CC") or shutil.which("cc") or "cc"


def cxx_compiler() -> str:
    return os.environ.get("CXX") or shutil.which("c++") or "c++"


def versions(cmake: str, ninja: str) -> dict[str, str]:
    return {
        "cmake": first_line([cmake, "--version"]),
        "ninja": first_line([ninja, "--version"]),
        "cc": first_line([c_compiler(), "--version"]),
        "c++": first_line([cxx_compiler(), "--version"]),
    }


def compiler() -> isa.Compiler:
    """The C compiler's family and version (``isa.Compiler``), from its full ``--version`` text."""
    from harness import isa

    cc = c_compiler()
    return isa.detect_compiler(version_text([cc, "--version"]), cc)
