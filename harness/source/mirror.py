"""The source cache: one bare mirror per repository URL, shared by every recipe.

Mirrors live under ``<cache>/mirrors/<slug>-<hash>.git`` and are guarded by a file lock
(``<mirror>.lock``).  A mirror is a partial clone (``--filter=blob:none``): every pinned
commit comes with its whole history of commits and trees, so merge bases, ancestry and
the already-merged scan see exactly what a full clone sees, on a fresh cache and a warm
one alike; file contents (blobs) come only when asked for: the trees a build checks out,
the files a merge or a patch-id scan reads.  A commit counts as present only once
``refs/harness/pin/<sha>`` names it: git writes that ref after the pack, so a fetch killed
half-way is simply fetched again.  (Format 1 mirrors were shallow and deepened step by
step; a merge commit on the shallow cut made the answer depend on what the cache held.
They are completed in place on first use.)

A fetch killed half-way leaves git's own lock files and temp packs behind; whoever takes
the mirror's lock next removes them (holding our lock, no git process can be using them)
and re-verifies that the history behind every pin can be walked, dropping the pins that
cannot.
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

from harness import atomic, console, lifetime, paths
from harness.errors import InputError, StepError
from harness.source import git, git_repo

LOCK_TIMEOUT = 3600.0
PIN = "refs/harness/pin/"
FORMAT = "2"  # 2: partial clone (blob:none) with the whole commit graph; 1: shallow
FILTER = "--filter=blob:none"
INFINITE_DEPTH = 0x7FFFFFFF  # git's own INFINITE_DEPTH (what --unshallow asks for)

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


def _partial_clone_config(path: Path) -> None:
    git_repo.config_set(path, "core.repositoryformatversion", "1")
    git_repo.config_set(path, "extensions.partialClone", "origin")
    git_repo.config_set(path, "remote.origin.promisor", "true")
    git_repo.config_set(path, "remote.origin.partialclonefilter", "blob:none")
    git_repo.config_set(path, "uploadpack.allowFilter", "true")
    git_repo.config_set(path, "harness.mirrorformat", FORMAT)


def _slug(url: str) -> str:
    tail = re.sub(r"[^A-Za-z0-9._-]+", "-", url.split("://")[-1])[-60:].strip("-")
    return f"{tail}-{hashlib.sha256(url.encode()).hexdigest()[:10]}"


@dataclass(frozen=True)
class Want:
    """A commit a lock pins: its SHA, the ref to try when the server refuses the bare SHA, and whose it is."""

    sha: str
    ref: str | None = None  # refs/pull/N/head; None when the SHA is all we have
    label: str = ""  # "PR #1 of https://...", for errors
    from_recipe: bool = False  # the recipe itself names this SHA (upstream.ref, a commit: item)


class CommitGone(StepError):
    """A pinned commit the remote no longer has (force-pushed away, then garbage-collected)."""

    def __init__(self, want: Want, url: str, why: str, recipe: Path | None = None, *, moved_to: str | None = None) -> None:
        self.want, self.url, self.why, self.moved_to = want, url, why, moved_to
        what = f"{want.label}: " if want.label else ""
        command = "harness lock --update " + (shlex.quote(str(recipe)) if recipe else "RECIPE")
        if moved_to:
            hint = (f"{want.ref} now points at {moved_to[:12]}: the locked commit was force-pushed away and "
                    f"garbage-collected upstream; run `{command}` to pin what the ref points at now")
        elif want.ref:
            hint = (f"{want.ref} no longer exists at {url} and the commit is gone with it; "
                    f"run `{command}` to re-resolve the recipe, or remove the item")
        else:
            hint = f"the remote does not have this object (any more); run `{command}` to pin what the recipe's refs point at now"
        super().__init__(f"{what}commit {want.sha} cannot be fetched from {url}:\n{git.indent_reason(why)}", hint=hint)

    def for_recipe(self, recipe: Path) -> CommitGone:
        return CommitGone(self.want, self.url, self.why, recipe, moved_to=self.moved_to)


class PinnedShaMissing(InputError):
    """A full SHA the recipe itself names that the repository does not have (a typo, most often)."""

    def __init__(self, want: Want, url: str, why: str) -> None:
        what = f"{want.label}: " if want.label else ""
        super().__init__(
            f"{what}the recipe pins {want.sha}, which {url} does not have\n{git.indent_reason(why)}",
            hint="check the SHA in the recipe (a typo?): `harness lock --update` cannot help, the recipe names this commit itself",
        )


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
            self._upgrade()
            lifetime.wait_for_writers(self.path, what=self.url)  # a git a killed run left must not lose its lock files
            stale = remove_stale_git_state(self.path)
            if stale:
                console.info(f"{self.url}: removed what a killed git left ({', '.join(stale[:4])}); re-verifying pins")
                self._drop_broken_pins()
            yield self

    def _ensure_initialized(self) -> None:
        if (self.path / "HEAD").exists():
            return
        with atomic.temp_dir_beside(self.path) as tmp:
            git_repo.init_bare(tmp)
            git_repo.config_set(tmp, "remote.origin.url", self.url)
            git_repo.config_set(tmp, "uploadpack.allowAnySHA1InWant", "true")
            git_repo.config_set(tmp, "gc.auto", "0")
            _partial_clone_config(tmp)
            os.replace(tmp, self.path)

    def _upgrade(self) -> None:
        """A format-1 (shallow) mirror becomes a partial clone: its pins are fetched again with their history."""
        if git_repo.config_get(self.path, "harness.mirrorformat") == FORMAT:
            return
        console.info(f"{self.url}: the mirror was shallow; its pins get their whole commit history on next use")
        _partial_clone_config(self.path)
        for ref in git_repo.refs_under(self.path, PIN):
            git_repo.delete_ref(self.path, ref)

    def _drop_broken_pins(self) -> None:
        pins = git_repo.refs_under(self.path, PIN)
        if git_repo.history_complete(self.path, pins.values()):
            return
        for ref, sha in pins.items():
            if not git_repo.history_complete(self.path, [sha]):
                console.warn(f"{self.url}: history behind {sha[:12]} is incomplete (a killed fetch); fetching it again")
                git_repo.delete_ref(self.path, ref)

    # Everything below expects the caller to hold ``locked()``.

    def has(self, sha: str) -> bool:
        """Is ``sha`` here with its history walkable?  (Its pin exists: written after pack and shallow file.)"""
        return git_repo.has_ref(self.path, PIN + sha, sha)

    def pin_ancestor(self, sha: str, tip: str) -> bool:
        """Pin ``sha`` when it is an ancestor of the pinned ``tip``: the whole graph behind a pin is
        here, so ``has(sha)`` holds without a fetch (bisect's candidates).  Hold the lock."""
        # has_commit first: merge-base on a commit the partial clone lacks would start git's lazy fetch
        if not self.has(sha) and self.has(tip) and git_repo.has_commit(self.path, sha) and git.is_ancestor(self.path, sha, tip):
            git.update_ref(self.path, PIN + sha, sha)
        return self.has(sha)

    def _options(self) -> list[str]:
        # all the history there is: an infinite --depth completes a format-1 (shallow) mirror, and a server
        # that is itself shallow (llama.cpp from the PyPI sdist) answers with its shallow roots, which git then
        # records; without --depth git looks those roots up first, and a partial clone fetches each lookup
        # lazily, forever
        return [FILTER, f"--depth={INFINITE_DEPTH}"]

    def fetch(self, wanted: Iterable[Want]) -> int:
        """Fetch each missing commit of ``wanted`` with its whole history (commits and trees, no blobs);
        returns the bytes the mirror grew by.

        All at once first; when that fails, one at a time, so the error names the commit that
        is gone, its item and its repository, with git's own reason.  A server that refuses
        unadvertised SHAs gets the fallback ref (``refs/pull/N/head``), which helps only while
        it still points there.
        """
        missing = [w for w in dict.fromkeys(wanted) if not self.has(w.sha)]
        if not missing:
            return 0
        before = self.size()
        console.step(f"fetching {len(missing)} commit(s) from {self.url}")
        status, _ = git.fetch(self.path, [f"+{w.sha}:{PIN}{w.sha}" for w in missing], self._options(), check=False)
        if status != 0:
            for want in missing:
                self._fetch_one(want)
        for want in missing:
            if not self.has(want.sha):  # a fetch that succeeded without the commit: a server bug, but say so
                raise CommitGone(want, self.url, "the fetch succeeded but did not bring it")
        return self.size() - before

    def _fetch_one(self, want: Want) -> None:
        status, err = git.fetch(self.path, [f"+{want.sha}:{PIN}{want.sha}"], self._options(), check=False)
        if status == 0:
            return
        why = git.failure_tail(err) or "no reason given"
        if any(s in err for s in git.UNREACHABLE):
            raise StepError(f"cannot fetch from {self.url}:\n{git.indent_reason(why)}",
                            hint="check the network, the URL and your credentials for it")
        points_at: str | None = None
        if want.ref:
            ref_status, _ = git.fetch(self.path, [f"+{want.ref}:refs/harness/fetched/{want.sha}"], self._options(), check=False)
            points_at = git.rev_parse(self.path, f"refs/harness/fetched/{want.sha}") if ref_status == 0 else None
            git_repo.delete_ref(self.path, f"refs/harness/fetched/{want.sha}")
            if points_at == want.sha:
                git.update_ref(self.path, PIN + want.sha, want.sha)
                return
        if want.from_recipe:
            raise PinnedShaMissing(want, self.url, why)
        raise CommitGone(want, self.url, why, moved_to=points_at)

    def fetch_blobs(self, blobs: Iterable[str]) -> int:
        """Fetch these blobs (full SHAs) into the mirror in one request; returns the bytes that came."""
        blobs = sorted(set(blobs))
        if not blobs:
            return 0
        before = self.size()
        # as git's own lazy fetch asks (no negotiation, no submodules): with negotiation, a shallow mirror's
        # connectivity check takes the blobs for revisions and fails
        status, err = git.fetch(self.path, [], [FILTER, "--recurse-submodules=no", "--stdin"], check=False,
                                input="".join(f"{b}\n" for b in blobs).encode(), settings=["fetch.negotiationAlgorithm=noop"])
        if status != 0:
            raise StepError(f"cannot fetch {len(blobs)} file(s) from {self.url}:\n{git.indent_reason(git.failure_tail(err))}",
                            hint="check the network; the mirror keeps what it has")
        return self.size() - before

    def ensure_tree(self, sha: str) -> int:
        """Every file of ``sha``'s tree present (what a checkout of it reads); returns the bytes fetched."""
        return self.fetch_blobs(git_repo.missing_blobs(self.path, sha))

    def size(self) -> int:
        return sum(f.stat().st_size for f in (self.path / "objects").rglob("*") if f.is_file())
