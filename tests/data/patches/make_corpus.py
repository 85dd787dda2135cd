"""Regenerate the patch corpus from the test world (``python -m tests.data.patches.make_corpus``).

Every file is made by real git (``format-patch``, ``diff``) on the real llama.cpp tree of
``tests/world.py``, then damaged the way real transports damage patches: a Windows checkout
or mail client turning LF into CRLF, an editor trimming trailing whitespace, a mail client
wrapping long lines, ``git diff`` without ``--binary``.  The world's commits have fixed
identities and dates, so the output is the same on every machine.  ``cases.yaml`` holds what
each file must give.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from tests import world as world_mod

HERE = Path(__file__).resolve().parent


def main() -> int:
    cache = Path(sys.argv[1]) if len(sys.argv) > 1 else Path.home() / ".cache" / "llama-harness-tests" / "sdist"
    with tempfile.TemporaryDirectory() as tmp:
        w = world_mod.build(Path(tmp) / "world", cache)
        work = w.work
        g = lambda *a, input=None: world_mod.git(work, *a, input=input)  # noqa: E731
        master, base = w.shas["master"], world_mod.BASE

        def commit(message: str) -> str:
            g("add", "-A")
            g("commit", "-qm", message)
            return g("rev-parse", "HEAD")

        def fp(*args: str) -> bytes:
            env_git = ["git", "-C", str(work), "-c", "core.abbrev=7", "format-patch", "--stdout", *args]
            return subprocess.run(env_git, check=True, capture_output=True, env=_env()).stdout

        def diff(*args: str) -> bytes:
            return subprocess.run(["git", "-C", str(work), "diff", *args], check=True, capture_output=True, env=_env()).stdout

        out = HERE
        # 1. a doc note; CRLF and CRLF with trimmed blank context lines
        w.branch_from(master)
        world_mod.edit(work, "docs/build.md", "cd llama.cpp\n```\n", "cd llama.cpp\n```\n\nA patched build note (corpus).\n")
        commit("docs: a build note")
        lf = fp("-1")
        (out / "crlf.patch").write_bytes(lf.replace(b"\n", b"\r\n"))
        (out / "cr-trimmed.patch").write_bytes(lf.replace(b"\n", b"\r\n").replace(b"\n \r\n", b"\n\r\n"))
        (out / "crlf-plain.diff").write_bytes(diff("HEAD~1", "HEAD").replace(b"\n", b"\r\n"))

        # 2. a long line wrapped by a mail client
        w.branch_from(master)
        world_mod.edit(work, "docs/build.md", "The project also includes many example programs",
                       "The project also includes many example programs (and tools, wrapped by a mail client)")
        commit("docs: a long line")
        wrapped = []
        for line in fp("-1").split(b"\n"):
            if line.startswith(b"+The project also includes"):
                wrapped += [line[:76], line[76:]]
            else:
                wrapped.append(line)
        (out / "wrapped.patch").write_bytes(b"\n".join(wrapped))

        # 3. a binary file (with and without its data) next to a text change
        w.branch_from(master)
        (work / "models" / "ggml-vocab-corpus.gguf").write_bytes(b"GGUF\x03\x00\x00\x00" + bytes(range(256)))
        world_mod.edit(work, "docs/build.md", "cd llama.cpp\n```\n", "cd llama.cpp\n```\n\nSee models/ggml-vocab-corpus.gguf.\n")
        commit("models: a tiny vocab file")
        (out / "binary-with-data.patch").write_bytes(fp("-1", "--binary"))
        (out / "binary-without-data.patch").write_bytes(fp("-1", "--no-binary"))
        (out / "binary-only-without-data.diff").write_bytes(diff("HEAD~1", "HEAD", "--", "models/"))

        # 4. made on the older upstream commit (the base before master's README retitle)
        w.branch_from(base)
        world_mod.edit(work, "README.md", "-dark.svg)\n", "-dark.svg) (patched on an older base, two lines below the title)\n")
        commit("README: a line near the title, on an older base")
        (out / "older-base.patch").write_bytes(fp("-1"))

        # 5. a series of three commits: as a directory of format-patch files and as one mbox
        w.branch_from(master)
        world_mod.edit(work, "docs/install.md", "# Install pre-built version of llama.cpp", "# Install pre-built version of llama.cpp\n\n(series 1)")
        commit("install docs: series 1")
        world_mod.edit(work, "docs/docker.md", "# Docker", "# Docker\n\n(series 2)")
        commit("docker docs: series 2")
        world_mod.edit(work, "docs/install.md", "(series 1)", "(series 1, amended by 3)")
        commit("install docs: series 3")
        series = out / "series"
        shutil.rmtree(series, ignore_errors=True)
        series.mkdir()
        subprocess.run(["git", "-C", str(work), "format-patch", "-q", "-3", "-o", str(series)], check=True, env=_env())
        (out / "three-commits.mbox").write_bytes(fp("-3"))

        # 6. a series whose second file conflicts with master (it was made on the older base)
        w.branch_from(base)
        world_mod.edit(work, "docs/docker.md", "# Docker", "# Docker\n\n(conflict series 1)")
        commit("docker docs: conflict series 1")
        world_mod.edit(work, "README.md", "# llama.cpp\n", "# llama.cpp (series title)\n")
        commit("README: the series retitles too")
        conflict = out / "series-conflict"
        shutil.rmtree(conflict, ignore_errors=True)
        conflict.mkdir()
        subprocess.run(["git", "-C", str(work), "format-patch", "-q", "-2", "-o", str(conflict)], check=True, env=_env())

        # 7. a rename with an edit, a mode change, a zero-context diff, Latin-1 content
        w.branch_from(master)
        g("mv", "docs/build-s390x.md", "docs/backend/build-s390x.md")
        world_mod.edit(work, "docs/backend/build-s390x.md", "# Build llama.cpp locally (for s390x)", "# Build llama.cpp locally (for s390x, moved)")
        commit("docs: move the s390x page")
        (out / "rename.patch").write_bytes(fp("-1", "-M"))
        w.branch_from(master)
        (work / "scripts" / "compare-logprobs.py").chmod(0o755)
        commit("scripts: compare-logprobs is a program")
        (out / "mode-change.patch").write_bytes(fp("-1"))
        w.branch_from(master)
        world_mod.edit(work, "docs/build.md", "cd llama.cpp\n```\n", "cd llama.cpp  # zero context\n```\n")
        commit("docs: zero context")
        (out / "zero-context.patch").write_bytes(fp("-1", "-U0"))
        w.branch_from(master)
        path = work / "docs" / "build.md"
        path.write_bytes(path.read_bytes().replace(b"cd llama.cpp\n```\n", "cd llama.cpp\n```\n\nCaf\u00e9 na\u00efve (Latin-1).\n".encode("latin-1"), 1))
        commit("docs: Latin-1 bytes")
        (out / "latin1.patch").write_bytes(fp("-1", "--encoding=ISO-8859-1"))
    return 0


def _env() -> dict[str, str]:
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    env.update(world_mod._ENV)
    return env


if __name__ == "__main__":
    sys.exit(main())
