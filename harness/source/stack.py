"""Applying a lock's stack: base commit + PRs / branches / commits / patches -> patched commit.

Each item is applied in a scratch worktree and committed with a fixed identity and the
base commit's date, so the same lock gives the same patched commit SHA on every machine.
An item upstream already contains (ancestor, empty merge, same patch-id as an upstream
commit, applies in reverse) is skipped as ``already-merged``.  The first conflict stops
the stack; its worktree is kept for the user to resolve.  A finished stack is remembered
by ``refs/harness/patched/<lock digest>``, so preparing it again costs nothing.

Patch items are applied the way ``git am -3`` would (see ``patchset``): every mail of an
mbox and every file of a ``patches:`` directory is its own commit; a patch made on an older
upstream commit gets the history its pre-image blobs are in before ``git apply --3way``, so
the answer does not depend on what the shared mirror happens to hold.  What cannot be a
patch (a binary change without data, a corrupt hunk, a zero-context diff) is bad input.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from harness import atomic, console
from harness.errors import CommandFailed, InputError, StepError
from harness.recipe.load import Recipe
from harness.source import fetch as sources
from harness.source import git, stack_state
from harness.source import patch_parts as patchset
from harness.source.conflicts import (
    ConflictError,
    ConflictReport,
    FileConflict,
    files_from_apply_errors,
    hunks_from_markers,
)
from harness.source.fetch import Drift
from harness.source.lock import Lock, LockedItem
from harness.source.mirror import CommitGone, Mirror
from harness.source.stack_state import ItemResult, PartResult
from harness.source.tree import Tree

APPLIED, MERGED, CONFLICT, SKIPPED = "applied", "already-merged", "conflict", "skipped"


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
            "drift": [d.to_json() for d in self.drift],
            "fetched_bytes": self.fetched_bytes,
            "cached": self.cached,
        }


@dataclass
class _Ctx:
    recipe: Recipe
    lock: Lock
    tree: Tree
    date: int
    mirrors: dict[str, Mirror]
    fetched: int = 0

    @property
    def repo(self) -> Path:
        return self.tree.src

    @property
    def work(self) -> Path:
        return self.tree.stack_work



def prepare(recipe: Recipe, lock: Lock, *, check_remote: bool = True, skip_conflicts: bool = False,
            frozen: bool = False, tree: Tree | None = None) -> Prepared:
    """The patched tree for ``lock``.  ``frozen``: a ``retired`` mark that no longer holds against the
    base (the item is not merged there) is an error (exit 1) instead of a warning, as with ``lock --check``.
    ``tree``: where to stack (default the recipe's own tree; bisect passes a private one)."""
    tree = tree or Tree.for_recipe(recipe)
    mirrors = sources.mirrors_for(lock)
    drift = sources.check_drift(lock) if check_remote else []
    for d in drift:
        console.warn(str(d))
    key = lock.digest + ("-skip-conflicts" if skip_conflicts else "")
    with tree.locked():
        state_file = tree.state_dir / f"{key}.json"
        repo = tree.src
        cached = git.rev_parse(repo, f"refs/harness/patched/{key}") if (repo / ".git").exists() else None
        state = stack_state.read(state_file, len(lock.items)) if cached else None
        if cached and state is not None:
            items = list(state.items)
            if git.rev_parse(repo, "HEAD") != cached or git.is_dirty(repo):
                git.checkout_detached(repo, cached)
            if frozen and (stale := _stale(lock, items)):
                raise stale_retired_error(recipe, lock, stale)
            return Prepared(recipe.name, repo, cached, lock.base_sha, lock.digest, items, drift, 0, cached=True)
        try:
            fetched = sources.fetch(lock)
        except CommitGone as exc:
            raise exc.for_recipe(recipe.path) from None
        tree.ensure_repo(mirrors.values())
        ctx = _Ctx(recipe, lock, tree, git.commit_time(repo, lock.base_sha), mirrors, fetched)
        commit, items = _apply_stack(ctx, skip_conflicts)
        git.update_ref(repo, f"refs/harness/patched/{key}", commit)
        stack_state.write(state_file, commit, items)
        git.checkout_detached(repo, commit)
    if frozen and (stale := _stale(lock, items)):
        raise stale_retired_error(recipe, lock, stale)
    return Prepared(recipe.name, repo, commit, lock.base_sha, lock.digest, items, drift, ctx.fetched)


def stale_retired(recipe: Recipe, lock: Lock) -> list[tuple[int, LockedItem, ItemResult]]:
    """(position, item, result) of each item marked ``retired`` in ``lock`` whose mark no longer holds
    against the lock's base: the stack is prepared (conflicts skipped), which re-verifies every mark the
    way ``_apply_item`` does (ancestor, patch-id, reverse apply).  Nothing is prepared without a mark."""
    if not any(item.retired for item in lock.items):
        return []
    return _stale(lock, prepare(recipe, lock, check_remote=False, skip_conflicts=True).items)


def _stale(lock: Lock, results: list[ItemResult]) -> list[tuple[int, LockedItem, ItemResult]]:
    return [(n, item, result) for n, (item, result) in enumerate(zip(lock.items, results, strict=True), start=1)
            if item.retired and result.status != MERGED]


def stale_problem(lock: Lock, n: int, item: LockedItem, result: ItemResult) -> str:
    """One line: the item, as the recipe names it, whose retired mark the base no longer bears out."""
    return (f"stack item {n} ({item.spec()}) is marked retired ({item.retired}), but the base "
            f"{lock.base_sha[:12]} does not have it ({result.status})")


def stale_retired_error(recipe: Recipe, lock: Lock, stale: list[tuple[int, LockedItem, ItemResult]]) -> StepError:
    return StepError(
        f"{recipe.lock_path}: " + "\n  ".join(stale_problem(lock, *s) for s in stale),
        hint=f"run `harness lock {shlex.quote(str(recipe.path))}`: it re-verifies every retired mark and drops "
        "those that no longer hold, so the item is built again",
    )


def _scratch_at_base(ctx: _Ctx) -> None:
    """Put the scratch worktree at the base (kept between runs, so only what the last stack
    changed is rewritten); one a killed git left unusable is made again."""
    work = ctx.work
    if (work / ".git").exists():
        try:
            git.reset_hard(work)
            git.checkout_detached(work, ctx.lock.base_sha)
            return
        except (CommandFailed, InputError) as exc:
            console.warn(f"making the scratch worktree {work} again: {str(exc).splitlines()[0]}")
    git.worktree_remove(ctx.repo, work)
    atomic.remove_tree(work, root=ctx.tree.root)
    git.worktree_add(ctx.repo, work, ctx.lock.base_sha)


def _apply_stack(ctx: _Ctx, skip_conflicts: bool) -> tuple[str, list[ItemResult]]:
    """Apply the items in the recipe's scratch worktree; the build tree is not touched."""
    _scratch_at_base(ctx)
    items = ctx.lock.items
    results: list[ItemResult] = []
    for index, item in enumerate(items):
        console.step(f"[{index + 1}/{len(items)}] {item.label()}")
        onto = git.head(ctx.work)
        result, report = _apply_item(ctx, item, index, onto)
        if report is not None:
            if skip_conflicts:
                git.reset_hard(ctx.work, onto)  # parts of a series committed before the conflict go too
                console.warn(f"skipping {item.label()}: conflicts in {', '.join(f.path for f in report.files)}")
                results.append(result)
                continue
            report = _keep_conflict(ctx, report, index)
            raise ConflictError(report, str(ctx.recipe.path))
        results.append(result)
        console.info(f"    {result.status}" + (f": {result.detail}" if result.detail else ""))
    return git.head(ctx.work), results


def _keep_conflict(ctx: _Ctx, report: ConflictReport, index: int) -> ConflictReport:
    tree = ctx.tree
    git.worktree_remove(tree.src, tree.conflict)
    atomic.remove_tree(tree.conflict, root=tree.root)
    git.worktree_move(tree.src, ctx.work, tree.conflict)  # the next run makes a new scratch tree
    report = replace(report, worktree=str(tree.conflict))
    atomic.write_json(
        tree.state_dir / "conflict.json",
        {"recipe": str(ctx.recipe.path), "index": index, "onto": report.onto, "report": report.to_json(),
         "lock": ctx.lock.to_json()},  # what the conflict was made against: `patches export` writes its pins
    )
    return report


def _result(item: LockedItem, status: str, detail: str = "", commit: str | None = None,
            parts: list[PartResult] | None = None) -> ItemResult:
    return ItemResult(kind=item.kind, ref=item.ref, repo=item.repo, pin=item.pin, status=status, detail=detail,
                      commit=commit, parts=tuple(parts) if parts is not None else None)


def _apply_item(ctx: _Ctx, item: LockedItem, index: int, onto: str) -> tuple[ItemResult, ConflictReport | None]:
    if item.retired:  # a mark is re-verified against the current base: a base moved back may lack the item
        result, report = _apply_item(ctx, item.replace(retired=None), index, onto)
        if result.status == MERGED:
            return result.replace(detail=f"retired in the lock ({item.retired}); still holds: {result.detail}"), None
        console.warn(f"{item.label()} is marked retired in the lock ({item.retired}), but the base "
                     f"{ctx.lock.base_sha[:12]} does not have it: it is applied again")
        return result.replace(detail=f"retired mark no longer holds; {result.detail}".rstrip("; ")), report
    if item.skipped:
        return _result(item, SKIPPED, f"skipped in the lock: {item.skipped}"), None
    if item.kind in ("patch", "patches"):
        return _apply_patch_item(ctx, item, index, onto)
    assert item.sha is not None and item.repo is not None
    repo, work, head = ctx.repo, ctx.work, item.sha
    message = f"{item.label()}\n\nllama-harness stack item {index + 1}: {item.pin}\n"
    if git.is_ancestor(repo, head, onto):
        return _result(item, MERGED, "its head is already part of the tree"), None
    upstream, mirror = ctx.mirrors[ctx.lock.upstream_repo], ctx.mirrors[item.repo]
    if item.kind == "commit":
        bases = [f"{head}^"]
        ctx.fetched += sources.prefetch_merge(repo, (upstream, onto), (mirror, head), bases)
        status, output = git.cherry_pick(work, head)
    else:
        bases = sources.merge_bases(repo, onto, head)
        if head in bases:
            return _result(item, MERGED, "its head is already part of the tree"), None
        ctx.fetched += sources.prefetch_merge(repo, (upstream, onto), (mirror, head), bases)
        status, output = git.squash_merge(work, head)
    if status == 0:
        if git.staged_changes(work):
            return _result(item, APPLIED, commit=git.commit(work, message, ctx.date)), None
        return _result(item, MERGED, "upstream already has its changes"), None
    if not git.unmerged_files(work):
        raise StepError(f"{item.label()}: git {'cherry-pick' if item.kind == 'commit' else 'merge'} failed:\n{output.strip()}")
    # Before calling it a conflict: is the change upstream under another commit?
    git.reset_hard(work)
    change = git.diff(repo, bases[0], head)  # against git's own pick of the merge bases (``git merge-base``)
    if not change.strip():
        return _result(item, MERGED, "it changes nothing"), None
    why = _already_upstream(ctx, change, [onto, *(f"^{b}" for b in bases)])
    if why:
        return _result(item, MERGED, why), None
    if item.kind == "commit":  # restore the conflicted state for the user
        git.cherry_pick(work, head)
    else:
        git.squash_merge(work, head)
    files = [FileConflict(path, hunks_from_markers(work / path)) for path in git.unmerged_files(work)]
    report = ConflictReport(item.label(), index, onto, files, spec=item.spec())
    return _result(item, CONFLICT, "conflicts in " + ", ".join(f.path for f in files)), report


def _already_upstream(ctx: _Ctx, change: bytes, upstream_range: list[str]) -> str | None:
    """Is ``change`` upstream under another commit?  It applies in reverse to the tree, or a commit of
    ``upstream_range`` has its patch-id (only commits touching its files are read, streamed)."""
    repo, work = ctx.repo, ctx.work
    if git.apply(work, change, "--check", "-R")[0] == 0:
        return "upstream contains its changes (it applies in reverse)"
    pid = git.patch_id(repo, change)
    if pid:
        paths = patchset.files(change)
        ctx.fetched += sources.prefetch_scan(repo, ctx.mirrors[ctx.lock.upstream_repo], upstream_range, paths)
        same = git.find_patch_id(repo, upstream_range, paths, pid)
        if same:
            return f"same change as upstream commit {same[:12]} ({git.subject(repo, same)})"
    return None


def patch_parts(recipe: Recipe, item: LockedItem) -> list[patchset.Part]:
    """The mails/diffs of a patch or patch-series item, as ``git am`` would read them; an
    InputError (exit 2) for a file with no diff in it or a binary change that carries no data.
    (``harness lock`` checks a file the same way, through ``patchset.checked_parts``, before it pins it.)"""
    if item.kind == "patches":
        files = sources.series_bytes(recipe, item)
    else:
        files = [(item.ref, sources.patch_bytes(recipe, item))]
    return patchset.checked_parts(files, item.label(), series=item.kind == "patches")


def _apply_patch_item(ctx: _Ctx, item: LockedItem, index: int, onto: str) -> tuple[ItemResult, ConflictReport | None]:
    parts = patch_parts(ctx.recipe, item)
    done: list[PartResult] = []
    for k, part in enumerate(parts, start=1):
        part_onto = git.head(ctx.work)
        status, detail, files = _apply_part(ctx, item, part, _what(item, part, len(parts)))
        if files is not None:
            multi = len(parts) > 1
            report = ConflictReport(item.label(), index, part_onto, files, part=part.name if multi else None, spec=item.spec())
            where = f"{part.name}: " if multi else ""
            return _result(item, CONFLICT, f"{where}conflicts in " + ", ".join(f.path for f in files)), report
        commit = None
        if status == APPLIED:
            if len(parts) == 1:
                message = f"{item.label()}\n\nllama-harness stack item {index + 1}: {item.pin}\n"
            else:
                title = part.subject or part.name
                message = f"{title}\n\n{item.label()} ({k}/{len(parts)}: {part.name})\nllama-harness stack item {index + 1}: {item.pin}\n"
            commit = git.commit(ctx.work, message, ctx.date)
        done.append(PartResult(name=part.name, status=status, detail=detail, commit=commit))
    if len(done) == 1:
        return _result(item, done[0].status, done[0].detail, done[0].commit), None
    applied = [d for d in done if d.status == APPLIED]
    status = APPLIED if applied else MERGED
    detail = f"{len(applied)} of {len(done)} commits applied"
    if len(applied) < len(done):
        detail += "; already merged: " + ", ".join(d.name for d in done if d.status != APPLIED)
    return _result(item, status, detail, applied[-1].commit if applied else None, done), None


def _what(item: LockedItem, part: patchset.Part, count: int) -> str:
    """How errors name a part: the item, and the part when the item has several."""
    return item.label() if count == 1 and item.kind == "patch" else f"{item.label()}, {part.name}"


def _apply_part(
    ctx: _Ctx, item: LockedItem, part: patchset.Part, what: str
) -> tuple[str, str, list[FileConflict] | None]:
    """Apply one part: (status, detail, None) or (CONFLICT, detail, the files that conflict)."""
    work, diff = ctx.work, part.diff
    note = "its CRLF line endings were made LF, as `git am` does" if part.crlf else ""
    status, err = git.apply(work, diff, "--check")
    if status != 0 and git.apply(work, diff, "--check", "-R")[0] == 0:
        return MERGED, "upstream contains its changes (it applies in reverse)", None
    if status == 0:  # (a patch that applies both ways, like a mode change, is applied: the result tells)
        status, err = git.apply(work, diff, "--index")
        if status != 0:
            raise StepError(f"{what}: git apply failed after its check passed:\n{err.strip()}")
        if not git.staged_changes(work):
            return MERGED, "it changes nothing here", None
        return APPLIED, note, None
    _refuse_malformed(what, part, err)
    p0 = patchset.p0_paths(diff, lambda path: (work / path).exists())
    if p0:
        raise InputError(
            f"{what}: made with -p0 (its paths {', '.join(p0[:3])} carry no a/ and b/ prefix), so git looks for them "
            "one directory too deep: a path problem, not a conflict",
            hint="regenerate it with `git diff` or `git format-patch` (or `diff -u a/FILE b/FILE`)",
        )
    # Direct application failed: merge 3-way from the blobs the patch was made on (fetching
    # the history they are in, as far as needed), like `git am -3`.
    missing, fetched = sources.ensure_blobs(ctx.repo, ctx.mirrors[ctx.lock.upstream_repo], ctx.lock.base_sha, diff)
    ctx.fetched += fetched
    status, err = git.apply(work, diff, "--index", "--3way")
    unmerged = git.unmerged_files(work)
    if status == 0 and not unmerged:
        detail = "merged 3-way onto the blobs it was made on (an older base)"
        return APPLIED, "; ".join(x for x in (detail, note) if x), None
    files = [FileConflict(p, hunks_from_markers(work / p), "3-way merge conflict") for p in unmerged]
    seen = {f.path for f in files}
    files += [f for f in files_from_apply_errors(err) if f.path not in seen]
    if not files:
        raise StepError(f"{what}: git apply failed:\n{err.strip()}")
    if missing:
        files = [FileConflict(f.path, f.hunks, f.message + " (the blobs it was made on are in no upstream commit)")
                 if not f.message.startswith("3-way") else f for f in files]
    return CONFLICT, "", files


def _refuse_malformed(what: str, part: patchset.Part, err: str) -> None:
    """Bad input (exit 2) for what git can never apply, named for what it is."""
    corrupt = patchset.corrupt_line(err)
    if corrupt is not None:
        problem, line = corrupt
        where = f"line {part.first_line + line - 1} of {part.name}" if part.first_line else f"line {line} of its diff ({part.name})"
        crlf = "; its line endings were CRLF and were made LF first, as `git am` does" if part.crlf else ""
        raise InputError(
            f"{what}: {problem} at {where}{crlf}",
            hint="the file was damaged after it was made (a wrapped or trimmed line, a hunk whose line counts do not match); "
            "regenerate it with `git format-patch`",
        )
    if "No valid patches in input" in err:
        raise InputError(f"{what}: not a patch git can read:\n{err.strip()}")
    if patchset.zero_context(part.diff):
        raise InputError(
            f"{what}: made without context lines (diff -U0), "
            "which `git am` and `git apply` refuse: nothing shows where its hunks belong",
            hint="regenerate it with context (the default: `git format-patch` or `git diff`)",
        )
