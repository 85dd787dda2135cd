"""The interface every build backend implements, and what detection reports.

A backend is one module here and one line in the registry (harness/backends/__init__.py).
Everything the rest of the harness needs to know about it is on this interface: its CMake
entries and toolchain, whether it runs on a GPU (llama-server's default ``-ngl``, the decode
smoke's offload), its recipe section ``build.<name>`` (a pydantic model the recipe schema
adds), the disk a build of it takes, and whether the no-op fast path of ``harness build``
may answer for it.  Nothing here imports the recipe: the backends sit below it.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict

MiB = 1 << 20
GiB = 1 << 30


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


class Options(BaseModel):
    """The base of a backend's recipe section ``build.<name>``: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass(frozen=True)
class DiskEstimate:
    """Upper bounds for the disk preflight (harness/build/disk.py), before anything exists to measure."""

    build_dir: int  # a fresh build directory (objects, libraries, binaries)
    published: int  # the published copy (bin/ and the converter)


class Backend(Protocol):
    name: str

    @property
    def gpu(self) -> bool:
        """Does it run layers on a GPU?  Then llama-server offloads every layer by default (``-ngl all``)
        and the decode smoke runs both offloaded and with the weights on the CPU."""
        ...

    @property
    def options(self) -> type[Options]:
        """Its recipe section ``build.<name>`` (the recipe schema adds one key per registered backend)."""
        ...

    @property
    def disk(self) -> DiskEstimate:
        ...

    @property
    def fast_path(self) -> bool:
        """May the no-op fast path (harness/build/uptodate.py) answer for its builds?  Only when every
        input of its identity is a file or a variable the fast path checks: no toolkit or driver asked."""
        ...

    def cmake_args(self, options: Any) -> dict[str, str]:
        """CMake cache entries this backend adds (on top of the common release flags), from its
        recipe section (an instance of ``options``)."""
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
