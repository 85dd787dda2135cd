"""The interface every build backend implements, and what detection reports."""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from typing import Protocol

from harness.recipe.schema import Build


@dataclass(frozen=True)
class Tool:
    program: str
    purpose: str
    install: str  # how to get it


@dataclass(frozen=True)
class Detection:
    backend: str
    available: bool
    found: dict[str, str] = field(default_factory=dict)  # program -> path or version
    missing: list[Tool] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


class Backend(Protocol):
    name: str

    def cmake_args(self, build: Build) -> dict[str, str]:
        """CMake cache entries this backend adds (on top of the common release flags)."""
        ...

    def env(self) -> dict[str, str]:
        """Environment variables the configure step needs (e.g. HIPCXX)."""
        ...

    def tools(self) -> list[Tool]:
        """Programs the backend needs besides cmake, ninja and a C/C++ compiler."""
        ...

    def detect(self) -> Detection:
        """Can this machine build the backend?  What is found, what is missing."""
        ...

    def toolchain(self) -> dict[str, str]:
        """Versions of the backend's own toolchain (part of the build identity and manifest)."""
        ...

    def launcher_languages(self) -> list[str]:
        """Languages whose compiler ccache wraps (C, CXX, and e.g. CUDA)."""
        ...


def detect_tools(name: str, tools: list[Tool], found: dict[str, str] | None = None) -> Detection:
    found = dict(found or {})
    missing = []
    for tool in tools:
        path = shutil.which(tool.program)
        if path:
            found.setdefault(tool.program, path)
        else:
            missing.append(tool)
    return Detection(name, not missing, found, missing)
