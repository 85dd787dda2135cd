"""Getting a lock's sources into the cache: commits into mirrors, patches from disk or URL
(as bytes, checked against the lock), the files merges, patch-id scans and 3-way applies
read, and the drift check (has a PR head or branch moved since it was locked?).

Mirrors are partial clones holding every commit and tree behind a pin (see ``mirror``), so
merge bases and ancestry are git's full-history answers; this module only brings the
blobs an operation will read, in one request per mirror, before it runs: the source tree
itself is no partial clone (git's lazy fetch during a criss-cross merge asked the server for
an object it does not have: the TurboQuant fork's PR 31 after PR 48), so what is not fetched
first is an error."""

from __future__ import annotations

import hashlib
import shlex
from collections import defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from harness import console
from harness.errors import CommandFailed, InputError, StepError
from harness.recipe.load import Recipe
from harness.recipe.stack_items import is_url
from harness.source import download, git, git_repo, locking
from harness.source import patch_parts as patchset
from harness.source.lock import Lock, LockedItem
from harness.source.mirror import Mirror, Want


@dataclass(frozen=True)
class Drift:
    item: str
    locked: str
    remote: str | None  # None: the ref is gone

    def __str__(self) -> str:
        if self.remote is None:
            return f"{self.item}: ref is gone upstream (locked {self.locked[:12]} is used)"
        return f"{self.item}: moved {self.locked[:12]} -> {self.remote[:12]} since locking (locked SHA is used; `harness lock --update` adopts it)"

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def mirrors_for(lock: Lock) -> dict[str, Mirror]:
    """Repository URL (normalized at load) -> its mirror, for every repository the lock names."""
    repos = [lock.upstream_repo, *[i.repo for i in lock.items if i.repo]]
    return {r: Mirror.for_url(r) for r in repos}


def fetch(lock: Lock) -> int:
    """Make every pinned commit of ``lock`` present in its mirror, with its whole commit history and
    the files of the base's tree (what the build checks out); returns bytes fetched."""
    wanted: dict[str, list[Want]] = defaultdict(list)
    pinned_sha = len(lock.upstream_ref) == 40
    base_ref = None if pinned_sha else _as_ref(lock.upstream_ref)
    wanted[lock.upstream_repo].append(Want(lock.base_sha, base_ref, f"upstream {lock.upstream_ref}", from_recipe=pinned_sha))
    for item in lock.items:
        if item.sha and item.repo and not item.skipped:  # retired items too: the stack re-verifies their mark
            wanted[item.repo].append(Want(item.sha, item.fetch_ref, item.label(), from_recipe=item.kind == "commit"))
    mirrors = mirrors_for(lock)
    total = 0
    for repo, wants in wanted.items():
        with mirrors[repo].locked() as mirror:
            total += mirror.fetch(wants)
            if repo == lock.upstream_repo:
                total += mirror.ensure_tree(lock.base_sha)
    return total


def _as_ref(ref: str) -> str:
    return ref if ref.startswith("refs/") else f"refs/heads/{ref}"


def check_drift(lock: Lock) -> list[Drift]:
    """Compare floating refs (PR heads, branches) with the remote; a warning when unreachable."""
    by_repo: dict[str, list[LockedItem]] = defaultdict(list)
    for item in lock.items:
        if item.fetch_ref and item.repo and item.sha:
            by_repo[item.repo].append(item)
    drifts: list[Drift] = []
    for repo, items in by_repo.items():
        try:
            remote = git.ls_remote(repo, [i.fetch_ref for i in items if i.fetch_ref], timeout=30)
        except (CommandFailed, StepError) as exc:
            console.warn(f"could not check {repo} for moved refs: {str(exc).splitlines()[0]}")
            continue
        for item in items:
            assert item.fetch_ref and item.sha
            now = remote.get(item.fetch_ref)
            if now != item.sha:
                drifts.append(Drift(item.label(), item.sha, now))
    return drifts


def patch_bytes(recipe: Recipe, item: LockedItem) -> bytes:
    """A patch item's content, byte for byte, verified against the lock's sha256 (URL patches are downloaded once)."""
    assert item.sha256 is not None
    if is_url(item.ref):
        return download.patch(item.ref, item.sha256, label=item.label())
    path = recipe.resolve_local(item.ref)
    return _verified(path, item.sha256, item.label(), recipe)


def series_bytes(recipe: Recipe, item: LockedItem) -> list[tuple[str, bytes]]:
    """(file name, content) of each file of a patch series, in order, verified against the lock."""
    files = locking.series_files(recipe, item.ref)
    locked = list(item.files or ())
    if [p.name for p in files] != [name for name, _ in locked]:
        raise InputError(
            f"{item.label()}: the directory has {', '.join(p.name for p in files)}; "
            f"the lock has {', '.join(name for name, _ in locked)}",
            hint=f"the series changed since locking: run `harness lock {shlex.quote(str(recipe.path))}` to record it",
        )
    return [(p.name, _verified(p, digest, f"{item.label()}: {p.name}", recipe)) for p, (_, digest) in zip(files, locked, strict=True)]


def _verified(path: Path, sha256: str, label: str, recipe: Recipe) -> bytes:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InputError(f"{label}: cannot read {path}: {exc.strerror}") from None
    digest = hashlib.sha256(data).hexdigest()
    if digest != sha256:
        raise InputError(
            f"{path}: sha256 is {digest[:12]}, the lock has {sha256[:12]}",
            hint=f"the patch changed since locking: run `harness lock {shlex.quote(str(recipe.path))}` to record it",
        )
    return data


def merge_bases(tree_repo: Path, a: str, b: str) -> list[str]:
    """Every merge base of ``a`` and ``b``, from the whole commit graph (a criss-cross has several)."""
    bases = git_repo.merge_bases(tree_repo, a, b)
    if not bases:
        raise StepError(f"{a[:12]} and {b[:12]} share no history")
    return bases


def _fetch_into(mirrors: list[Mirror], blobs: set[str], what: str) -> int:
    """Bring ``blobs`` into the first of ``mirrors`` whose server has them all (present ones are skipped by git)."""
    if not blobs:
        return 0
    failure: StepError | None = None
    for mirror in mirrors:
        with mirror.locked():
            try:
                return mirror.fetch_blobs(blobs)
            except StepError as exc:
                failure = failure or exc
    assert failure is not None
    raise StepError(f"cannot fetch the files {what} reads", hint=str(failure)) from None


def prefetch_merge(tree_repo: Path, ours: tuple[Mirror, str], theirs: tuple[Mirror, str], bases: list[str]) -> int:
    """Every file a 3-way merge of ``theirs`` into ``ours`` can read: each path either side changed since a
    merge base, at both sides and every base; for a criss-cross also what the virtual base's own merge
    reads (the bases' merge bases).  Returns the bytes fetched."""
    (ours_mirror, ours_sha), (theirs_mirror, theirs_sha) = ours, theirs
    commits, paths = {ours_sha, theirs_sha, *bases}, set()
    for base in bases:
        paths |= set(git_repo.changed_paths(tree_repo, base, ours_sha)) | set(git_repo.changed_paths(tree_repo, base, theirs_sha))
    if len(bases) > 1:
        for base in bases:
            for under in git_repo.merge_bases(tree_repo, bases[0], base) if base != bases[0] else []:
                commits.add(under)
                paths |= set(git_repo.changed_paths(tree_repo, under, base)) | set(git_repo.changed_paths(tree_repo, under, bases[0]))
    if not paths:
        return 0
    ordered = sorted(paths)
    at_theirs = git_repo.blobs_at(tree_repo, theirs_sha, ordered)
    rest = set().union(*(git_repo.blobs_at(tree_repo, c, ordered) for c in sorted(commits - {theirs_sha}))) - at_theirs
    what = f"the merge of {theirs_sha[:12]}"
    return _fetch_into([theirs_mirror, ours_mirror], at_theirs, what) + _fetch_into([ours_mirror, theirs_mirror], rest, what)


def prefetch_scan(tree_repo: Path, mirror: Mirror, rev_range: list[str], paths: list[str]) -> int:
    """The files the already-merged scan reads: whole changes of the range's commits that touch ``paths``."""
    return _fetch_into([mirror], git_repo.blobs_touched(tree_repo, rev_range, paths), "the already-merged scan")


def ensure_blobs(tree_repo: Path, mirror: Mirror, tip: str, diff: bytes) -> tuple[list[str], int]:
    """The pre-image blobs a patch was made on (``index`` lines, often abbreviated), found in the history of
    its files behind ``tip`` and fetched, for ``git apply --3way``: (those no upstream commit has, bytes)."""
    wanted = patchset.preimage_blobs(diff)
    if not wanted:
        return [], 0
    paths = patchset.files(diff)
    known = git_repo.blobs_touched(tree_repo, [tip], paths) | git_repo.blobs_at(tree_repo, tip, paths)
    full = {w: next((b for b in known if b.startswith(w)), None) for w in wanted}
    fetched = _fetch_into([mirror], {b for b in full.values() if b}, "a 3-way apply")
    return [w for w, b in full.items() if b is None], fetched
