"""Locking a recipe: every ref resolved to a full SHA, every patch to a sha256, as a :class:`Lock`.

``resolve`` keeps existing pins unless asked to update; every move is returned as old -> new.
Resolution only asks remotes for ref names (``git ls-remote``, :mod:`harness.source.remote_refs`);
when the caller fetches the sources next (``ensure(fetch=True)``: prepare, build), the full SHAs
the recipe names itself are fetched first, so one the repository lacks is refused before the lock
is written (``verify_pins``).  URL patches are downloaded once to check them against the recipe's
sha256.  ``check`` says how a lock and its recipe disagree; ``ensure`` is the lock every command uses.
The file itself (its model, read and write) is :mod:`harness.source.lock`.
"""

from __future__ import annotations

import hashlib
import shlex
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from harness import atomic, console
from harness.errors import HarnessError, InputError, StepError
from harness.recipe.load import Recipe
from harness.recipe.stack_items import SHA40, StackItem, is_url
from harness.source import download, hub, mirror
from harness.source import patch_parts as patchset
from harness.source.lock import Lock, LockedItem, UpstreamPin, read, write
from harness.source.lock_models import DraftPin, ModelPin
from harness.source.remote_refs import did_you_mean, ls_remote_for, pick_ref, ref_candidates


@dataclass(frozen=True)
class Move:
    what: str
    old: str | None
    new: str
    gone: bool = False  # the ref no longer exists; the old pin is kept

    def __str__(self) -> str:
        if self.gone:
            return f"{self.what}: ref is gone (keeping {(self.old or '')[:12]})"
        return f"{self.what}: {(self.old or '(new)')[:12]} -> {self.new[:12]}"



def verify_pins(lock: Lock, existing: Lock | None, recipe: Path) -> None:
    """Before ``lock`` is written: every full SHA the recipe names itself (``upstream.ref``, ``commit:``
    items) that ``existing`` did not pin already is fetched into its mirror (with its history, as
    ``prepare`` needs it next), so a SHA the repository lacks is ``mirror.PinnedShaMissing`` (exit 2)
    and never reaches the lock.  The refs ``resolve`` asked for exist: the remote named their SHAs.
    An unreachable repository is one screen naming the recipe items that need it, git's reason under it."""
    wanted: dict[str, list[mirror.Want]] = defaultdict(list)
    same_base = existing is not None and (existing.upstream_repo, existing.base_sha) == (lock.upstream_repo, lock.base_sha)
    if SHA40.match(lock.upstream_ref) and not same_base:
        wanted[lock.upstream_repo].append(mirror.Want(lock.base_sha, None, f"upstream (ref: {lock.upstream_ref})", from_recipe=True))
    old = {(i.repo, i.sha) for i in existing.items} if existing is not None else set()
    for n, item in enumerate(lock.items, start=1):
        if item.kind == "commit" and item.repo and item.sha and (item.repo, item.sha) not in old:
            wanted[item.repo].append(mirror.Want(item.sha, None, f"stack item {n} ({item.spec()})", from_recipe=True))
    for repo, wants in wanted.items():
        try:
            with mirror.Mirror.for_url(repo).locked() as m:
                m.fetch(wants)
        except InputError:
            raise  # PinnedShaMissing names its item already
        except StepError as exc:
            users = ", ".join(w.label for w in wants)
            raise StepError(f"{recipe}: {users}: {exc.message}", hint=exc.hint) from None


def locked_item_for(recipe: Recipe, item: StackItem) -> LockedItem:
    """The identity part of an item (no pins yet; a URL patch carries the recipe's sha256)."""
    upstream = recipe.spec.upstream.repo
    if item.kind == "pr":
        return LockedItem(kind="pr", ref=str(item.pr), repo=item.repo or upstream, fetch_ref=f"refs/pull/{item.pr}/head")
    if item.kind == "branch":
        return LockedItem(kind="branch", ref=str(item.branch), repo=item.repo or upstream,
                          fetch_ref=f"refs/heads/{item.branch}")
    if item.kind == "commit":
        return LockedItem(kind="commit", ref=str(item.commit), repo=item.repo or upstream, sha=item.commit)
    if item.kind == "patches":
        return LockedItem(kind="patches", ref=str(item.patches))
    return LockedItem(kind="patch", ref=str(item.patch), sha256=item.sha256)


def series_files(recipe: Recipe, ref: str) -> list[Path]:
    """The ``*.patch`` files of a series directory, in name order (the order they are applied in)."""
    directory = recipe.resolve_local(ref)
    if not directory.is_dir():
        raise InputError(f"patch series {ref}: no such directory ({directory})")
    files = sorted(p for p in directory.glob("*.patch") if p.is_file())
    if not files:
        raise InputError(f"patch series {ref}: no *.patch files in {directory}")
    return files


def series_digest(files: tuple[tuple[str, str], ...]) -> str:
    """One sha256 for a series: over ``<sha256>  <name>`` lines (sha256sum's format), in order."""
    return hashlib.sha256("".join(f"{digest}  {name}\n" for name, digest in files).encode()).hexdigest()


def pin_patch(recipe: Recipe, item: LockedItem, *, fresh: bool = False) -> LockedItem:
    """``item`` with the digest(s) of its patch content as it is now.

    A local patch is hashed; a series directory is hashed file by file; a URL patch is
    downloaded (from the cache unless ``fresh``) and must have the recipe's sha256.
    """
    if item.kind == "patches":
        files = tuple((p.name, atomic.sha256_file(p)) for p in series_files(recipe, item.ref))
        return item.replace(files=files, sha256=series_digest(files))
    if is_url(item.ref):
        assert item.sha256 is not None, "validated: a URL patch has sha256"
        download.patch(item.ref, item.sha256, label=item.label(), fresh=fresh)
        return item
    path = recipe.resolve_local(item.ref)
    try:
        return item.replace(sha256=atomic.sha256_file(path))
    except OSError as exc:
        raise InputError(f"{item.label()}: cannot read {path}: {exc.strerror}") from None


def _patch_files(recipe: Recipe, item: LockedItem) -> list[tuple[str, bytes]]:
    """(name, content) of each file of a patch item that ``pin_patch`` just read (or downloaded)."""
    if is_url(item.ref):
        assert item.sha256 is not None
        return [(item.ref, download.patch(item.ref, item.sha256, label=item.label()))]
    paths = series_files(recipe, item.ref) if item.kind == "patches" else [recipe.resolve_local(item.ref)]
    try:
        return [(p.name if item.kind == "patches" else item.ref, p.read_bytes()) for p in paths]
    except OSError as exc:
        raise InputError(f"{item.label()}: cannot read {exc.filename}: {exc.strerror}") from None


def patch_digest(recipe: Recipe, item: LockedItem) -> str:
    pinned = pin_patch(recipe, item)
    assert pinned.sha256 is not None
    return pinned.sha256


def resolve(
    recipe: Recipe, existing: Lock | None, *, update: bool = False, keep_gone: bool = False
) -> tuple[Lock, list[Move]]:
    """The lock for ``recipe``: existing pins kept (unless ``update``), the rest resolved.

    With ``keep_gone`` a ref that disappeared keeps its old pin (reported as a gone Move)
    instead of failing: nightly reports it and still tries the old SHA.  URL patches are
    downloaded (again with ``update``) and must match the recipe's sha256.
    """
    spec = recipe.spec
    moves: list[Move] = []
    old_items = {i.identity(): i for i in existing.items} if existing else {}
    wanted = [locked_item_for(recipe, item) for item in spec.stack]

    # which remote refs we must ask about, batched per repository
    queries: dict[str, set[str]] = defaultdict(set)
    users: dict[str, list[str]] = defaultdict(list)  # repository -> the recipe items that need it, for errors
    keep_base = (
        existing is not None
        and not update
        and existing.upstream_repo == spec.upstream.repo
        and existing.upstream_ref == spec.upstream.ref
    )
    if not keep_base and not SHA40.match(spec.upstream.ref):
        queries[spec.upstream.repo].update(ref_candidates(spec.upstream.ref))
        users[spec.upstream.repo].append(f"upstream (ref: {spec.upstream.ref})")
    for n, item in enumerate(wanted, start=1):
        if item.fetch_ref and (update or item.identity() not in old_items):
            queries[item.repo or spec.upstream.repo].add(item.fetch_ref)
            users[item.repo or spec.upstream.repo].append(f"stack item {n} ({item.spec()})")
    answers = {repo: ls_remote_for(repo, sorted(refs), users[repo], recipe.path) for repo, refs in queries.items()}

    if keep_base:
        assert existing is not None
        base = existing.base_sha
    elif SHA40.match(spec.upstream.ref):
        base = spec.upstream.ref
    else:
        base = pick_ref(answers[spec.upstream.repo], spec.upstream.ref, spec.upstream.repo)
    if existing is None or existing.base_sha != base:
        moves.append(Move(f"upstream {spec.upstream.ref}", existing.base_sha if existing else None, base))

    items: list[LockedItem] = []
    for item in wanted:
        old = old_items.get(item.identity())
        if item.kind in ("patch", "patches"):
            new = pin_patch(recipe, item, fresh=update)
            if old is None or old.sha256 != new.sha256:  # new content: is it a patch git can apply?
                patchset.checked_parts(_patch_files(recipe, new), new.label(), series=new.kind == "patches")
            if old is not None and (old.retired or old.skipped) and old.sha256 == new.sha256:
                new = new.replace(retired=old.retired, skipped=old.skipped)
        elif item.kind == "commit":
            new = item
        elif old is not None and not update:
            new = old
        else:
            assert item.fetch_ref is not None and item.repo is not None
            sha = answers[item.repo].get(item.fetch_ref)
            if sha is None and keep_gone and old is not None:
                moves.append(Move(old.label(), old.pin, old.pin, gone=True))
                items.append(old)
                continue
            if sha is None:
                raise InputError(f"{recipe.path}: {item.label()}: {item.fetch_ref} not found at {item.repo}",
                                 hint=("check the number, or give the item `repo:` when the PR is another repository's"
                                       if item.kind == "pr" else did_you_mean(item.ref, item.repo)))
            new = item.replace(sha=sha, retired=old.retired if old is not None and old.sha == sha else None)
        if old is None or old.pin != new.pin:
            moves.append(Move(new.label(), old.pin if old else None, new.pin))
        items.append(new)
    model = _resolve_model(recipe, existing, update, moves)
    draft = _resolve_draft(recipe, existing, update, moves)
    upstream = UpstreamPin(repo=spec.upstream.repo, ref=spec.upstream.ref, sha=base)
    return Lock(recipe=recipe.name, upstream=upstream, stack=tuple(items), model=model, draft=draft), moves


def _resolve_model(recipe: Recipe, existing: Lock | None, update: bool, moves: list[Move]) -> ModelPin | None:
    """The commit of a Hugging Face repo id in ``model.source`` (None for a local path)."""
    section = recipe.spec.model
    if section is None:
        return None
    old = existing.model if existing is not None else None
    if old is not None and old.source == section.source and not update and section.revision in (None, old.revision):
        return old
    if hub.is_local(section.source):
        return None
    revision = hub.resolve_revision(section.source, section.revision)
    if revision is None:
        return None
    if old is None or old.revision != revision:
        moves.append(Move(f"model {section.source}", old.revision if old else None, revision))
    return ModelPin(source=section.source, revision=revision)


def _resolve_draft(recipe: Recipe, existing: Lock | None, update: bool, moves: list[Move]) -> DraftPin | None:
    """``{source, file, revision, files}`` for a Hugging Face ``draft:`` (None for a local path):
    the commit the revision names and the files ``file`` matches there (:func:`harness.source.hub.draft_files`)."""
    d = recipe.spec.draft
    if d is None or d.is_local:
        return None
    old = existing.draft if existing is not None else None
    same = old is not None and old.source == d.source and old.file == d.file
    if old is not None and same and not update and d.revision in (None, old.revision):
        return old
    found = hub.draft_files(d.source, d.revision, d.file or "")
    if found is None:
        return None
    revision, files = found
    if old is None or old.revision != revision:
        moves.append(Move(f"draft {d.source}", old.revision if old else None, revision))
    return DraftPin(source=d.source, file=d.file, revision=revision, files=files)


def check(recipe: Recipe, lock: Lock, *, remote: bool = False) -> list[str]:
    """Ways the recipe and its lock disagree (empty when they agree).

    Compares what the recipe says (upstream, items, pinned SHAs, URL patches' sha256) with
    what the lock holds, and every local patch's content with its locked digest.  With
    ``remote`` a URL patch is downloaded again and compared too (has it moved upstream?).
    """
    spec = recipe.spec
    problems: list[str] = []
    if lock.upstream_repo != spec.upstream.repo or lock.upstream_ref != spec.upstream.ref:
        problems.append(
            f"upstream: recipe has {spec.upstream.repo} @ {spec.upstream.ref}, lock has {lock.upstream_repo} @ {lock.upstream_ref}"
        )
    if SHA40.match(spec.upstream.ref) and lock.base_sha != spec.upstream.ref:
        problems.append(f"upstream: recipe pins {spec.upstream.ref}, lock has {lock.base_sha}")
    if spec.model is not None and not lock.model and not hub.is_local(spec.model.source):
        problems.append(
            f"model: the revision of {spec.model.source} is not resolved (locked offline?); "
            "run `harness lock` with the Hugging Face Hub reachable"
        )
    if spec.model is not None and lock.model:
        if lock.model.source != spec.model.source:
            problems.append(f"model: recipe has {spec.model.source}, lock has {lock.model.source}")
        elif spec.model.revision and SHA40.match(spec.model.revision) and spec.model.revision != lock.model.revision:
            problems.append(f"model: recipe pins {spec.model.revision}, lock has {lock.model.revision}")
    problems += _draft_problems(recipe, lock)
    wanted = [locked_item_for(recipe, item) for item in spec.stack]
    if [w.identity() for w in wanted] != [i.identity() for i in lock.items]:
        problems.append(
            "stack: recipe has ["
            + ", ".join(w.label() for w in wanted)
            + "], lock has ["
            + ", ".join(i.label() for i in lock.items)
            + "]"
        )
        return problems
    for want, item in zip(wanted, lock.items, strict=True):
        if item.kind not in ("patch", "patches"):
            continue
        if want.sha256 is not None and want.sha256 != item.sha256:  # a URL patch's digest, edited in the recipe
            problems.append(f"{item.label()}: recipe says sha256 {want.sha256[:12]}, lock has {(item.sha256 or '')[:12]}")
            continue
        if is_url(item.ref) and not remote:
            continue
        try:
            now = pin_patch(recipe, item, fresh=remote)
        except HarnessError as exc:
            problems.append(f"{item.label()}: {str(exc).splitlines()[0]}")
            continue
        if now.sha256 != item.sha256:
            changed = ""
            if item.kind == "patches":
                before, after = dict(item.files or ()), dict(now.files or ())
                names = sorted(n for n in {*before, *after} if before.get(n) != after.get(n))
                changed = " (changed: " + ", ".join(names) + ")"
            problems.append(f"{item.label()}: sha256 is {(now.sha256 or '')[:12]}, lock has {(item.sha256 or '')[:12]}{changed}")
    return problems


def _draft_problems(recipe: Recipe, lock: Lock) -> list[str]:
    d = recipe.spec.draft
    if d is None or d.is_local:
        return ["draft: the lock pins a draft model the recipe no longer names"] if lock.draft else []
    if not lock.draft:
        return [f"draft: the revision of {d.source} is not resolved (locked offline?); "
                "run `harness lock` with the Hugging Face Hub reachable"]
    if (lock.draft.source, lock.draft.file) != (d.source, d.file):
        return [f"draft: recipe has {d.source} {d.file}, lock has {lock.draft.source} {lock.draft.file}"]
    if d.revision and SHA40.match(d.revision) and d.revision != lock.draft.revision:
        return [f"draft: recipe pins {d.revision}, lock has {lock.draft.revision}"]
    return []


def frozen_error(recipe: Recipe, problems: list[str] | None) -> InputError:
    """What --frozen says when the lock is missing (``problems`` None) or disagrees with the recipe."""
    if problems is None:
        return InputError(f"{recipe.lock_path}: no lock (and --frozen); run `harness lock {shlex.quote(str(recipe.path))}`")
    return InputError(f"{recipe.lock_path}: lock disagrees with the recipe (and --frozen):\n  " + "\n  ".join(problems))


def ensure(recipe: Recipe, *, frozen: bool = False, fetch: bool = False) -> Lock:
    """The lock every command uses: read it, or create/extend it (keeping pins) on first use.

    ``fetch``: the caller fetches the sources next (prepare, build), so the SHAs the recipe names
    itself are fetched before a new lock is written (:func:`verify_pins`): one the repository lacks
    is exit 2 and the lock is left as it was.  Without it (serve, a draft's pin) no git object is fetched."""
    existing = read(recipe.lock_path)
    problems = check(recipe, existing) if existing is not None else []
    if existing is not None and not problems:
        return existing
    if frozen:
        raise frozen_error(recipe, problems if existing is not None else None)
    lock, moves = resolve(recipe, existing)
    if fetch:
        verify_pins(lock, existing, recipe.path)
    write(recipe.lock_path, lock)
    console.info(f"{'updated' if existing else 'wrote'} {recipe.lock_path}")
    for move in moves:
        console.info(f"  {move}")
    return lock

