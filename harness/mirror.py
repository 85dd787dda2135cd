"""The source cache: one bare mirror per repository URL, shared by every recipe.

Mirrors live under ``<cache>/mirrors/<slug>-<hash>.git`` and are guarded by a file lock
(``<mirror>.lock``).  Only what a lock needs is fetched: each pinned commit at depth 1,
deepened step by step when a merge base or a patch's pre-image blobs are needed.  A commit
counts as present only once ``refs/harness/pin/<sha>`` names it: git writes that ref after
the pack and the shallow file, so a fetch killed half-way is simply fetched again.

Deepening asks for the pinned SHA itself with ``--depth=N`` (N beyond what the mirror has):
``--deepen`` only deepens what some remote ref still points at, and a force-pushed PR head
is pointed at by none (GitHub keeps it fetchable by SHA).

A fetch killed half-way leaves git's own lock files and temp packs behind; whoever takes
the mirror's lock next removes them (holding our lock, no git process can be using them)
and, since a kill may have come between a pack and its shallow update, re-verifies that the
history behind every pin can be walked, dropping the pins that cannot.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shlex
import shutil
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from harness import atomic, console, git, paths
from harness.errors import CommandFailed, StepError

LOCK_TIMEOUT = 3600.0
PIN = "refs/harness/pin/"

# lock files git leaves behind when killed (relative to a git directory)
GIT_LOCK_FILES = ("index.lock", "HEAD.lock", "ORIG_HEAD.lock", "FETCH_HEAD.lock", "shallow.lock",
                  "packed-refs.lock", "config.lock", "MERGE_HEAD.lock", "AUTO_MERGE.lock")


def remove_stale_git_state(git_dir: Path, worktrees: tuple[str, ...] = ()) -> list[str]:
    """Remove what a killed git leaves in ``git_dir``: lock files, temp packs, quarantined objects,
    and the lock files of the linked ``worktrees`` named (``.git/worktrees/<name>``).

    Only call this while holding the harness lock that guards ``git_dir`` (and those worktrees).
    Returns what was removed, relative to ``git_dir``.
    """
    found: list[Path] = [git_dir / name for name in GIT_LOCK_FILES if (git_dir / name).exists()]
    for sub in ("refs", "logs"):
        if (git_dir / sub).is_dir():
            found += [p for p in (git_dir / sub).rglob("*.lock") if p.is_file()]
    for name in worktrees:
        admin = git_dir / "worktrees" / name
        found += [p for p in admin.rglob("*.lock") if p.is_file()] if admin.is_dir() else []
    objects = git_dir / "objects"
    found += [*objects.glob("pack/tmp_*"), *objects.glob("pack/*.lock"), *objects.glob("tmp_obj_*"),
              *objects.glob("incoming-*")]
    for path in found:
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    return [str(p.relative_to(git_dir)) for p in found]


# what git says when the remote itself cannot be used (as opposed to one commit being gone)
_UNREACHABLE = ("unable to access", "Could not read from remote", "does not appear to be a git repository",
                "Could not resolve host", "Connection refused", "Authentication failed", "Repository not found")


def _slug(url: str) -> str:
    tail = re.sub(r"[^A-Za-z0-9._-]+", "-", url.split("://")[-1])[-60:].strip("-")
    return f"{tail}-{hashlib.sha256(url.encode()).hexdigest()[:10]}"


@dataclass(frozen=True)
class Want:
    """A commit a lock pins: its SHA, the ref to try when the server refuses the bare SHA, and whose it is."""

    sha: str
    ref: str | None = None  # refs/pull/N/head; None when the SHA is all we have
    label: str = ""  # "PR #1 of https://...", for errors


class CommitGone(StepError):
    """A pinned commit the remote no longer has (force-pushed away, then garbage-collected)."""

    def __init__(self, want: Want, url: str, why: str, recipe: Path | None = None) -> None:
        self.want, self.url, self.why = want, url, why
        what = f"{want.label}: " if want.label else ""
        command = "harness lock --update " + (shlex.quote(str(recipe)) if recipe else "RECIPE")
        super().__init__(
            f"{what}commit {want.sha} cannot be fetched from {url}: {why}",
            hint=f"it was probably force-pushed away and garbage-collected upstream; run `{command}` to pin what the ref points at now",
        )

    def for_recipe(self, recipe: Path) -> CommitGone:
        return CommitGone(self.want, self.url, self.why, recipe)


@dataclass
class Mirror:
    url: str  # normalized when the recipe was loaded (recipe.normalize_repo_url)
    path: Path

    @classmethod
    def for_url(cls, url: str) -> Mirror:
        return cls(url=url, path=paths.cache_dir("mirrors") / f"{_slug(url)}.git")

    @contextlib.contextmanager
    def locked(self) -> Iterator[Mirror]:
        with atomic.lock(self.path.with_name(self.path.name + ".lock"), timeout=LOCK_TIMEOUT):
            self._ensure_initialized()
            stale = remove_stale_git_state(self.path)
            if stale:
                console.info(f"{self.url}: removed what a killed git left ({', '.join(stale[:4])}); re-verifying pins")
                self._drop_broken_pins()
            yield self

    def _ensure_initialized(self) -> None:
        if (self.path / "HEAD").exists():
            return
        with atomic.temp_dir_beside(self.path) as tmp:
            git.init_bare(tmp)
            git.config_set(tmp, "remote.origin.url", self.url)
            git.config_set(tmp, "uploadpack.allowAnySHA1InWant", "true")
            git.config_set(tmp, "gc.auto", "0")
            os.replace(tmp, self.path)

    def _drop_broken_pins(self) -> None:
        pins = git.refs_under(self.path, PIN)
        if git.history_complete(self.path, pins.values()):
            return
        for ref, sha in pins.items():
            if not git.history_complete(self.path, [sha]):
                console.warn(f"{self.url}: history behind {sha[:12]} is incomplete (a killed fetch); fetching it again")
                git.delete_ref(self.path, ref)

    # Everything below expects the caller to hold ``locked()``.

    def has(self, sha: str) -> bool:
        """Is ``sha`` here with its history walkable?  (Its pin exists: written after pack and shallow file.)"""
        return git.has_ref(self.path, PIN + sha, sha)

    def fetch(self, wanted: Iterable[Want], *, depth: int = 1) -> int:
        """Fetch each missing commit of ``wanted`` at ``depth``; returns the bytes the mirror grew by.

        All at once first; when that fails, one at a time, so the error names the commit that
        is gone, its item and its repository.  A server that refuses unadvertised SHAs gets
        the fallback ref (``refs/pull/N/head``), which helps only while it still points there.
        """
        missing = [w for w in dict.fromkeys(wanted) if not self.has(w.sha)]
        if not missing:
            return 0
        before = self.size()
        console.step(f"fetching {len(missing)} commit(s) from {self.url}")
        status, _ = git.fetch(self.path, [f"--depth={depth}", *[f"+{w.sha}:{PIN}{w.sha}" for w in missing]], check=False)
        if status != 0:
            for want in missing:
                self._fetch_one(want, depth)
        for want in missing:
            if not self.has(want.sha):  # a fetch that succeeded without the commit: a server bug, but say so
                self._gone(want, "the fetch succeeded but did not bring it")
        return self.size() - before

    def _fetch_one(self, want: Want, depth: int) -> None:
        status, err = git.fetch(self.path, [f"--depth={depth}", f"+{want.sha}:{PIN}{want.sha}"], check=False)
        if status == 0:
            return
        if want.ref:
            ref_status, _ = git.fetch(self.path, [f"--depth={depth}", f"+{want.ref}:refs/harness/fetched/{want.sha}"], check=False)
            fetched = git.rev_parse(self.path, f"refs/harness/fetched/{want.sha}")
            git.delete_ref(self.path, f"refs/harness/fetched/{want.sha}")
            if ref_status == 0 and fetched == want.sha:
                git.update_ref(self.path, PIN + want.sha, want.sha)
                return
        why = (err.strip().splitlines() or ["no reason given"])[-1]
        if any(s in err for s in _UNREACHABLE):
            raise StepError(f"cannot fetch from {self.url}: {why}")
        self._gone(want, why)

    def _gone(self, want: Want, why: str) -> None:
        raise CommitGone(want, self.url, why)

    def deepen(self, shas: Iterable[str], by: int) -> int:
        """Fetch ``by`` more commits of history behind each of ``shas``; returns the bytes that came (0: none).

        Asks for each SHA with ``--depth`` = what the mirror has behind it + ``by`` (``--deepen``
        ignores commits no remote ref points at).  Returns -1 when history changed but no
        bytes came (the objects were here already).
        """
        shas = list(shas)
        shallow_before = git.shallow_commits(self.path)
        if not shallow_before:
            return 0
        before = self.size()
        for sha in shas:
            depth = git.count_commits(self.path, sha) + by
            try:
                git.fetch(self.path, [f"--depth={depth}", f"+{sha}:{PIN}{sha}"])
            except CommandFailed as exc:
                raise StepError(
                    f"cannot fetch more history of {sha[:12]} from {self.url}",
                    hint=f"git said: {exc.output_tail.strip().splitlines()[-1] if exc.output_tail.strip() else exc}",
                ) from None
        grew = self.size() - before
        if grew == 0 and git.shallow_commits(self.path) != shallow_before:
            return -1
        return grew

    def shallow_commits(self) -> set[str]:
        return git.shallow_commits(self.path)

    def size(self) -> int:
        return sum(f.stat().st_size for f in (self.path / "objects").rglob("*") if f.is_file())
