"""Disk preflight: what prepare and build are about to write, against what each filesystem has free.

Without it a small cache died half-way through a git fetch or checkout, and a small builds
dir with an OSError traceback.  ``check`` refuses (exit 2) before anything is written,
naming the filesystem, what is needed and what is free.  The estimates are upper bounds
measured on llama.cpp 0c1e570 (Oct 2026), exact where the cache already knows better:

- mirror fetch: ``FIRST_FETCH`` for a repository the cache has not seen (a depth-1 fetch
  of llama.cpp is 37 MB), ``NEXT_FETCH`` per further missing commit;
- checkout: the base tree's blob sizes (``git ls-tree -r -l``: 166 MiB at 0c1e570) plus
  10 % for file-system blocks, once for the source tree and once for the stack's scratch
  worktree, each only when it does not exist yet; ``TREE`` before the base is fetched;
- build directory: the backend's ``disk.build_dir`` (harness/backends/) when it does not exist
  yet (CPU with the default targets: 60-80 MB measured), plus ``SMOKE`` for the smoke checks' models;
- published copy (assembled beside the published build before the swap): the build
  directory's ``bin/`` plus the converter when they exist, else the size of the build
  published now, else the backend's ``disk.published``.
"""

from __future__ import annotations

import contextlib
import os
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from harness import backends
from harness.backends.base import GiB, MiB
from harness.errors import InputError
from harness.recipe.load import Recipe
from harness.source import fetch as sources
from harness.source import git, git_repo
from harness.source.lock import Lock
from harness.source.mirror import Mirror
from harness.source.tree import Tree

FIRST_FETCH = 64 * MiB
NEXT_FETCH = 16 * MiB
TREE = 192 * MiB
BLOCKS = 1.10
SMOKE = 32 * MiB
CONVERTER = ("convert_hf_to_gguf.py", "conversion", "gguf-py", "requirements")


@dataclass(frozen=True)
class Need:
    what: str
    path: Path  # where it will be written
    bytes: int


def free_bytes(path: Path) -> int:
    """Bytes an unprivileged process may still write on ``path``'s filesystem."""
    st = os.statvfs(_existing(path))
    return st.f_bavail * st.f_frsize


def check(needs: list[Need]) -> None:
    """Refuse (InputError, exit 2) when any filesystem has less free than what goes on it."""
    by_fs: dict[int, list[Need]] = defaultdict(list)
    for need in needs:
        if need.bytes > 0:
            by_fs[os.stat(_existing(need.path)).st_dev].append(need)
    problems = []
    for group in by_fs.values():
        total = sum(n.bytes for n in group)
        free = free_bytes(group[0].path)
        if total > free:
            parts = ", ".join(f"{n.what} {human(n.bytes)}" for n in group)
            problems.append(f"need {human(total)} on the filesystem of {_existing(group[0].path)}, "
                            f"{human(free)} free ({parts})")
    if problems:
        raise InputError("not enough disk space: " + "; ".join(problems),
                         hint="free some space, or point HARNESS_CACHE / --builds-dir at a bigger disk; "
                              "nothing was written")


def for_prepare(recipe: Recipe, lock: Lock) -> list[Need]:
    """Mirror fetches and checkouts ``stack.prepare`` would write for ``lock``."""
    needs = []
    tree = Tree.for_recipe(recipe)
    new_mirrors: set[Path] = set()
    wanted = [(lock.upstream_repo, lock.base_sha), *[(i.repo, i.sha) for i in lock.items if i.repo and i.sha]]
    for repo, sha in wanted:
        mirror = Mirror.for_url(repo)
        if not (mirror.path / "HEAD").exists():
            first = mirror.path not in new_mirrors
            new_mirrors.add(mirror.path)
            needs.append(Need(f"fetch {repo}", mirror.path, FIRST_FETCH if first else NEXT_FETCH))
        elif not git_repo.has_commit(mirror.path, sha):
            needs.append(Need(f"fetch {sha[:12]}", mirror.path, NEXT_FETCH))
    missing = [p for p in (tree.src, tree.stack_work) if not p.exists()]
    if missing:
        size = _tree_bytes(sources.mirrors_for(lock), lock.base_sha)
        needs += [Need(f"checkout {p.name}", p, size) for p in missing]
    return needs


def for_build(recipe: Recipe, lock: Lock, backend: str, out: Path, bdir: Path) -> list[Need]:
    """``for_prepare`` plus the build directory and the published copy of one backend."""
    needs = for_prepare(recipe, lock)
    fresh = not bdir.exists()
    needs.append(Need("build directory", bdir, (backends.get(backend).disk.build_dir if fresh else 0) + SMOKE))
    tree = Tree.for_recipe(recipe)
    if (bdir / "bin").is_dir():
        published = _du(bdir / "bin") + sum(_du(tree.src / name) for name in CONVERTER)
    elif out.exists():
        published = _du(out)
    else:
        published = backends.get(backend).disk.published
    needs.append(Need("published copy", out, published))
    return needs


def for_verify(recipe: Recipe, lock: Lock, backend: str, out: Path, scratch: Path) -> list[Need]:
    """A from-scratch rebuild in ``scratch``: a checkout, a fresh build directory and a copy of the build."""
    return [Need("verify checkout", scratch, _tree_bytes(sources.mirrors_for(lock), lock.base_sha)),
            Need("verify build directory", scratch, backends.get(backend).disk.build_dir),
            Need("verify copy", scratch, _du(out) if out.exists() else backends.get(backend).disk.published)]


def human(n: int) -> str:
    return f"{n / GiB:.1f} GiB" if n >= GiB else f"{n / MiB:.0f} MiB"


def _tree_bytes(mirrors: dict[str, Mirror], sha: str) -> int:
    for mirror in mirrors.values():
        if (mirror.path / "HEAD").exists() and git_repo.has_commit(mirror.path, sha):
            if git_repo.missing_blobs(mirror.path, sha):  # a partial mirror: `ls-tree -l` would fetch each file to size it
                return TREE
            res = git.git(["ls-tree", "-r", "-l", "--full-tree", sha], repo=mirror.path, check=False)
            sizes = [int(line.split()[3]) for line in res.stdout.splitlines()
                     if len(line.split()) >= 4 and line.split()[3].isdigit()]
            if res.returncode == 0 and sizes:
                return int(sum(sizes) * BLOCKS)
    return TREE


def _du(path: Path) -> int:
    if path.is_symlink() or path.is_file():
        return path.lstat().st_size
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(root, name)).st_size
    return total


def _existing(path: Path) -> Path:
    path = path.absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path
