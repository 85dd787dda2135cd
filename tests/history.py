"""Histories whose answers depend on the whole commit graph (the shapes that broke on the real TurboQuant fork).

history.git (bare, served for https://github.com/example-org/history through url.<base>.insteadOf):
  master:  R -> ... -> M70 (merges PR 70) -> 16 commits -> ... the tip; PR 70's merge commit sits exactly
           where a depth-1 fetch deepened by 16 commits would cut the history
  refs/pull/71/head  merged by a merge commit 40 commits before the tip (past the first deepening)
  refs/pull/73/head  squash-merged 30 commits before the tip (same patch-id, another commit)
  refs/pull/75/head  squash-merged 25 commits before the tip, and the same lines changed again since: the
           merge conflicts, and git's patch-id (``git cherry``) finds the upstream commit
  refs/pull/72/head  a criss-cross with master: two merge bases, and only the virtual base made from both
           gives git's answer (against either base alone the merge is clean; the true answer is a conflict)
  refs/pull/74/head  a criss-cross that merges cleanly, with a change to a file of its own
Every answer is compared with git's on a full clone (``oracle``).
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from tests.world import _ENV, git


def _try(repo: Path, *args: str) -> int:
    """git with the world's fixed identity, where failing is an answer (a conflicting merge)."""
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("GIT_")}, **_ENV}
    return subprocess.run(["git", "-C", str(repo), *args], env=env, capture_output=True).returncode

URL = "https://github.com/example-org/history"


@dataclass
class History:
    bare: Path
    shas: dict[str, str] = field(default_factory=dict)


def _commit(work: Path, path: str, text: str, message: str) -> str:
    (work / path).parent.mkdir(parents=True, exist_ok=True)
    (work / path).write_text(text)
    git(work, "add", path)
    git(work, "commit", "-qm", message)
    return git(work, "rev-parse", "HEAD")


def _chain(work: Path, n: int, tag: str) -> None:
    for k in range(n):
        _commit(work, f"log/{tag}.txt", f"{tag} {k}\n", f"upstream: {tag} {k}")


def build(root: Path) -> History:
    bare, work = root / "history.git", root / "history-work"
    git(root, "init", "-q", "--bare", str(bare))
    for key in ("uploadpack.allowAnySHA1InWant", "uploadpack.allowFilter"):
        git(bare, "config", key, "true")
    git(root, "init", "-q", "-b", "master", str(work))
    h = History(bare)
    root_sha = _commit(work, "README.md", "# history\n", "root")
    _commit(work, "src/f.txt", "base\n", "f")
    _commit(work, "src/shared.txt", "one\ntwo\nthree\n", "shared")
    _commit(work, "src/other.txt", "three\n", "other")
    x = git(work, "rev-parse", "HEAD")

    # the criss-cross: branches a and b from x, each merging the other's first commit
    git(work, "checkout", "-q", "-b", "a", x)
    a1 = _commit(work, "src/f.txt", "a\n", "a: f says a")
    git(work, "checkout", "-q", "-b", "b", x)
    b1 = _commit(work, "src/f.txt", "b\n", "b: f says b")
    git(work, "checkout", "-q", "a")
    _try(work, "merge", "-q", "--no-ff", b1)  # conflicts
    (work / "src/f.txt").write_text("a\n")
    git(work, "add", "src/f.txt")
    git(work, "commit", "-qm", "a: merge b, keep a")
    git(work, "checkout", "-q", "b")
    _try(work, "merge", "-q", "--no-ff", a1)
    (work / "src/f.txt").write_text("a\n")
    git(work, "add", "src/f.txt")
    git(work, "commit", "-qm", "b: merge a, keep a")
    b2 = git(work, "rev-parse", "HEAD")
    h.shas["pr72"] = _commit(work, "src/f.txt", "a, and PR 72\n", "PR 72: extend f")
    git(work, "push", "-q", str(bare), f"{h.shas['pr72']}:refs/pull/72/head")
    git(work, "checkout", "-q", "-b", "pr74", b2)
    h.shas["pr74"] = _commit(work, "src/pr74.txt", "PR 74\n", "PR 74: its own file")
    git(work, "push", "-q", str(bare), f"{h.shas['pr74']}:refs/pull/74/head")

    git(work, "checkout", "-q", "master")
    git(work, "merge", "-q", "--ff-only", "a")
    h.shas["pr71"] = _branch_commit(work, "src/pr71.txt", "PR 71\n", "PR 71: a file")
    git(work, "push", "-q", str(bare), f"{h.shas['pr71']}:refs/pull/71/head")
    git(work, "merge", "-q", "--no-ff", "-m", "Merge pull request #71", h.shas["pr71"])
    _chain(work, 9, "before-73")
    h.shas["pr73"] = _branch_commit(work, "src/shared.txt", "one\nTWO (PR 73)\nthree\n", "PR 73: shout two")
    git(work, "push", "-q", str(bare), f"{h.shas['pr73']}:refs/pull/73/head")
    git(work, "cherry-pick", "--no-commit", h.shas["pr73"])  # the squash: same change, another commit
    git(work, "commit", "-qm", "PR 73: shout two (#73)")
    _chain(work, 4, "before-75")
    h.shas["pr75"] = _branch_commit(work, "src/other.txt", "THREE (PR 75)\n", "PR 75: shout three")
    git(work, "push", "-q", str(bare), f"{h.shas['pr75']}:refs/pull/75/head")
    git(work, "cherry-pick", "--no-commit", h.shas["pr75"])
    git(work, "commit", "-qm", "PR 75: shout three (#75)")
    h.shas["squash75"] = git(work, "rev-parse", "HEAD")
    _commit(work, "src/other.txt", "THREE (PR 75), and more\n", "upstream: more three")
    _chain(work, 8, "before-70")
    h.shas["pr70"] = _branch_commit(work, "src/pr70.txt", "PR 70\n", "PR 70: a file")
    git(work, "push", "-q", str(bare), f"{h.shas['pr70']}:refs/pull/70/head")
    git(work, "merge", "-q", "--no-ff", "-m", "Merge pull request #70", h.shas["pr70"])
    h.shas["merge70"] = git(work, "rev-parse", "HEAD")
    _chain(work, 16, "after-70")
    h.shas["master"] = git(work, "rev-parse", "HEAD")
    h.shas["root"] = root_sha
    git(work, "push", "-q", str(bare), "master:refs/heads/master")
    assert git(work, "rev-list", "--count", f"{h.shas['merge70']}..master") == "16"
    return h


def _branch_commit(work: Path, path: str, text: str, message: str) -> str:
    """A commit on a side branch off the current HEAD (HEAD stays where it was)."""
    here = git(work, "rev-parse", "HEAD")
    git(work, "checkout", "-q", "--detach", here)
    sha = _commit(work, path, text, message)
    git(work, "checkout", "-q", "master")
    return sha


@dataclass(frozen=True)
class Answer:
    status: str  # already-merged | applied | conflict
    files: tuple[str, ...] = ()  # conflicted files
    tree: str | None = None  # the merged tree (applied)


def oracle(bare: Path, scratch: Path, base: str, head: str) -> Answer:
    """git's own answer on a full clone: is ``head`` merged into ``base``; if not, squash-merge it."""
    clone = scratch / "oracle"
    if not clone.exists():
        git(scratch, "clone", "-q", "--no-local", f"file://{bare}", str(clone))
        git(clone, "fetch", "-q", "origin", "+refs/pull/*:refs/pull/*")
    git(clone, "checkout", "-q", "--force", "--detach", base)
    git(clone, "reset", "-q", "--hard")
    if _try(clone, "merge-base", "--is-ancestor", head, base) == 0:
        return Answer("already-merged")
    status = _try(clone, "merge", "--squash", "--no-commit", head)
    unmerged = git(clone, "diff", "--name-only", "--diff-filter=U")
    if status != 0:
        files = tuple(sorted(set(unmerged.split())))
        git(clone, "reset", "-q", "--hard")
        return Answer("conflict", files)
    tree = git(clone, "write-tree")
    git(clone, "reset", "-q", "--hard")
    return Answer("applied", tree=tree)


def cherry(bare: Path, scratch: Path, upstream: str, head: str) -> bool:
    """``git cherry`` on a full clone: does upstream have a commit with ``head``'s patch-id?"""
    clone = scratch / "oracle"
    oracle(bare, scratch, upstream, upstream)  # makes the clone
    return git(clone, "cherry", upstream, head).startswith("-")
