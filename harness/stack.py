"""Applying a lock's stack: base commit + PRs / branches / commits / patches -> patched commit.

Each item is applied in a scratch worktree and committed with a fixed identity and the
base commit's date, so the same lock gives the same patched commit SHA on every machine.
An item upstream already contains (ancestor, empty merge, same patch-id as an upstream
commit, applies in reverse) is skipped as ``already-merged``.  The first conflict stops
the stack; its worktree is kept for the user to resolve.  A finished stack is remembered
by ``refs/harness/patched/<lock digest>``, so preparing it again costs nothing.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from harness import atomic, console, git, sources
from harness.conflicts import (
    ConflictError,
    ConflictReport,
    FileConflict,
    files_from_apply_errors,
    hunks_from_markers,
)
from harness.errors import InputError, StepError
from harness.lock import Lock, LockedItem
from harness.mirror import normalize_url
from harness.recipe import Recipe
from harness.sources import Drift
from harness.tree import Tree

APPLIED, MERGED, CONFLICT, SKIPPED = "applied", "already-merged", "conflict", "skipped"


@dataclass(frozen=True)
class ItemResult:
    kind: str
    ref: str
    repo: str | None
    pin: str
    status: str
    detail: str = ""
    commit: str | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Prepared:
    recipe: str
    tree: Path
    commit: str
    base: str
    lock_digest: str
    items: list[ItemResult]
    drift: list[Drift] = field(default_factory=list)
    fetched_bytes: int = 0
    cached: bool = False

    @property
    def stack_digest(self) -> str:
        return self.lock_digest[:12]

    def to_json(self) -> dict[str, Any]:
        return {
            "recipe": self.recipe,
            "tree": str(self.tree),
            "commit": self.commit,
            "base": self.base,
            "lock_digest": self.lock_digest,
            "items": [i.to_json() for i in self.items],
            "drift": [{"item": d.item, "locked": d.locked, "remote": d.remote} for d in self.drift],
            "fetched_bytes": self.fetched_bytes,
            "cached": self.cached,
        }


def prepare(recipe: Recipe, lock: Lock, *, check_remote: bool = True, skip_conflicts: bool = False) -> Prepared:
    tree = Tree.for_recipe(recipe)
    mirrors = sources.mirrors_for(lock)
    drift = sources.check_drift(lock) if check_remote else []
    for d in drift:
        console.warn(str(d))
    key = lock.digest + ("-skip-conflicts" if skip_conflicts else "")
    with tree.locked():
        state_file = tree.state_dir / f"{key}.json"
        repo = tree.src
        cached = git.rev_parse(repo, f"refs/harness/patched/{key}") if (repo / ".git").exists() else None
        if cached and state_file.exists():
            items = [ItemResult(**i) for i in json.loads(state_file.read_text())["items"]]
            if git.rev_parse(repo, "HEAD") != cached or git.status_porcelain(repo):
                git.checkout_detached(repo, cached)
            return Prepared(recipe.name, repo, cached, lock.base_sha, lock.digest, items, drift, 0, cached=True)
        fetched = sources.fetch(lock)
        tree.ensure_repo(mirrors.values())
        commit, items = _apply_stack(recipe, lock, tree, skip_conflicts)
        git.update_ref(repo, f"refs/harness/patched/{key}", commit)
        atomic.write_json(state_file, {"commit": commit, "items": [i.to_json() for i in items]})
        git.checkout_detached(repo, commit)
    return Prepared(recipe.name, repo, commit, lock.base_sha, lock.digest, items, drift, fetched)


def _apply_stack(recipe: Recipe, lock: Lock, tree: Tree, skip_conflicts: bool) -> tuple[str, list[ItemResult]]:
    """Apply the items in the recipe's scratch worktree (kept between runs, so moving it to
    the base rewrites only what the last stack changed); the build tree is not touched."""
    repo = tree.src
    date = git.commit_time(repo, lock.base_sha)
    work = tree.stack_work
    if (work / ".git").exists():
        git.git(["reset", "--hard", "--quiet"], repo=work, check=False)
        git.checkout_detached(work, lock.base_sha)
    else:
        git.worktree_remove(repo, work)
        shutil.rmtree(work, ignore_errors=True)
        git.worktree_add(repo, work, lock.base_sha)
    results: list[ItemResult] = []
    for index, item in enumerate(lock.items):
        console.step(f"[{index + 1}/{len(lock.items)}] {item.label()}")
        result, report = _apply_item(recipe, lock, repo, work, item, index, date)
        if report is not None:
            if skip_conflicts:
                git.git(["reset", "--hard", "--quiet", "HEAD"], repo=work)
                console.warn(f"skipping {item.label()}: conflicts in {', '.join(f.path for f in report.files)}")
                results.append(result)
                continue
            report = _keep_conflict(tree, work, report, recipe, index)
            raise ConflictError(report, str(recipe.path))
        results.append(result)
        console.info(f"    {result.status}" + (f": {result.detail}" if result.detail else ""))
    head = git.git(["rev-parse", "HEAD"], repo=work).stdout.strip()
    return head, results


def _keep_conflict(tree: Tree, work: Path, report: ConflictReport, recipe: Recipe, index: int) -> ConflictReport:
    git.worktree_remove(tree.src, tree.conflict)
    shutil.rmtree(tree.conflict, ignore_errors=True)
    git.git(["worktree", "move", work, tree.conflict], repo=tree.src)  # the next run makes a new scratch tree
    report = ConflictReport(report.item, report.index, report.onto, report.files, str(tree.conflict))
    atomic.write_json(
        tree.state_dir / "conflict.json",
        {"recipe": str(recipe.path), "index": index, "onto": report.onto, "report": report.to_json()},
    )
    return report


def _result(item: LockedItem, status: str, detail: str = "", commit: str | None = None) -> ItemResult:
    return ItemResult(item.kind, item.ref, item.repo, item.pin, status, detail, commit)


def _apply_item(
    recipe: Recipe, lock: Lock, repo: Path, work: Path, item: LockedItem, index: int, date: int
) -> tuple[ItemResult, ConflictReport | None]:
    if item.retired:
        return _result(item, MERGED, f"retired in the lock: {item.retired}"), None
    if item.skipped:
        return _result(item, SKIPPED, f"skipped in the lock: {item.skipped}"), None
    onto = git.git(["rev-parse", "HEAD"], repo=work).stdout.strip()
    message = f"{item.label()}\n\nllama-harness stack item {index + 1}: {item.pin}\n"
    if item.kind == "patch":
        return _apply_patch(recipe, work, item, index, onto, date, message)
    assert item.sha is not None and item.repo is not None
    head = item.sha
    if git.is_ancestor(repo, head, onto):
        return _result(item, MERGED, "its head is already part of the tree"), None
    if item.kind == "commit":
        cmd = ["cherry-pick", "--no-commit", head]
        merge_base = f"{head}^"
    else:
        mirrors = sources.mirrors_for(lock)
        tips = [(mirrors[normalize_url(lock.upstream_repo)], lock.base_sha), (mirrors[normalize_url(item.repo)], head)]
        merge_base = sources.ensure_merge_base(repo, tips, onto, head)
        if merge_base == head:
            return _result(item, MERGED, "its head is already part of the tree"), None
        cmd = ["merge", "--squash", "--no-commit", head]
    res = git.git(cmd, repo=work, check=False)
    if res.returncode == 0:
        if git.staged_changes(work):
            return _result(item, APPLIED, commit=git.commit(work, message, date)), None
        return _result(item, MERGED, "upstream already has its changes"), None
    conflicted = git.unmerged_files(work)
    if not conflicted:
        raise StepError(f"{item.label()}: git {cmd[0]} failed:\n{(res.stderr + res.stdout).strip()}")
    # Before calling it a conflict: is the change upstream under another commit?
    git.git(["reset", "--hard", "--quiet", "HEAD"], repo=work)
    change = git.diff(repo, merge_base, head)
    if not change.strip():
        return _result(item, MERGED, "it changes nothing"), None
    why = _already_upstream(repo, work, change, f"{merge_base}..{onto}")
    if why:
        return _result(item, MERGED, why), None
    git.git(cmd, repo=work, check=False)  # restore the conflicted state for the user
    files = [FileConflict(path, hunks_from_markers(work / path)) for path in git.unmerged_files(work)]
    report = ConflictReport(item.label(), index, onto, files)
    return _result(item, CONFLICT, "conflicts in " + ", ".join(f.path for f in files)), report


def _already_upstream(repo: Path, work: Path, change: str, upstream_range: str) -> str | None:
    if git.git(["apply", "--check", "-R"], repo=work, input=change, check=False).returncode == 0:
        return "upstream contains its changes (it applies in reverse)"
    pid = git.patch_id(repo, change)
    if pid:
        same = git.patch_ids_of_range(repo, upstream_range).get(pid)
        if same:
            return f"same change as upstream commit {same[:12]} ({git.subject(repo, same)})"
    return None


def _apply_patch(
    recipe: Recipe, work: Path, item: LockedItem, index: int, onto: str, date: int, message: str
) -> tuple[ItemResult, ConflictReport | None]:
    text = sources.patch_text(recipe, item)
    if "\n+++ " not in text and not text.startswith("+++ ") and "GIT binary patch" not in text:
        raise InputError(f"{item.ref}: not a patch (no diff in it)")
    if git.git(["apply", "--check", "-R"], repo=work, input=text, check=False).returncode == 0:
        return _result(item, MERGED, "upstream contains its changes (it applies in reverse)"), None
    res = git.git(["apply", "--index", "--3way", "--whitespace=nowarn"], repo=work, input=text, check=False)
    if res.returncode == 0 and not git.unmerged_files(work):
        if git.staged_changes(work):
            return _result(item, APPLIED, commit=git.commit(work, message, date)), None
        return _result(item, MERGED, "it changes nothing here"), None
    files = [FileConflict(p, hunks_from_markers(work / p), "3-way merge conflict") for p in git.unmerged_files(work)]
    seen = {f.path for f in files}
    files += [f for f in files_from_apply_errors(res.stderr) if f.path not in seen]
    if not files:
        raise StepError(f"{item.ref}: git apply failed:\n{res.stderr.strip()}")
    report = ConflictReport(item.label(), index, onto, files)
    return _result(item, CONFLICT, "conflicts in " + ", ".join(f.path for f in files)), report
