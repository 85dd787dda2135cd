"""Versions of the tools a build depends on (part of its identity, recorded in the manifest)."""

from __future__ import annotations

import os
import shutil

from harness import runner


def first_line(argv: list[str]) -> str:
    res = runner.run(argv, check=False)
    out = (res.stdout or res.stderr).strip().splitlines()
    return out[0].strip() if out else "unknown"


def versions(cmake: str, ninja: str) -> dict[str, str]:
    cc = os.environ.get("CC") or shutil.which("cc") or "cc"
    cxx = os.environ.get("CXX") or shutil.which("c++") or "c++"
    return {
        "cmake": first_line([cmake, "--version"]),
        "ninja": first_line([ninja, "--version"]),
        "cc": first_line([cc, "--version"]),
        "c++": first_line([cxx, "--version"]),
    }
