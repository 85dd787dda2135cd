"""Getting a lock's sources into the cache: commits into mirrors, patches from disk or URL,
and the drift check (has a PR head or branch moved since it was locked?)."""

from __future__ import annotations

import hashlib
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import requests

from harness import atomic, console, git, paths
from harness.errors import CommandFailed, InputError, StepError
from harness.lock import Lock, LockedItem
from harness.mirror import Mirror, normalize_url
from harness.recipe import Recipe


@dataclass(frozen=True)
class Drift:
    item: str
    locked: str
    remote: str | None  # None: the ref is gone

    def __str__(self) -> str:
        if self.remote is None:
            return f"{self.item}: ref is gone upstream (locked {self.locked[:12]} is used)"
        return f"{self.item}: moved {self.locked[:12]} -> {self.remote[:12]} since locking (locked SHA is used; `harness lock --update` adopts it)"


def mirrors_for(lock: Lock) -> dict[str, Mirror]:
    repos = [lock.upstream_repo, *[i.repo for i in lock.items if i.repo]]
    return {normalize_url(r): Mirror.for_url(r) for r in repos}


def fetch(lock: Lock) -> int:
    """Make every pinned commit of ``lock`` present in its mirror; returns bytes fetched."""
    wanted: dict[str, list[tuple[str, str | None]]] = defaultdict(list)
    depth: dict[str, int] = defaultdict(lambda: 1)
    up = normalize_url(lock.upstream_repo)
    wanted[up].append((lock.base_sha, None if len(lock.upstream_ref) == 40 else _as_ref(lock.upstream_ref)))
    for item in lock.items:
        if item.sha and item.repo:
            key = normalize_url(item.repo)
            wanted[key].append((item.sha, item.fetch_ref))
            if item.kind == "commit":
                depth[key] = 2  # a cherry-pick needs the parent
    mirrors = mirrors_for(lock)
    total = 0
    for key, shas in wanted.items():
        with mirrors[key].locked() as mirror:
            total += mirror.fetch(shas, depth=depth[key])
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


def patch_text(recipe: Recipe, item: LockedItem) -> str:
    """The patch's text, verified against the lock's sha256 (URL patches are downloaded once)."""
    assert item.sha256 is not None
    if item.ref.startswith(("http://", "https://")):
        cached = paths.cache_dir("patches") / f"{item.sha256}.patch"
        if not cached.exists():
            data = _download(item.ref)
            digest = hashlib.sha256(data).hexdigest()
            if digest != item.sha256:
                raise InputError(f"{item.ref}: sha256 is {digest}, the recipe and lock say {item.sha256}")
            atomic.write_text(cached, data.decode("utf-8", errors="surrogateescape"))
        return cached.read_text(encoding="utf-8", errors="surrogateescape")
    path = recipe.resolve_local(item.ref)
    data = path.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if digest != item.sha256:
        raise InputError(
            f"{path}: sha256 is {digest[:12]}, the lock has {item.sha256[:12]}",
            hint=f"the patch changed since locking: run `harness lock {recipe.path}` to record it",
        )
    return data.decode("utf-8", errors="surrogateescape")


def _download(url: str, attempts: int = 4) -> bytes:
    delay = 1.0
    for attempt in range(1, attempts + 1):
        try:
            resp = requests.get(url, timeout=60)
        except requests.RequestException as exc:
            if attempt == attempts:
                raise StepError(f"cannot download {url}: {exc}") from None
        else:
            if resp.status_code < 400:
                return resp.content
            if resp.status_code < 500:
                raise StepError(f"cannot download {url}: HTTP {resp.status_code}")
            if attempt == attempts:
                raise StepError(f"cannot download {url}: HTTP {resp.status_code}")
        console.warn(f"download of {url} failed, retrying in {delay:.0f}s")
        time.sleep(delay)
        delay *= 2
    raise AssertionError("unreachable")


def ensure_merge_base(tree_repo: Path, tips: list[tuple[Mirror, str]], a: str, b: str) -> str:
    """Deepen the shallow mirrors behind ``tips`` until ``a`` and ``b`` share a merge base."""
    from harness import tree as tree_mod

    step = 16
    while True:
        base = git.merge_base(tree_repo, a, b)
        if base is not None:
            return base
        grew = False
        for mirror, sha in tips:
            with mirror.locked():
                grew = mirror.deepen([sha], step) or grew
        tree_mod.sync_shallow(tree_repo)
        if not grew:
            raise StepError(f"{a[:12]} and {b[:12]} share no history (even after fetching all of it)")
        step = min(step * 4, 100000)
        console.info(f"deepening history to find the merge base of {a[:12]} and {b[:12]}")


