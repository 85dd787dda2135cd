"""The source cache: one bare mirror per repository URL, shared by every recipe.

Mirrors live under ``<cache>/mirrors/<slug>-<hash>.git`` and are guarded by a file lock
(``<mirror>.lock``).  Only what a lock needs is fetched: each pinned commit at depth 1,
deepened step by step when a merge base is needed, never the whole history unless that
is the only way.  Fetched commits are kept alive by ``refs/harness/pin/<sha>``.

A fetch killed half-way leaves git's own lock files and temp packs behind; whoever takes
the mirror's lock next removes them (holding our lock, no git process can be using them).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from harness import atomic, console, git, paths
from harness.errors import CommandFailed, StepError

LOCK_TIMEOUT = 3600.0


def normalize_url(url: str) -> str:
    """The identity of a repository URL: no trailing slash or ``.git``, lower-case host."""
    url = url.strip().rstrip("/")
    if url.endswith(".git"):
        url = url[:-4]
    m = re.match(r"^([a-z]+://)([^/]+)(.*)$", url)
    if m:
        url = m.group(1) + m.group(2).lower() + m.group(3)
    return url


def _slug(url: str) -> str:
    norm = normalize_url(url)
    tail = re.sub(r"[^A-Za-z0-9._-]+", "-", norm.split("://")[-1])[-60:].strip("-")
    return f"{tail}-{hashlib.sha256(norm.encode()).hexdigest()[:10]}"


@dataclass
class Mirror:
    url: str
    path: Path

    @classmethod
    def for_url(cls, url: str) -> Mirror:
        return cls(url=url, path=paths.cache_dir("mirrors") / f"{_slug(url)}.git")

    @contextlib.contextmanager
    def locked(self) -> Iterator[Mirror]:
        with atomic.lock(self.path.with_name(self.path.name + ".lock"), timeout=LOCK_TIMEOUT):
            self._ensure_initialized()
            self._remove_stale_git_locks()
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

    def _remove_stale_git_locks(self) -> None:
        for name in ("shallow.lock", "packed-refs.lock", "config.lock", "HEAD.lock", "FETCH_HEAD.lock"):
            with contextlib.suppress(FileNotFoundError):
                (self.path / name).unlink()
        for stale in (self.path / "refs").rglob("*.lock"):
            stale.unlink(missing_ok=True)
        objects = self.path / "objects"
        for stale in [*objects.glob("pack/tmp_*"), *objects.glob("pack/*.lock")]:
            stale.unlink(missing_ok=True)
        for incoming in objects.glob("incoming-*"):
            shutil.rmtree(incoming, ignore_errors=True)

    # Everything below expects the caller to hold ``locked()``.

    def has(self, sha: str) -> bool:
        return git.has_commit(self.path, sha)

    def fetch(self, wanted: Iterable[tuple[str, str | None]], *, depth: int = 1) -> int:
        """Fetch each missing ``(sha, fallback_ref)`` at ``depth``; returns the bytes the mirror grew by.

        The SHA is asked for directly (GitHub serves any commit it has); a server that
        refuses unadvertised SHAs gets the fallback ref (``refs/pull/N/head``) instead.
        """
        missing = [(sha, ref) for sha, ref in wanted if not self.has(sha)]
        if not missing:
            return 0
        before = self.size()
        console.step(f"fetching {len(missing)} commit(s) from {self.url}")
        specs = [f"{sha}:refs/harness/pin/{sha}" for sha, _ in missing]
        try:
            self._git_fetch([f"--depth={depth}", *specs])
        except CommandFailed:
            refs = [f"+{ref}:refs/harness/fetched/{i}" for i, (_, ref) in enumerate(missing) if ref]
            if not refs:
                raise
            self._git_fetch([f"--depth={depth}", *refs])
        for sha, ref in missing:
            if not self.has(sha):
                raise StepError(
                    f"{self.url} does not have commit {sha}" + (f" (nor under {ref})" if ref else ""),
                    hint="the ref may have been force-pushed and garbage-collected; run `harness lock --update`",
                )
            git.update_ref(self.path, f"refs/harness/pin/{sha}", sha)
        return self.size() - before

    def deepen(self, shas: Iterable[str], by: int) -> bool:
        """Deepen the history behind ``shas`` by ``by`` commits; False when nothing more came."""
        before = self.shallow_commits()
        if not before:
            return False
        self._git_fetch([f"--deepen={by}", *[f"{sha}:refs/harness/pin/{sha}" for sha in shas]])
        return self.shallow_commits() != before

    def shallow_commits(self) -> set[str]:
        shallow = self.path / "shallow"
        return set(shallow.read_text().split()) if shallow.exists() else set()

    def size(self) -> int:
        return sum(f.stat().st_size for f in (self.path / "objects").rglob("*") if f.is_file())

    def _git_fetch(self, args: list[str]) -> None:
        git.git(
            ["fetch", "--no-tags", "--no-write-fetch-head", "--quiet", "--update-shallow", "origin", *args],
            repo=self.path,
            env=git.network_env(),
        )
