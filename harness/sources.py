"""Getting a lock's sources into the cache: commits into mirrors, patches from disk or URL
(as bytes, checked against the lock), the history merges and 3-way applies need, and the
drift check (has a PR head or branch moved since it was locked?)."""

from __future__ import annotations

import hashlib
import shlex
from collections import defaultdict
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from harness import console, download, git
from harness import lock as lock_mod
from harness.errors import CommandFailed, InputError, StepError
from harness.lock import Lock, LockedItem
from harness.mirror import Mirror, Want
from harness.recipe import Recipe, is_url

FIRST_STEP = 16  # commits of history fetched by the first deepening; each later one asks for 4x more
MAX_STEP = 100000


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
    """Make every pinned commit of ``lock`` present in its mirror; returns bytes fetched."""
    wanted: dict[str, list[Want]] = defaultdict(list)
    depth: dict[str, int] = defaultdict(lambda: 1)
    base_ref = None if len(lock.upstream_ref) == 40 else _as_ref(lock.upstream_ref)
    wanted[lock.upstream_repo].append(Want(lock.base_sha, base_ref, f"upstream {lock.upstream_ref}"))
    for item in lock.items:
        if item.sha and item.repo and not item.retired and not item.skipped:
            wanted[item.repo].append(Want(item.sha, item.fetch_ref, item.label()))
            if item.kind == "commit":
                depth[item.repo] = 2  # a cherry-pick needs the parent
    mirrors = mirrors_for(lock)
    total = 0
    for repo, wants in wanted.items():
        with mirrors[repo].locked() as mirror:
            total += mirror.fetch(wants, depth=depth[repo])
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
    files = lock_mod.series_files(recipe, item.ref)
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


def deepen_until(
    tree_repo: Path, tips: list[tuple[Mirror, str]], done: Callable[[], bool], what: str
) -> tuple[bool, int]:
    """Deepen the shallow mirrors behind ``tips`` step by step until ``done()``: (done, bytes fetched).

    The steps (16, 64, 256, ... commits) are the same on every machine, and a step is taken
    only when ``done()`` says so, so the history fetched, and every answer built on it, does
    not depend on what else the cache holds.
    """
    from harness import tree as tree_mod

    step, fetched = FIRST_STEP, 0
    while not done():
        grew = False
        for mirror, sha in tips:
            with mirror.locked():
                got = mirror.deepen([sha], step)
            grew = grew or got != 0
            fetched += max(got, 0)
        tree_mod.sync_shallow(tree_repo)
        if not grew:
            return done(), fetched
        console.info(f"fetched up to {step} more commits of history for {what}")
        step = min(step * 4, MAX_STEP)
    return True, fetched


def ensure_merge_base(tree_repo: Path, tips: list[tuple[Mirror, str]], a: str, b: str) -> tuple[str, int]:
    """The merge base of ``a`` and ``b``, deepening the mirrors behind ``tips`` until there is one: (base, bytes)."""
    found, fetched = deepen_until(
        tree_repo, tips, lambda: git.merge_base(tree_repo, a, b) is not None, f"the merge base of {a[:12]} and {b[:12]}"
    )
    base = git.merge_base(tree_repo, a, b)
    if not found or base is None:
        raise StepError(f"{a[:12]} and {b[:12]} share no history (even after fetching all of it)")
    return base, fetched


def ensure_blobs(tree_repo: Path, tips: list[tuple[Mirror, str]], blobs: list[str]) -> tuple[list[str], int]:
    """Deepen until the repository has ``blobs`` (a patch's pre-image blobs, for ``git apply --3way``):
    (those still missing once the history is complete, bytes fetched)."""
    if not blobs:
        return [], 0
    _, fetched = deepen_until(
        tree_repo, tips, lambda: not git.missing_objects(tree_repo, blobs), f"the blobs a patch was made on ({len(blobs)})"
    )
    return git.missing_objects(tree_repo, blobs), fetched
