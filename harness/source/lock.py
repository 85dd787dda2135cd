"""Locks: every ref of a recipe resolved to a full SHA, every patch to a sha256.

The lock lives next to the recipe (same stem, ``.lock``), is JSON, and is meant to be
committed.  ``resolve`` keeps existing pins unless asked to update; every move is
returned as old -> new.  Resolution only asks remotes for ref names (``git ls-remote``);
when the caller fetches the sources next (``ensure(fetch=True)``: prepare, build), the full
SHAs the recipe names itself are fetched first, so one the repository lacks is refused before
the lock is written (``verify_pins``).
URL patches are downloaded once to check them against the recipe's sha256.  A lock file is
validated against a schema before it is used (its ``model`` and ``draft`` pins too): a bad
one is exit 2 naming the file and key, never a traceback.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
from collections import defaultdict
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from harness import atomic, console, readlimits
from harness.errors import CommandFailed, HarnessError, InputError, StepError
from harness.recipe import yamlpos
from harness.recipe.schema import SHA40, SHA256, Recipe, StackItem, is_url, normalize_repo_url
from harness.source import download, git, hub, lock_models, mirror
from harness.source import patch_parts as patchset

SCHEMA = 1


# ---- the lock file's schema (validated before anything reads it) ----------------------------


class _Schema(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _sha40(value: str | None) -> str | None:
    if value is not None and not SHA40.match(value):
        raise ValueError(f"not a full 40-hex SHA: {value!r}")
    return value


def _sha256(value: str | None) -> str | None:
    if value is not None and not SHA256.match(value):
        raise ValueError(f"not a sha256 (64 lowercase hex digits): {value!r}")
    return value


class _UpstreamPin(_Schema):
    repo: str
    ref: str
    sha: str

    _sha = field_validator("sha")(_sha40)
    _repo = field_validator("repo")(normalize_repo_url)


class _ItemPin(_Schema):
    kind: Literal["pr", "branch", "commit", "patch", "patches"]
    ref: str
    repo: str | None = None
    fetch_ref: str | None = None
    sha: str | None = None
    sha256: str | None = None
    files: dict[str, str] | None = None
    retired: str | None = None
    skipped: str | None = None

    _sha = field_validator("sha")(_sha40)
    _sha256 = field_validator("sha256")(_sha256)
    _repo = field_validator("repo")(lambda v: v if v is None else normalize_repo_url(v))

    @field_validator("files")
    @classmethod
    def _files(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        for name, digest in (value or {}).items():
            if "/" in name or name in ("", ".", ".."):
                raise ValueError(f"not a file name: {name!r}")
            _sha256(digest)
        return value

    @model_validator(mode="after")
    def _pins(self) -> _ItemPin:
        if self.kind in ("pr", "branch", "commit"):
            if self.repo is None or self.sha is None:
                raise ValueError(f"a {self.kind} item needs repo and sha")
            if self.kind != "commit" and self.fetch_ref is None:
                raise ValueError(f"a {self.kind} item needs fetch_ref")
        elif self.sha256 is None:
            raise ValueError(f"a {self.kind} item needs sha256")
        if self.kind == "patches" and not self.files:
            raise ValueError("a patches item needs files (name -> sha256)")
        return self


class _LockFile(_Schema):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    schema_: int = Field(alias="schema")
    recipe: str
    upstream: _UpstreamPin
    stack: list[_ItemPin] = Field(default_factory=list)
    model: lock_models.ModelPin | None = None  # a hand edit is refused on reading, naming the key
    draft: lock_models.DraftPin | None = None


# ---- the lock as the rest of the harness sees it --------------------------------------------


@dataclass(frozen=True)
class LockedItem:
    kind: str  # pr | branch | commit | patch | patches
    ref: str  # PR number, branch name, commit SHA, patch path/URL or series directory, as written in the recipe
    repo: str | None = None  # repository the commits come from (None for patches)
    fetch_ref: str | None = None  # the remote ref that was resolved (refs/pull/N/head, refs/heads/B)
    sha: str | None = None  # the pinned commit (pr, branch, commit)
    sha256: str | None = None  # the patch file's digest (patch), the series' digest (patches)
    files: tuple[tuple[str, str], ...] | None = None  # (file name, sha256) of a series, in order (patches)
    retired: str | None = None  # merged upstream (noticed by nightly): the stack skips it for good
    skipped: str | None = None  # conflicted and skipped by nightly (skip_conflicts); retried next night

    def identity(self) -> tuple[str, str, str]:
        return (self.kind, self.ref, self.repo or "")

    def label(self) -> str:
        if self.kind == "pr":
            return f"PR #{self.ref} of {self.repo}"
        if self.kind == "patch":
            return f"patch {self.ref}"
        if self.kind == "patches":
            return f"patch series {self.ref}"
        return f"{self.kind} {self.ref} of {self.repo}"

    def spec(self) -> str:
        """The item as the recipe writes it: ``pr: 31``, ``patch: patches/x.patch``."""
        return f"{self.kind}: {self.ref}"

    @property
    def pin(self) -> str:
        return self.sha or self.sha256 or ""

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key in ("kind", "ref", "repo", "fetch_ref", "sha", "sha256", "files", "retired", "skipped"):
            value = getattr(self, key)
            if value is not None:
                out[key] = dict(value) if key == "files" else value
        return out


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
            "stack": [item.to_json() for item in self.items],
            **({"model": self.model} if self.model else {}),
            **({"draft": self.draft} if self.draft else {}),
        }

    @classmethod
    def from_json(cls, data: Any, where: Path) -> Lock:
        """Validate ``data`` (a parsed lock file) against the schema: InputError naming every bad key."""
        if isinstance(data, dict) and "schema" in data and data["schema"] != SCHEMA:
            raise InputError(
                f"{where}: lock schema {data['schema']!r} is not {SCHEMA}",
                hint=f"delete it and run `harness lock {shlex.quote(str(where.with_suffix('.yaml')))}`",
            )
        try:
            parsed = _LockFile.model_validate(data)
        except ValidationError as exc:
            problems = []
            for err in exc.errors():
                loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-")))
                msg = re.sub(r" or instance of \w+$", "", err["msg"].removeprefix("Value error, "))
                if err["type"] == "missing":
                    msg = "required key missing"
                elif err["type"] == "extra_forbidden":
                    msg = "unknown key"
                problems.append(f"{where}: {yamlpos.format_path(loc)}: {msg}")
            raise InputError(
                "malformed lock:\n" + "\n".join(problems),
                hint=f"fix it, or delete it and run `harness lock {shlex.quote(str(where.with_suffix('.yaml')))}`",
            ) from None
        items = tuple(
            LockedItem(
                kind=i.kind, ref=i.ref, repo=i.repo, fetch_ref=i.fetch_ref, sha=i.sha, sha256=i.sha256,
                files=tuple(i.files.items()) if i.files is not None else None, retired=i.retired, skipped=i.skipped,
            )
            for i in parsed.stack
        )
        up = parsed.upstream
        model = parsed.model.model_dump() if parsed.model is not None else {}
        draft = parsed.draft.model_dump() if parsed.draft is not None else {}
        return cls(parsed.recipe, up.repo, up.ref, up.sha, items, model, draft)

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
    """The lock at ``path`` (None when there is none), validated: InputError (exit 2) naming the bad key."""
    if not os.path.lexists(path):
        return None
    data = readlimits.load_json(path, what="lock")  # a regular file, size and depth bounded
    return Lock.from_json(data, path)


def write(path: Path, lock: Lock) -> None:
    atomic.write_json(path, lock.to_json())


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
        return LockedItem("pr", str(item.pr), item.repo or upstream, fetch_ref=f"refs/pull/{item.pr}/head")
    if item.kind == "branch":
        return LockedItem("branch", str(item.branch), item.repo or upstream, fetch_ref=f"refs/heads/{item.branch}")
    if item.kind == "commit":
        return LockedItem("commit", str(item.commit), item.repo or upstream, sha=item.commit)
    if item.kind == "patches":
        return LockedItem("patches", str(item.patches))
    return LockedItem("patch", str(item.patch), sha256=item.sha256)


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
        return replace(item, files=files, sha256=series_digest(files))
    if is_url(item.ref):
        assert item.sha256 is not None, "validated: a URL patch has sha256"
        download.patch(item.ref, item.sha256, label=item.label(), fresh=fresh)
        return item
    path = recipe.resolve_local(item.ref)
    try:
        return replace(item, sha256=atomic.sha256_file(path))
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
        queries[spec.upstream.repo].update(_ref_candidates(spec.upstream.ref))
        users[spec.upstream.repo].append(f"upstream (ref: {spec.upstream.ref})")
    for n, item in enumerate(wanted, start=1):
        if item.fetch_ref and (update or item.identity() not in old_items):
            queries[item.repo or spec.upstream.repo].add(item.fetch_ref)
            users[item.repo or spec.upstream.repo].append(f"stack item {n} ({item.spec()})")
    answers = {repo: _ls_remote(repo, sorted(refs), users[repo], recipe.path) for repo, refs in queries.items()}

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
        if item.kind in ("patch", "patches"):
            new = pin_patch(recipe, item, fresh=update)
            if old is None or old.sha256 != new.sha256:  # new content: is it a patch git can apply?
                patchset.checked_parts(_patch_files(recipe, new), new.label(), series=new.kind == "patches")
            if old is not None and (old.retired or old.skipped) and old.sha256 == new.sha256:
                new = replace(new, retired=old.retired, skipped=old.skipped)
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
                                       if item.kind == "pr" else _did_you_mean(item.ref, item.repo)))
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
    the commit the revision names and the files ``file`` matches there (:func:`harness.source.hub.draft_files`)."""
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
    if (lock.draft.get("source"), lock.draft.get("file")) != (d.source, d.file):
        return [f"draft: recipe has {d.source} {d.file}, lock has {lock.draft.get('source')} {lock.draft.get('file')}"]
    if d.revision and SHA40.match(d.revision) and d.revision != lock.draft.get("revision"):
        return [f"draft: recipe pins {d.revision}, lock has {lock.draft.get('revision')}"]
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


def upstream_tip(recipe: Recipe) -> str:
    """The commit the recipe's upstream ref names at the remote now (as ``resolve`` finds it)."""
    spec = recipe.spec.upstream
    if SHA40.match(spec.ref):
        return spec.ref
    answers = _ls_remote(spec.repo, _ref_candidates(spec.ref), [f"upstream (ref: {spec.ref})"], recipe.path)
    return _pick_ref(answers, spec.ref, spec.repo)


def _ref_candidates(ref: str) -> list[str]:
    if ref.startswith("refs/"):
        return [ref, f"{ref}^{{}}"]
    return [f"refs/heads/{ref}", f"refs/tags/{ref}", f"refs/tags/{ref}^{{}}"]


def _pick_ref(answers: dict[str, str], ref: str, repo: str) -> str:
    for name in (f"{ref}^{{}}", ref, f"refs/tags/{ref}^{{}}", f"refs/tags/{ref}", f"refs/heads/{ref}"):
        if name in answers:
            return answers[name]
    raise InputError(f"upstream ref {ref!r} not found at {repo} (no branch or tag of that name)",
                     hint=_did_you_mean(ref, repo))


def _did_you_mean(ref: str, repo: str) -> str:
    """A hint naming the branches and tags of ``repo`` closest to ``ref`` (one more ls-remote, on failure only)."""
    import difflib

    try:
        names = [n.split("/", 2)[2] for n in git.ls_remote(repo, ["refs/heads/*", "refs/tags/*"], timeout=30)
                 if n.count("/") >= 2 and not n.endswith("^{}")]
    except (CommandFailed, StepError):
        names = []
    close = difflib.get_close_matches(ref, names, n=3, cutoff=0.6)
    return f"did you mean {' or '.join(repr(c) for c in close)}?" if close else "check the name in the recipe"


def _ls_remote(repo: str, refs: list[str], users: list[str], recipe: Path) -> dict[str, str]:
    """``git ls-remote``; a failure is one screen naming the recipe items that need ``repo``, git's reason under it."""
    try:
        return git.ls_remote(repo, refs)
    except CommandFailed as exc:
        why = git.failure_tail(exc.output_tail) or "no reason given"
        unreachable = any(s in exc.output_tail for s in git.UNREACHABLE)
        raise StepError(
            f"{recipe}: {', '.join(users)}: cannot {'reach' if unreachable else 'list the refs of'} {repo}:\n"
            + git.indent_reason(why),
            hint="check the network, the URL and your credentials for it" if unreachable
            else f"`git ls-remote {shlex.quote(repo)}` shows what git says",
        ) from None
