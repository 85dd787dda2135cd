"""A small upstream with a known history, for ``harness bisect``: a tiny CMake project whose one
executable is named ``llama-cli`` (so a recipe's build and ``version`` smoke check run on it),
served at a GitHub URL through ``url.<base>.insteadOf``.

master: c0 (base) -> c1 ... c40, each "area: change k (#1000+k)" appending to other.txt, except
  c12  main.c: --version no longer prints the stamp (the version smoke check fails) ... c16 fixes it
  c5   adds skipme.txt, c7 removes it and writes "broken" into state.txt (a run: check's culprit)
  c23  rewrites the line of feature.txt that PR 1 edits (PR 1 stops applying from here on)
  c31  breaks main.c's syntax (the build fails from here on)
refs/pull/1/head: edits feature.txt's line (conflicts from c23); refs/pull/2/head: adds notes.txt (always applies).
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from harness.source import sdist_upstream as offline

URL = "https://github.com/bisect-test/llama.cpp"
N = 40
SMOKE_BREAK, SMOKE_FIX, SKIP_FROM, RUN_BREAK, APPLY_BREAK, BUILD_BREAK = 12, 16, 5, 7, 23, 31

CMAKE = """cmake_minimum_required(VERSION 3.14)
project(tiny C)
set(CMAKE_RUNTIME_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR}/bin)
if(NOT DEFINED LLAMA_BUILD_COMMIT)
  set(LLAMA_BUILD_COMMIT unknown)
endif()
add_executable(llama-cli main.c)
target_compile_definitions(llama-cli PRIVATE STAMP="${LLAMA_BUILD_COMMIT}")
"""
MAIN = """#include <stdio.h>
#include <string.h>
int main(int argc, char **argv) {
    if (argc > 1 && strcmp(argv[1], "--version") == 0) {
        printf("version: 1 (%s)\\n", STAMP);
        return 0;
    }
    return 0;
}
"""


def git(repo: Path, *args: str, date: int = 1790000000) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    env.update({"GIT_AUTHOR_NAME": "Up Stream", "GIT_AUTHOR_EMAIL": "up@example.invalid", "GIT_COMMITTER_NAME": "Up Stream",
                "GIT_COMMITTER_EMAIL": "up@example.invalid", "GIT_AUTHOR_DATE": f"@{date} +0000",
                "GIT_COMMITTER_DATE": f"@{date} +0000", "GIT_CONFIG_GLOBAL": os.devnull, "GIT_CONFIG_NOSYSTEM": "1"})
    return subprocess.run(["git", "-C", str(repo), *args], env=env, check=True, capture_output=True, text=True).stdout.strip()


@dataclass
class World:
    root: Path
    upstream: Path
    commits: list[str] = field(default_factory=list)  # c0 .. cN
    prs: dict[int, str] = field(default_factory=dict)

    @property
    def env(self) -> dict[str, str]:
        return offline.redirect_env({URL: self.upstream})

    def set_master(self, sha: str) -> None:
        git(self.upstream, "update-ref", "refs/heads/master", sha)

    def subject(self, k: int) -> str:
        return git(self.upstream, "log", "-1", "--format=%s", self.commits[k])


def _write(work: Path, name: str, text: str) -> None:
    (work / name).write_text(text)
    git(work, "add", name)


def repositories(root: Path) -> tuple[Path, Path]:
    """The served bare upstream (fetch by SHA, partial clones) and the work repository beside it."""
    upstream, work = root / "upstream.git", root / "work"
    root.mkdir(parents=True, exist_ok=True)
    git(root, "init", "-q", "--bare", str(upstream))
    git(upstream, "config", "uploadpack.allowAnySHA1InWant", "true")
    git(upstream, "config", "uploadpack.allowFilter", "true")
    git(root, "init", "-q", "-b", "master", str(work))
    return upstream, work


def build(root: Path) -> World:
    upstream, work = repositories(root)
    w = World(root, upstream)
    _write(work, "CMakeLists.txt", CMAKE)
    _write(work, "main.c", MAIN)
    _write(work, "feature.txt", "header\nfeature: original\nfooter\n")
    _write(work, "other.txt", "changes:\n")
    _write(work, "state.txt", "fine\n")
    git(work, "commit", "-qm", "tiny: the base", date=1790000000)
    w.commits.append(git(work, "rev-parse", "HEAD"))

    # the PRs, from the base
    git(work, "checkout", "-q", "-b", "pr1")
    _write(work, "feature.txt", "header\nfeature: PR 1 edits this line\nfooter\n")
    git(work, "commit", "-qm", "feature: PR 1", date=1790000001)
    w.prs[1] = git(work, "rev-parse", "HEAD")
    git(work, "checkout", "-q", "-b", "pr2", w.commits[0])
    _write(work, "notes.txt", "PR 2 notes\n")
    git(work, "commit", "-qm", "notes: PR 2", date=1790000002)
    w.prs[2] = git(work, "rev-parse", "HEAD")
    git(work, "checkout", "-q", "master")

    for k in range(1, N + 1):
        with open(work / "other.txt", "a") as f:
            f.write(f"change {k}\n")
        git(work, "add", "other.txt")
        subject = f"area: change {k} (#{1000 + k})"
        if k == SKIP_FROM:
            _write(work, "skipme.txt", "this commit cannot be judged\n")
        if k == RUN_BREAK:
            git(work, "rm", "-q", "skipme.txt")
            _write(work, "state.txt", "broken\n")
            subject = f"state: break it (#{1000 + k})"
        if k == SMOKE_BREAK:
            _write(work, "main.c", MAIN.replace('printf("version: 1 (%s)\\n", STAMP);\n        return 0;',
                                                'printf("no version here\\n");\n        return 3;'))
            subject = f"cli: drop the version line (#{1000 + k})"
        if k == SMOKE_FIX:
            _write(work, "main.c", MAIN)
            subject = f"cli: restore the version line (#{1000 + k})"
        if k == APPLY_BREAK:
            _write(work, "feature.txt", "header\nfeature: upstream rewrote this line\nfooter\n")
            subject = f"feature: rewrite the line (#{1000 + k})"
        if k == BUILD_BREAK:
            _write(work, "main.c", MAIN.replace("return 0;\n}", "return 0 /* broken */\n}"))
            subject = f"cli: a typo that breaks the build (#{1000 + k})"
        git(work, "commit", "-qm", subject, date=1790000000 + 3600 * k)
        w.commits.append(git(work, "rev-parse", "HEAD"))
    git(work, "push", "-q", str(upstream), "master:refs/heads/master", f"{w.prs[1]}:refs/pull/1/head",
        f"{w.prs[2]}:refs/pull/2/head")
    return w


def recipe_text(stack: list[int], *, smoke: list[str] | None = None) -> str:
    items = "".join(f"  - pr: {n}\n" for n in stack) or "  []\n"
    return (f"name: tiny\nupstream:\n  repo: {URL}\n  ref: master\nstack:\n{items}"
            f"build:\n  backends: [cpu]\n  targets: [llama-cli]\n  smoke: {smoke or ['version']}\n"
            "nightly:\n  smoke: [version]\n")
