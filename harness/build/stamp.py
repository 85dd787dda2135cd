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
given the full stamp.  The libraries' own version strings (``llama-version.h``, ``ggml_commit()``)
carry the shorter stamp: ggml is told not to ask git for the tree's commit (``cmake.cache_entries``).

Two more things made a patch edit cost more than ninja's own rebuild (``ninja -d explain``):
llama.cpp's ``common/`` makes ``<src>/.git/index`` a configure dependency (so that build-info.cpp
follows new commits), and every new patched commit rewrites that index, so ninja re-ran CMake
("output build.ninja older than most recent input .../.git/index"); ``settle_index`` takes the
index out of that decision, since the harness writes the commit itself.  What remains beyond
plain ninja is what the stamp truly reaches: ``build-info.cpp.o``, the static
``libllama-common-base.a`` it sits in, and the relink of every binary linking that archive
(each carries its own copy of the stamp: ``ninja -t query common/libllama-common-base.a``).

Where a tree's build info differs (a fork whose ``common/build-info.cpp.in`` or top-level
CMakeLists does not take ``LLAMA_BUILD_NUMBER`` / ``LLAMA_BUILD_COMMIT`` as upstream does), the
whole stamp goes through CMake as before, the index keeps its role, and ``support`` says why, for
the console and for the ``version`` check's message when the stamp still does not reach ``--version``.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from harness.build import cmake
from harness.build.cmake import Stamp

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


def git_index(src: Path) -> Path | None:
    """The index file llama.cpp's common/CMakeLists.txt makes a configure dependency (it follows a
    ``.git`` file's ``gitdir:`` the way that CMake code does); None when there is none."""
    dotgit = src / ".git"
    gitdir = dotgit
    if dotgit.is_file():
        try:
            m = re.match(r"gitdir: (.*)", dotgit.read_text(errors="replace"))
        except OSError:
            return None
        if not m:
            return None
        gitdir = src / m.group(1).strip()  # an absolute gitdir stays absolute
    index = gitdir / "index"
    return index if index.is_file() else None


def settle_index(src: Path, bdir: Path) -> bool:
    """Take ``<src>/.git/index`` out of ninja's decision to re-run CMake (see the module doc): when
    the index is newer than ``build.ninja``, give it build.ninja's mtime.  Only where the harness
    gives CMake the stamp (``support`` is None): a tree that computes its commit at configure
    needs that re-run.  A CMakeLists.txt or .cmake file a patch changed still re-runs CMake; git
    treats an index older than a file as a reason to compare its contents (``racy git``), so git's
    answers stay right.  True when the mtime was set back."""
    if support(src) is not None:
        return False
    index = git_index(src)
    try:
        outputs = _regeneration_outputs(bdir)
        oldest = min((bdir / out).stat().st_mtime_ns for out in outputs) if outputs else None
        if index is None or oldest is None or index.stat().st_mtime_ns <= oldest:
            return False
        os.utime(index, ns=(index.stat().st_atime_ns, oldest))
    except OSError:
        return False
    return True


def _regeneration_outputs(bdir: Path) -> list[str]:
    """The outputs of CMake's regeneration edge in build.ninja (build.ninja and every
    cmake_install.cmake): ninja re-runs CMake when any of them is older than an input."""
    with open(bdir / "build.ninja", encoding="utf-8", errors="surrogateescape") as f:
        for line in f:
            if line.startswith("build build.ninja"):
                break
        else:
            return []
    outputs: list[str] = []
    word = ""
    i = len("build ")
    while i < len(line):  # ninja's escapes: "$ " a space, "$:" a colon, "$$" a dollar
        c = line[i]
        if c == "$" and i + 1 < len(line):
            word += line[i + 1]
            i += 2
            continue
        if c in " :\n":
            if word and word != "|":  # "|": implicit outputs follow
                outputs.append(word)
            word = ""
            if c != " ":
                break
        else:
            word += c
        i += 1
    return outputs


def _c_string(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"')
