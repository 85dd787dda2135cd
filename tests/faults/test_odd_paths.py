"""Paths with spaces, non-ASCII characters and leading dashes: the real CMake and ninja build with
the harness's flags (``-ffile-prefix-map`` of the source and build directories) and the object
carries the mapped names, not the absolute ones.  Before, a home directory with a space broke
every build (the flags went into CMAKE_C_FLAGS unquoted)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from harness import backends
from harness.build import cmake, isa, toolchain
from harness.recipe.schema import Build


@pytest.mark.skipif(shutil.which("cc") is None, reason="needs a C compiler")
@pytest.mark.parametrize("name", ["with space", "ünïcødé ✓", "-leading dash"])
def test_a_build_under_an_odd_path_works(tmp_path: Path, name: str) -> None:
    root = tmp_path / name
    src, bdir = root / "src", root / "build-cpu"
    src.mkdir(parents=True)
    (src / "CMakeLists.txt").write_text("cmake_minimum_required(VERSION 3.14)\nproject(odd C)\n"
                                        "add_library(odd STATIC odd.c)\n")
    (src / "odd.c").write_text('const char *where(void) { return __FILE__; }\n')
    plan = isa.plan(Build.model_validate({"cpu": {"variant": "portable"}}), toolchain.compiler())
    entries = cmake.cache_entries(Build(), backends.get("cpu"), cmake.Stamp(0, "-"), src, bdir, ccache=None, isa=plan)
    keep = {k: v for k, v in entries.items() if k in ("CMAKE_C_FLAGS", "CMAKE_BUILD_TYPE")}
    ninja, cmake_bin = cmake.program("ninja"), cmake.program("cmake")
    configure = cmake.configure_command(src, bdir, keep, ninja, cmake_bin)
    res = subprocess.run(configure, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr
    res = subprocess.run(cmake.build_command(bdir, ["odd"], ninja, None), capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr
    obj = next(bdir.rglob("odd.c.o")).read_bytes()
    assert b"./odd.c" in obj  # the source path mapped to "."
    assert str(src).encode() not in obj  # and not the absolute one


def test_plain_paths_keep_their_flags() -> None:
    """Quoting leaves plain paths alone: build identities (and ccache hits) do not move."""
    plan = isa.plan(Build(), toolchain.compiler())
    entries = cmake.cache_entries(Build(), backends.get("cpu"), cmake.Stamp(0, "-"), Path("/c/src"), Path("/c/b"),
                                  ccache=None, isa=plan)
    assert entries["CMAKE_C_FLAGS"].startswith("-ffile-prefix-map=/c/src=. -ffile-prefix-map=/c/b/= ")


@pytest.mark.parametrize("name", ["quote'n", 'dq"', "dollar $HOME", "back\\slash", "semi;colon"])
def test_a_path_cmake_cannot_build_in_is_refused_up_front(tmp_path: Path, name: str) -> None:
    from harness.errors import InputError

    with pytest.raises(InputError, match="CMake cannot build in a path"):
        cmake.check_paths(tmp_path / "ok", tmp_path / name / "build-cpu")
    cmake.check_paths(tmp_path / "with space" / "ünïcødé" / "-dash")
