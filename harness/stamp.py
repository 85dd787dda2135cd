"""The build stamp: what ``--version`` and the manifest say a build is, at the cost of one compile.

The stamp is ``LLAMA_BUILD_NUMBER`` (stack items applied) and ``LLAMA_BUILD_COMMIT`` (the upstream
short SHA, plus ``+stack.<lock digest>`` when anything was applied).  llama.cpp's CMake writes
``LLAMA_BUILD_COMMIT`` into three generated files: ``common/build-info.cpp`` (what every tool's
``--version`` prints), ``src/llama-version.h`` (libllama, included by ``src/llama.cpp``) and
``ggml-version.h`` (``ggml.c``).  Passed whole to CMake, every patch edit changes it, so CMake
configures again and ninja recompiles ``src/llama.cpp`` and ``ggml.c`` and relinks every binary
(17 steps where the edit needs 3).

So CMake gets a stamp that only changes with the upstream commit and the number of applied items
(``0c1e570+stack``), and the generated ``common/build-info.cpp`` in the build directory is then
given the full stamp: one small file recompiled, ``libllama-common`` relinked, nothing else
(executables load it at run time: ``CMAKE_LINK_DEPENDS_NO_SHARED``).  The libraries' own version
strings (``llama-version.h``, ``ggml_commit()``) carry the shorter stamp.

Where a tree's build info differs (a fork whose ``common/build-info.cpp.in`` or top-level
CMakeLists does not take ``LLAMA_BUILD_NUMBER`` / ``LLAMA_BUILD_COMMIT`` as upstream does), the
whole stamp goes through CMake as before, and ``support`` says why, for the console and for the
``version`` check's message when the stamp still does not reach ``--version``.
"""

from __future__ import annotations

import re
from pathlib import Path

from harness import cmake
from harness.cmake import Stamp

BUILD_INFO = Path("common") / "build-info.cpp"  # in the build directory (and .in in the source tree)


def support(src: Path) -> str | None:
    """None when the tree takes the stamp the way upstream llama.cpp does; else why not."""
    template = src / f"{BUILD_INFO}.in"
    try:
        text = template.read_text(errors="replace")
    except OSError:
        return f"this tree has no {BUILD_INFO}.in (its build info is made another way)"
    if "@LLAMA_BUILD_COMMIT@" not in text or "@LLAMA_BUILD_NUMBER@" not in text:
        return f"{BUILD_INFO}.in does not use @LLAMA_BUILD_COMMIT@ and @LLAMA_BUILD_NUMBER@"
    try:
        top = (src / "CMakeLists.txt").read_text(errors="replace")
    except OSError:
        return "this tree has no top-level CMakeLists.txt"
    if not re.search(r"if\s*\(\s*NOT\s+DEFINED\s+LLAMA_BUILD_COMMIT\s*\)", top):
        return "its CMakeLists.txt does not take LLAMA_BUILD_COMMIT from the command line (it computes the commit itself)"
    return None


def for_cmake(stamp: Stamp, src: Path) -> Stamp:
    """The stamp CMake gets: stable across patch edits where the tree allows (see the module doc)."""
    if support(src) is not None or "+stack." not in stamp.commit:
        return stamp
    return Stamp(stamp.number, stamp.commit.split("+stack.", 1)[0] + "+stack")


def apply(bdir: Path, stamp: Stamp, configured: Stamp) -> bool:
    """Give the generated build-info.cpp the full stamp (written only when it changes, so a rebuild
    with the same stamp is a no-op); False when there is nothing to rewrite (the stamp went whole
    through CMake, or the file is not upstream's shape)."""
    if stamp == configured:
        return False
    path = bdir / BUILD_INFO
    try:
        text = path.read_text()
    except OSError:
        return False
    number = re.compile(r"^(int LLAMA_BUILD_NUMBER = )-?\d+;$", re.M)
    commit = re.compile(r'^(char const \* LLAMA_COMMIT = )"[^"\n]*";$', re.M)
    if not number.search(text) or not commit.search(text):
        return False
    new = number.sub(lambda m: f"{m.group(1)}{stamp.number};", text, count=1)
    new = commit.sub(lambda m: f'{m.group(1)}"{_c_string(stamp.commit)}";', new, count=1)
    if new != text:
        from harness import atomic

        atomic.write_text(path, new)
    return True


def applied(bdir: Path, stamp: Stamp) -> bool:
    """Whether build-info.cpp carries ``stamp`` (ninja may have configured again and rewritten it)."""
    try:
        text = (bdir / BUILD_INFO).read_text()
    except OSError:
        return False
    return f'LLAMA_COMMIT = "{_c_string(stamp.commit)}";' in text and f"LLAMA_BUILD_NUMBER = {stamp.number};" in text


def ninja(ninja_cmd: list[str], log: Path, env: dict[str, str], bdir: Path, stamp: Stamp, configured: Stamp) -> int:
    """ninja, with the full stamp in build-info.cpp.  CMake may run again inside
    ninja (llama.cpp's common/ makes ``.git/index`` a configure dependency, so every new patched
    commit re-runs it) and write the short stamp back: ``ninja build.ninja`` does that part first,
    then the stamp goes in, then the build; stamped again if ninja still configured on its own."""
    steps = 0
    if configured != stamp:
        steps += cmake.run_ninja([*ninja_cmd[:3], "build.ninja"], log, env)  # [ninja, -C, bdir]: regenerate only
        apply(bdir, stamp, configured)
    steps += cmake.run_ninja(ninja_cmd, log, env)
    if configured != stamp and not applied(bdir, stamp) and apply(bdir, stamp, configured):
        steps += cmake.run_ninja(ninja_cmd, log, env)
    return steps


def _c_string(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"')
