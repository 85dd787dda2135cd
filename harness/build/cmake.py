"""CMake + Ninja: the configure command (llama.cpp's release flags), and a build with progress."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from harness import console, runner
from harness.backends.base import Backend
from harness.build.isa import Plan
from harness.errors import InputError
from harness.recipe.schema import Build
from harness.serve.rpc import build as rpc_build

_STEP = re.compile(r"^\[(\d+)/(\d+)\] (.*)$")


@dataclass(frozen=True)
class Stamp:
    number: int  # LLAMA_BUILD_NUMBER: stack items applied on top of the upstream commit
    commit: str  # LLAMA_BUILD_COMMIT: e.g. 0c1e570+stack.1a2b3c4d


def program(name: str) -> str:
    """cmake / ninja: the ones installed with the harness (PyPI wheels) first, then PATH."""
    beside = Path(sys.executable).parent / name
    if beside.exists():
        return str(beside)
    return runner.which(name, purpose="to build llama.cpp (pip install cmake ninja)")


def cache_entries(
    build: Build, backend: Backend, stamp: Stamp, src: Path, bdir: Path, *, ccache: str | None, isa: Plan
) -> dict[str, str]:
    """Every -D entry, in order: release defaults, stamping, reproducibility, ccache, the CPU
    instruction-set policy (every backend: see harness/build/isa.py), RPC (harness/serve/rpc/build.py),
    backend, recipe."""
    entries: dict[str, str] = {
        "CMAKE_BUILD_TYPE": build.build_type,
        "BUILD_SHARED_LIBS": "ON",
        "LLAMA_BUILD_TESTS": "OFF",
        "LLAMA_BUILD_EXAMPLES": "OFF",
        "LLAMA_BUILD_TOOLS": "ON",
        "LLAMA_BUILD_SERVER": "ON",
        "LLAMA_USE_PREBUILT_UI": "OFF",  # no download at build time: hermetic, reproducible
        "CMAKE_INSTALL_RPATH": "$ORIGIN",
        "CMAKE_BUILD_WITH_INSTALL_RPATH": "ON",
        # executables load shared libraries at run time: a changed .so (say, a new stamp in
        # libllama-common) need not relink every tool
        "CMAKE_LINK_DEPENDS_NO_SHARED": "ON",
        "LLAMA_BUILD_NUMBER": str(stamp.number),
        "LLAMA_BUILD_COMMIT": stamp.commit,
        # ggml's CMakeLists asks git for the tree's commit (ggml-version.h, compiled into ggml.c)
        # whenever it finds git: every new patched commit recompiled ggml.c and relinked
        # libggml-base.  Without GIT_EXE ("OFF" is set, so find_program does not search) ggml
        # takes the commit CMake is given, the same as libllama's (harness/build/stamp.py).
        "GIT_EXE": "OFF",
        "GGML_BUILD_COMMIT": stamp.commit,
        "GGML_CCACHE": "OFF",  # ccache is set below as the launcher, for every language
    }
    # Source paths map to "." and generated files to build-dir-relative names, so binaries are
    # the same wherever they were built.  Plain compiles see absolute paths.  Under ccache
    # (CCACHE_BASEDIR = the cache root; build dirs sit beside src) the compiler sees ../src/...,
    # hence the third map.  Unity sources (llama.cpp builds src/ as unity files) #include
    # absolute paths whatever the launcher, so C/C++ always carry the absolute maps too; ccache
    # rewrites those for gcc/clang.  It does not rewrite nvcc's -Xcompiler=... arguments, so
    # under ccache CUDA gets only the relative map (no unity .cu files): same compile in another
    # tree, same command, a cache hit.
    # CMAKE_<LANG>_FLAGS is a command-line fragment that ninja hands to /bin/sh: a path with a
    # space or a non-ASCII character is quoted for it (plain paths stay as they are).
    absolute = [f"-ffile-prefix-map={src}=.", f"-ffile-prefix-map={bdir}/="]
    relative = ["-ffile-prefix-map=../src=."]
    entries["CMAKE_C_FLAGS"] = _flags(absolute + relative + list(isa.cflags))
    entries["CMAKE_CXX_FLAGS"] = _flags(absolute + relative + list(isa.cflags))
    langs = backend.launcher_languages()
    if "CUDA" in langs:
        entries["CMAKE_CUDA_FLAGS"] = _flags(f"-Xcompiler={m}" for m in (relative if ccache else absolute))
    if ccache:
        for lang in langs:
            entries[f"CMAKE_{lang}_COMPILER_LAUNCHER"] = ccache
    entries.update(isa.cmake)
    entries.update(rpc_build.cache_entries(build))
    entries.update(backend.cmake_args(build.options(backend.name)))
    for key, value in build.cmake_args.items():
        entries[key] = ("ON" if value else "OFF") if isinstance(value, bool) else str(value)
    return entries


# CMake itself (its own try_compile projects) breaks on these in the source or build path
_CMAKE_UNSAFE = re.compile(r"[\"'$`\\;\n\r]")


def check_paths(*paths: Path) -> None:
    """Refuse (exit 2) up front a source or build path CMake cannot build in; spaces, non-ASCII
    names and leading dashes are fine (``_flags`` quotes them)."""
    for path in paths:
        m = _CMAKE_UNSAFE.search(str(path))
        if m:
            raise InputError(f"{path}: CMake cannot build in a path with {m.group()!r} in it",
                             hint="set HARNESS_CACHE (or XDG_CACHE_HOME) to a path without it")


def _flags(flags: Iterable[str]) -> str:
    return " ".join(shlex.quote(f) for f in flags)


def configure_command(src: Path, bdir: Path, entries: Mapping[str, str], ninja: str, cmake: str) -> list[str]:
    return [cmake, "-S", str(src), "-B", str(bdir), "-G", "Ninja", f"-DCMAKE_MAKE_PROGRAM={ninja}",
            *[f"-D{k}={v}" for k, v in entries.items()]]


def build_command(bdir: Path, targets: list[str], ninja: str, jobs: int | None) -> list[str]:
    return [ninja, "-C", str(bdir), *([f"-j{jobs}"] if jobs else []), *targets]


def run_ninja(argv: list[str], log: Path, env: Mapping[str, str]) -> int:
    """Ninja with a progress bar fed by its ``[n/N]`` lines; returns the number of steps run."""
    steps = {"done": 0}
    interactive = console.err_console().is_terminal
    with Progress(
        TextColumn("[bold]build"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        TextColumn("{task.description}"), console=console.err_console(), transient=True, disable=not interactive,
    ) as progress:
        task = progress.add_task("", total=None)
        last_report = {"pct": -10}

        def on_line(line: str) -> None:
            m = _STEP.match(line)
            if not m:
                return
            n, total = int(m.group(1)), int(m.group(2))
            steps["done"] = n
            what = m.group(3).rsplit("/", 1)[-1][:50]
            progress.update(task, completed=n, total=total, description=console.literal(what))
            pct = 100 * n // max(total, 1)
            if not interactive and pct >= last_report["pct"] + 10:
                last_report["pct"] = pct - pct % 10
                console.info(f"  build [{n}/{total}] {pct}%")

        runner.stream(argv, log_path=log, env=env, on_line=on_line, append=True)
    return steps["done"]


# ccache leaves -ffile-prefix-map out of its hash, so an object compiled under another mapping
# would be served as is (and carry that mapping's file names).  The namespace keys the cache on
# this harness's mapping scheme: bump it whenever cache_entries' maps change.
CCACHE_NAMESPACE = "llama-harness-prefix-map-2"


def ccache_env(cache_root: Path) -> dict[str, str]:
    """Environment for compiles under ccache (see cache_entries for why both are needed)."""
    return {"CCACHE_BASEDIR": str(cache_root), "CCACHE_NAMESPACE": CCACHE_NAMESPACE}


def build_env(backend: Backend, source_date_epoch: int, cache_root: Path, *, ccache: str | None) -> dict[str, str]:
    """The environment configure and ninja run in: the backend's variables, the fixed
    SOURCE_DATE_EPOCH, and under ccache the settings cache_entries' path maps rely on."""
    env = {**os.environ, **backend.env(), "SOURCE_DATE_EPOCH": str(source_date_epoch)}
    if ccache:
        env.update(ccache_env(cache_root))
    return env


def ccache_program() -> str | None:
    return shutil.which("ccache")
