"""The per-recipe source tree: a git repository borrowing objects from the mirrors.

``<cache>/trees/<recipe>-<hash>/src`` is the work tree builds compile from.  It is never
re-created: moving it to a new patched commit rewrites only the files that changed, so
their build outputs are the only ones Ninja redoes.  Objects come from the mirrors through
``objects/info/alternates``; nothing is copied.

Whoever takes the tree's lock first removes what a killed git left in the source repository
and its worktrees (``index.lock``, ``HEAD.lock``, ``ORIG_HEAD.lock``, ``refs/...lock``):
holding the lock, no git process of ours can be using them.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from harness import atomic, console, paths
from harness.recipe.load import Recipe
from harness.source import git_repo
from harness.source.mirror import Mirror, remove_stale_git_state


@dataclass(frozen=True)
class Tree:
    root: Path

    @classmethod
    def for_recipe(cls, recipe: Recipe) -> Tree:
        key = hashlib.sha256(str(recipe.path).encode()).hexdigest()[:8]
        return cls(paths.cache_dir("trees") / f"{recipe.name}-{key}")

    @property
    def src(self) -> Path:
        return self.root / "src"

    @property
    def stack_work(self) -> Path:
        """Scratch worktree where the stack is applied (kept between runs)."""
        return self.root / "stack"

    @property
    def conflict(self) -> Path:
        return self.root / "conflict"

    @property
    def state_dir(self) -> Path:
        return self.root / "state"

    @contextlib.contextmanager
    def locked(self) -> Iterator[Tree]:
        with atomic.lock(self.root.with_name(self.root.name + ".lock"), timeout=3600):
            self.root.mkdir(parents=True, exist_ok=True)
            if (self.src / ".git").is_dir():
                stale = remove_stale_git_state(self.src / ".git", worktrees=(self.stack_work.name, self.conflict.name))
                if stale:
                    console.info(f"removed what a killed git left in {self.src}: {', '.join(stale[:4])}")
            yield self

    def ensure_repo(self, mirrors: Iterable[Mirror]) -> Path:
        """Initialise the source repo (once) and point it at the mirrors' objects."""
        mirrors = list(mirrors)
        if not (self.src / ".git" / "HEAD").exists():
            git_repo.init(self.src)
            git_repo.config_set(self.src, "core.autocrlf", "false")
            git_repo.config_set(self.src, "gc.auto", "0")
        alternates = self.src / ".git" / "objects" / "info" / "alternates"
        have = alternates.read_text().split("\n") if alternates.exists() else []
        want = [str(m.path / "objects") for m in mirrors]
        merged = [*[h for h in have if h], *[w for w in want if w not in have]]
        if merged != [h for h in have if h]:
            atomic.write_text(alternates, "\n".join(merged) + "\n")
        sync_shallow(self.src)
        return self.src


def sync_shallow(repo: Path) -> None:
    """The repo's shallow boundary is the union of the shallow boundaries of every mirror it borrows from."""
    dot_git = repo / ".git" if (repo / ".git").is_dir() else repo
    alternates = dot_git / "objects" / "info" / "alternates"
    shallow: set[str] = set()
    for line in alternates.read_text().splitlines() if alternates.exists() else []:
        mirror_shallow = Path(line).parent / "shallow"
        if line and mirror_shallow.exists():
            shallow |= set(mirror_shallow.read_text().split())
    target = dot_git / "shallow"
    current = set(target.read_text().split()) if target.exists() else set()
    if shallow != current:
        if shallow:
            atomic.write_text(target, "".join(f"{s}\n" for s in sorted(shallow)))
        else:
            target.unlink(missing_ok=True)
