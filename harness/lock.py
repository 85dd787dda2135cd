"""Locks: every ref of a recipe resolved to a full SHA, every patch to a sha256.

The lock lives next to the recipe (same stem, ``.lock``), is JSON, and is meant to be
committed.  ``resolve`` keeps existing pins unless asked to update; every move is
returned as old -> new.  Resolution only asks remotes for ref names (``git ls-remote``);
no objects are fetched.
"""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from harness import atomic, console, git, hub
from harness.errors import CommandFailed, InputError, StepError
from harness.mirror import normalize_url
from harness.recipe import SHA40, Recipe, StackItem

SCHEMA = 1


@dataclass(frozen=True)
class LockedItem:
    kind: str  # pr | branch | commit | patch
    ref: str  # PR number, branch name, commit SHA, or patch path/URL as written in the recipe
    repo: str | None = None  # repository the commits come from (None for patches)
    fetch_ref: str | None = None  # the remote ref that was resolved (refs/pull/N/head, refs/heads/B)
    sha: str | None = None  # the pinned commit (pr, branch, commit)
    sha256: str | None = None  # the patch file's digest (patch)
    retired: str | None = None  # merged upstream (noticed by nightly): the stack skips it for good
    skipped: str | None = None  # conflicted and skipped by nightly (skip_conflicts); retried next night

    def identity(self) -> tuple[str, str, str]:
        return (self.kind, self.ref, normalize_url(self.repo) if self.repo else "")

    def label(self) -> str:
        if self.kind == "pr":
            return f"PR #{self.ref} of {self.repo}"
        if self.kind == "patch":
            return f"patch {self.ref}"
        return f"{self.kind} {self.ref} of {self.repo}"

    @property
    def pin(self) -> str:
        return self.sha or self.sha256 or ""


@dataclass(frozen=True)
class Lock:
    recipe: str
    upstream_repo: str
    upstream_ref: str
    base_sha: str
    items: tuple[LockedItem, ...] = ()
    model: dict[str, str] = field(default_factory=dict)
    draft: dict[str, Any] = field(default_factory=dict)  # {source, file, revision, files}: a Hub draft model
    schema: int = SCHEMA

    def to_json(self) -> dict[str, Any]:
        return {
            "schema": self.schema,
            "recipe": self.recipe,
            "upstream": {"repo": self.upstream_repo, "ref": self.upstream_ref, "sha": self.base_sha},
            "stack": [{k: v for k, v in asdict(item).items() if v is not None} for item in self.items],
            **({"model": self.model} if self.model else {}),
            **({"draft": self.draft} if self.draft else {}),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any], where: Path) -> Lock:
        try:
            if data.get("schema") != SCHEMA:
                raise InputError(f"{where}: lock schema {data.get('schema')!r} is not {SCHEMA}; run `harness lock --update`")
            up = data["upstream"]
            items = tuple(LockedItem(**item) for item in data.get("stack", []))
            lock = cls(
                recipe=data["recipe"],
                upstream_repo=up["repo"],
                upstream_ref=up["ref"],
                base_sha=up["sha"],
                items=items,
                model=dict(data.get("model", {})),
                draft=dict(data.get("draft", {})),
            )
        except (KeyError, TypeError) as exc:
            raise InputError(f"{where}: malformed lock ({exc}); delete it and run `harness lock`") from None
        for sha in [lock.base_sha, *[i.sha for i in items if i.sha]]:
            if not SHA40.match(sha):
                raise InputError(f"{where}: {sha!r} is not a full SHA")
        return lock

    @property
    def digest(self) -> str:
        """Identifies the source tree the lock describes (recipe name excluded)."""
        data = self.to_json()
        data.pop("recipe")
        data.pop("model", None)
        data.pop("draft", None)
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


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


def read(path: Path) -> Lock | None:
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise InputError(f"{path}:{exc.lineno}: not valid JSON: {exc.msg}") from None
    return Lock.from_json(data, path)


def write(path: Path, lock: Lock) -> None:
    atomic.write_json(path, lock.to_json())


def locked_item_for(recipe: Recipe, item: StackItem) -> LockedItem:
    """The identity part of an item (no pins yet)."""
    upstream = recipe.spec.upstream.repo
    if item.kind == "pr":
        return LockedItem("pr", str(item.pr), item.repo or upstream, fetch_ref=f"refs/pull/{item.pr}/head")
    if item.kind == "branch":
        return LockedItem("branch", str(item.branch), item.repo or upstream, fetch_ref=f"refs/heads/{item.branch}")
    if item.kind == "commit":
        return LockedItem("commit", str(item.commit), item.repo or upstream, sha=item.commit)
    return LockedItem("patch", str(item.patch), sha256=item.sha256)


def patch_digest(recipe: Recipe, item: LockedItem) -> str:
    if item.ref.startswith(("http://", "https://")):
        assert item.sha256 is not None
        return item.sha256
    return atomic.sha256_file(recipe.resolve_local(item.ref))


def resolve(
    recipe: Recipe, existing: Lock | None, *, update: bool = False, keep_gone: bool = False
) -> tuple[Lock, list[Move]]:
    """The lock for ``recipe``: existing pins kept (unless ``update``), the rest resolved.

    With ``keep_gone`` a ref that disappeared keeps its old pin (reported as a gone Move)
    instead of failing: nightly reports it and still tries the old SHA.
    """
    spec = recipe.spec
    moves: list[Move] = []
    old_items = {i.identity(): i for i in existing.items} if existing else {}
    wanted = [locked_item_for(recipe, item) for item in spec.stack]

    # which remote refs we must ask about, batched per repository
    queries: dict[str, set[str]] = defaultdict(set)
    keep_base = (
        existing is not None
        and not update
        and normalize_url(existing.upstream_repo) == normalize_url(spec.upstream.repo)
        and existing.upstream_ref == spec.upstream.ref
    )
    if not keep_base and not SHA40.match(spec.upstream.ref):
        queries[spec.upstream.repo].update(_ref_candidates(spec.upstream.ref))
    for item in wanted:
        if item.fetch_ref and (update or item.identity() not in old_items):
            queries[item.repo or spec.upstream.repo].add(item.fetch_ref)
    answers = {repo: _ls_remote(repo, sorted(refs)) for repo, refs in queries.items()}

    if keep_base:
        assert existing is not None
        base = existing.base_sha
    elif SHA40.match(spec.upstream.ref):
        base = spec.upstream.ref
    else:
        base = _pick_ref(answers[spec.upstream.repo], spec.upstream.ref, spec.upstream.repo)
    if existing is None or existing.base_sha != base:
        moves.append(Move(f"upstream {spec.upstream.ref}", existing.base_sha if existing else None, base))

    items: list[LockedItem] = []
    for item in wanted:
        old = old_items.get(item.identity())
        if item.kind == "patch":
            new = replace(item, sha256=patch_digest(recipe, item))
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
                raise StepError(f"{item.label()}: {item.fetch_ref} not found at {item.repo}")
            new = replace(item, sha=sha, retired=old.retired if old is not None and old.sha == sha else None)
        if old is None or old.pin != new.pin:
            moves.append(Move(new.label(), old.pin if old else None, new.pin))
        items.append(new)
    model = _resolve_model(recipe, existing, update, moves)
    draft = _resolve_draft(recipe, existing, update, moves)
    return Lock(recipe.name, spec.upstream.repo, spec.upstream.ref, base, tuple(items), model, draft), moves


def _resolve_model(recipe: Recipe, existing: Lock | None, update: bool, moves: list[Move]) -> dict[str, str]:
    """``{"source", "revision"}`` for a Hugging Face repo id in ``model.source`` (nothing for local paths)."""
    section = recipe.spec.model
    if section is None:
        return {}
    old = dict(existing.model) if existing and existing.model else {}
    if old.get("source") == section.source and not update and (section.revision in (None, old.get("revision"))):
        return old
    if hub.is_local(section.source):
        return {}
    revision = hub.resolve_revision(section.source, section.revision)
    if revision is None:
        return {}
    if old.get("revision") != revision:
        moves.append(Move(f"model {section.source}", old.get("revision"), revision))
    return {"source": section.source, "revision": revision}


def _resolve_draft(recipe: Recipe, existing: Lock | None, update: bool, moves: list[Move]) -> dict[str, Any]:
    """``{source, file, revision, files}`` for a Hugging Face ``draft:`` (nothing for a local path):
    the commit the revision names and the files ``file`` matches there (:func:`harness.hub.draft_files`)."""
    d = recipe.spec.draft
    if d is None or d.is_local:
        return {}
    old = dict(existing.draft) if existing and existing.draft else {}
    same = old.get("source") == d.source and old.get("file") == d.file
    if same and not update and d.revision in (None, old.get("revision")) and old.get("files"):
        return old
    found = hub.draft_files(d.source, d.revision, d.file or "")
    if found is None:
        return {}
    revision, files = found
    if old.get("revision") != revision:
        moves.append(Move(f"draft {d.source}", old.get("revision"), revision))
    return {"source": d.source, "file": d.file, "revision": revision, "files": files}


def check(recipe: Recipe, lock: Lock) -> list[str]:
    """Ways the recipe and its lock disagree (empty when they agree)."""
    spec = recipe.spec
    problems: list[str] = []
    if normalize_url(lock.upstream_repo) != normalize_url(spec.upstream.repo) or lock.upstream_ref != spec.upstream.ref:
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
        if lock.model.get("source") != spec.model.source:
            problems.append(f"model: recipe has {spec.model.source}, lock has {lock.model.get('source')}")
        elif spec.model.revision and SHA40.match(spec.model.revision) and spec.model.revision != lock.model.get("revision"):
            problems.append(f"model: recipe pins {spec.model.revision}, lock has {lock.model.get('revision')}")
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
    else:
        for item in lock.items:
            if item.kind == "patch":
                try:
                    digest = patch_digest(recipe, item)
                except (OSError, ValueError) as exc:
                    problems.append(f"{item.label()}: {exc}")
                    continue
                if digest != item.sha256:
                    problems.append(f"{item.label()}: sha256 is {digest[:12]}, lock has {(item.sha256 or '')[:12]}")
    return problems


def _draft_problems(recipe: Recipe, lock: Lock) -> list[str]:
    d = recipe.spec.draft
    if d is None or d.is_local:
        return ["draft: the lock pins a draft model the recipe no longer names"] if lock.draft else []
    if not lock.draft:
        return [f"draft: the revision of {d.source} is not resolved (locked offline?); "
                "run `harness lock` with the Hugging Face Hub reachable"]
    if (lock.draft.get("source"), lock.draft.get("file")) != (d.source, d.file):
        return [f"draft: recipe has {d.source} {d.file}, lock has {lock.draft.get('source')} {lock.draft.get('file')}"]
    if d.revision and SHA40.match(d.revision) and d.revision != lock.draft.get("revision"):
        return [f"draft: recipe pins {d.revision}, lock has {lock.draft.get('revision')}"]
    return []


def ensure(recipe: Recipe, *, frozen: bool = False) -> Lock:
    """The lock every command uses: read it, or create/extend it (keeping pins) on first use."""
    existing = read(recipe.lock_path)
    if existing is not None and not check(recipe, existing):
        return existing
    if frozen:
        if existing is None:
            raise InputError(f"{recipe.lock_path}: no lock (and --frozen); run `harness lock {recipe.path}`")
        raise InputError(f"{recipe.lock_path}: lock disagrees with the recipe (and --frozen):\n  " + "\n  ".join(check(recipe, existing)))
    lock, moves = resolve(recipe, existing)
    write(recipe.lock_path, lock)
    console.info(f"{'updated' if existing else 'wrote'} {recipe.lock_path}")
    for move in moves:
        console.info(f"  {move}")
    return lock


def _ref_candidates(ref: str) -> list[str]:
    if ref.startswith("refs/"):
        return [ref, f"{ref}^{{}}"]
    return [f"refs/heads/{ref}", f"refs/tags/{ref}", f"refs/tags/{ref}^{{}}"]


def _pick_ref(answers: dict[str, str], ref: str, repo: str) -> str:
    for name in (f"{ref}^{{}}", ref, f"refs/tags/{ref}^{{}}", f"refs/tags/{ref}", f"refs/heads/{ref}"):
        if name in answers:
            return answers[name]
    raise StepError(f"upstream ref {ref!r} not found at {repo} (no branch or tag of that name)")


def _ls_remote(repo: str, refs: list[str]) -> dict[str, str]:
    try:
        return git.ls_remote(repo, refs)
    except CommandFailed as exc:
        raise StepError(f"cannot reach {repo} to resolve refs: {exc.output_tail.strip() or exc}") from None
