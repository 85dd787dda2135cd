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

On Linux the stamp's last part goes in after the link, not through the compiler (``late``): the
generated build-info.cpp gets a placeholder of the same length as the lock digest
(``0c1e570+stack.`` and the eight bytes 0xFE, 0xFD, ... 0xF7: the linker may store a string in
the tail of a longer one, and no string of llama.cpp is a run of such bytes), the same on every
patch edit, so build-info.cpp.o, the archive and the binaries linking it are not rebuilt
for a new stamp at all: a one-file patch edit runs the steps plain ninja runs.  ``finish`` then
writes the digest over the placeholder in the copies being published (the way conda-build
writes the install prefix over a padded placeholder), and the ``version`` smoke check proves
every target prints the full stamp before anything is published.  The build directory's own
binaries keep the placeholder; their ELF build-id is that of the placeholder link (the same
for two stamps whose code is the same).  Why not fewer relinks instead: llama.cpp's
``common/CMakeLists.txt`` makes ``llama-common-base`` (build-info.cpp alone) a STATIC library
that ``llama-common`` links PUBLIC, so every library and tool linking ``llama-common`` relinks
when that archive changes, whether or not it copies the object (``llama-imatrix`` and
``libllama-server-impl.so`` do not: ``llama-server``, ``llama-quantize`` and
``libllama-common.so`` hold the string); only a patch to llama.cpp's CMake would change that.
Elsewhere (macOS signs its binaries; Windows) the full stamp is compiled in as before.

Where a tree's build info differs (a fork whose ``common/build-info.cpp.in`` or top-level
CMakeLists does not take ``LLAMA_BUILD_NUMBER`` / ``LLAMA_BUILD_COMMIT`` as upstream does), the
whole stamp goes through CMake as before, the index keeps its role, and ``support`` says why, for
the console and for the ``version`` check's message when the stamp still does not reach ``--version``.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

from harness.build import cmake
from harness.build.cmake import Stamp
from harness.errors import StepError

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


PAD = bytes(range(0xFE, 0xEE, -1))  # the placeholder's bytes: no C string of llama.cpp ends with these
DIGEST = re.compile(r"\+stack\.([0-9a-f]{1,16})$")


def late(stamp: Stamp, configured: Stamp) -> bool:
    """Whether the stamp's digest is written into the published files after the link (see the
    module doc) rather than compiled: on Linux, for a split stamp (``<short>+stack.<digest>``)."""
    return configured != stamp and sys.platform.startswith("linux") and DIGEST.search(stamp.commit) is not None


def placeholder(stamp: Stamp) -> bytes:
    """What the linked files hold where the published ones hold ``stamp.commit``: the same length."""
    m = DIGEST.search(stamp.commit)
    assert m is not None, stamp
    return stamp.commit[:m.start(1)].encode() + PAD[:len(m.group(1))]


def _literal(stamp: Stamp, is_late: bool) -> str:
    """The C string literal's contents for build-info.cpp (octal escapes for the placeholder bytes)."""
    if not is_late:
        return _c_string(stamp.commit)
    raw = placeholder(stamp)
    head = raw.rstrip(PAD).decode()
    return _c_string(head) + "".join(f"\\{b:03o}" for b in raw[len(head):])


def finish(bin_dir: Path, stamp: Stamp) -> list[str]:
    """Write ``stamp.commit`` over its placeholder in every file in ``bin_dir`` that holds it (the
    copies being published; ggml's libraries never link llama.cpp's common code and are not read);
    the files changed.  A StepError when none holds it: the build info is not made as expected."""
    old, new = placeholder(stamp), stamp.commit.encode()
    changed = []
    for path in sorted(bin_dir.iterdir()):
        if path.is_symlink() or not path.is_file() or path.name.startswith("libggml"):
            continue
        data = path.read_bytes()
        if old in data:
            path.write_bytes(data.replace(old, new))
            changed.append(path.name)
    if not changed:
        raise StepError(f"the stamp {stamp.commit}: its placeholder is in none of the built files in {bin_dir}",
                        hint="nothing was published; the tree's build info is not made the way upstream's is")
    return changed


def apply(bdir: Path, stamp: Stamp, configured: Stamp, *, late_ok: bool = False) -> bool:
    """Give the generated build-info.cpp the full stamp, or its placeholder where the stamp goes in
    ``late`` and ``late_ok`` (the caller ``finish``-es what it publishes; written only when it changes, so a rebuild with the same text is a no-op); False when
    there is nothing to rewrite (the stamp went whole through CMake, or the file is not upstream's shape)."""
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
    literal = _literal(stamp, late_ok and late(stamp, configured))
    new = commit.sub(lambda m: f'{m.group(1)}"{literal}";', new, count=1)
    if new != text:
        from harness import atomic

        atomic.write_text(path, new)
    return True


def applied(bdir: Path, stamp: Stamp, configured: Stamp | None = None, *, late_ok: bool = False) -> bool:
    """Whether build-info.cpp carries ``stamp`` (its placeholder where it goes in ``late``; ninja may
    have configured again and rewritten it)."""
    try:
        text = (bdir / BUILD_INFO).read_text()
    except OSError:
        return False
    literal = _literal(stamp, late_ok and configured is not None and late(stamp, configured))
    return f'LLAMA_COMMIT = "{literal}";' in text and f"LLAMA_BUILD_NUMBER = {stamp.number};" in text


def ninja(ninja_cmd: list[str], log: Path, env: dict[str, str], bdir: Path, stamp: Stamp, configured: Stamp,
          *, late_ok: bool = False) -> int:
    """ninja, with the full stamp in build-info.cpp (its placeholder with ``late_ok`` where the stamp
    goes in ``late``: then the caller ``finish``-es the files it publishes).  CMake may run again inside
    ninja (llama.cpp's common/ makes ``.git/index`` a configure dependency, so every new patched
    commit re-runs it) and write the short stamp back: ``ninja build.ninja`` does that part first,
    then the stamp goes in, then the build; stamped again if ninja still configured on its own."""
    steps = 0
    if configured != stamp:
        steps += cmake.run_ninja([*ninja_cmd[:3], "build.ninja"], log, env)  # [ninja, -C, bdir]: regenerate only
        apply(bdir, stamp, configured, late_ok=late_ok)
    steps += cmake.run_ninja(ninja_cmd, log, env)
    if (configured != stamp and not applied(bdir, stamp, configured, late_ok=late_ok)
            and apply(bdir, stamp, configured, late_ok=late_ok)):
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
