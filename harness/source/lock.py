"""The lock file: every ref of a recipe pinned to a full SHA, every patch to a sha256.

The lock lives next to the recipe (same stem, ``.lock``), is JSON, and is meant to be
committed.  It is one versioned model (:class:`Lock`, its :class:`LockedItem` entries and the
Hugging Face pins of :mod:`harness.source.lock_models`) that is the file's shape too: :func:`read`
validates a lock file before anything uses it, so a hand-edited, truncated or foreign one is
exit 2 naming the file and key, and one of another schema says which harness wrote it and what
to do, never a traceback.  Making a lock (resolving refs, pinning patches, checking a lock
against its recipe) is :mod:`harness.source.locking`.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
from pathlib import Path
from typing import Any, Final, Literal, Self

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_serializer,
    model_validator,
)

from harness import atomic, readlimits
from harness.errors import InputError
from harness.recipe import yamlpos
from harness.recipe.stack_items import SHA40, SHA256, normalize_repo_url
from harness.source.lock_models import DraftPin, ModelPin

SCHEMA: Final = 1
FROM_FILE = {"file": True}  # validation context: a lock file's items must carry their pins


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


def _sha40(value: str | None) -> str | None:
    if value is not None and not SHA40.match(value):
        raise ValueError(f"not a full 40-hex SHA: {value!r}")
    return value


def _sha256(value: str | None) -> str | None:
    if value is not None and not SHA256.match(value):
        raise ValueError(f"not a sha256 (64 lowercase hex digits): {value!r}")
    return value


class UpstreamPin(_Frozen):
    """``upstream: {repo, ref, sha}``: the base commit the stack is applied on."""

    repo: str
    ref: str
    sha: str

    _sha = field_validator("sha")(_sha40)
    _repo = field_validator("repo")(normalize_repo_url)


class LockedItem(_Frozen):
    """One stack item as the lock pins it.  Made without pins by ``locking.locked_item_for``; a
    lock file's items must carry them (checked when read with the :data:`FROM_FILE` context)."""

    kind: Literal["pr", "branch", "commit", "patch", "patches"]
    ref: str  # PR number, branch name, commit SHA, patch path/URL or series directory, as written in the recipe
    repo: str | None = None  # repository the commits come from (None for patches)
    fetch_ref: str | None = None  # the remote ref that was resolved (refs/pull/N/head, refs/heads/B)
    sha: str | None = None  # the pinned commit (pr, branch, commit)
    sha256: str | None = None  # the patch file's digest (patch), the series' digest (patches)
    files: tuple[tuple[str, str], ...] | None = None  # (file name, sha256) of a series, in order; a mapping in the file
    retired: str | None = None  # merged upstream (noticed by nightly): the stack skips it for good
    skipped: str | None = None  # conflicted and skipped by nightly (skip_conflicts); retried next night

    _sha = field_validator("sha")(_sha40)
    _sha256 = field_validator("sha256")(_sha256)
    _repo = field_validator("repo")(lambda v: v if v is None else normalize_repo_url(v))

    @field_validator("files", mode="before")
    @classmethod
    def _files_mapping(cls, value: Any) -> Any:
        if isinstance(value, dict):
            return tuple(value.items())
        if isinstance(value, list):  # the file holds a mapping (name -> sha256), in the order applied
            raise ValueError("Input should be a valid dictionary")
        return value

    @field_validator("files")
    @classmethod
    def _files(cls, value: tuple[tuple[str, str], ...] | None) -> tuple[tuple[str, str], ...] | None:
        for name, digest in value or ():
            if "/" in name or name in ("", ".", ".."):
                raise ValueError(f"not a file name: {name!r}")
            _sha256(digest)
        return value

    @model_validator(mode="after")
    def _pins(self, info: ValidationInfo) -> Self:
        if not (info.context or {}).get("file"):
            return self
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

    @model_serializer(mode="wrap")
    def _dump(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        """Keys without a value are left out; a series' files are a mapping, in order."""
        data: dict[str, Any] = handler(self)
        return {k: (dict(v) if k == "files" else v) for k, v in data.items() if v is not None}

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
        return self.model_dump(mode="json")

    def replace(self, **changes: Any) -> LockedItem:
        """A copy with ``changes`` (validated)."""
        return LockedItem.model_validate({**dict(self), **changes})


class Lock(_Frozen):
    """The lock file's content.  ``model``/``draft``: the Hugging Face pins (None: the recipe names
    none, or a local path, or they were locked offline)."""

    schema_: Literal[1] = Field(default=SCHEMA, alias="schema")
    recipe: str
    upstream: UpstreamPin
    stack: tuple[LockedItem, ...] = ()
    model: ModelPin | None = None  # a hand edit is refused on reading, naming the key
    draft: DraftPin | None = None

    @property
    def items(self) -> tuple[LockedItem, ...]:
        return self.stack

    @property
    def upstream_repo(self) -> str:
        return self.upstream.repo

    @property
    def upstream_ref(self) -> str:
        return self.upstream.ref

    @property
    def base_sha(self) -> str:
        return self.upstream.sha

    def replace(self, **changes: Any) -> Lock:
        """A copy with ``changes`` (validated); ``base_sha=`` moves the upstream pin."""
        if "base_sha" in changes:
            changes["upstream"] = self.upstream.model_copy(update={"sha": changes.pop("base_sha")})
        return Lock.model_validate({**dict(self), **changes})

    def to_json(self) -> dict[str, Any]:
        data = self.model_dump(mode="json", by_alias=True)
        for key in ("model", "draft"):
            if data[key] is None:
                del data[key]
        return data

    @property
    def digest(self) -> str:
        """Identifies the source tree the lock describes (recipe name, model and draft excluded)."""
        data = self.to_json()
        for key in ("recipe", "model", "draft"):
            data.pop(key, None)
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


def parse(data: Any, where: Path) -> Lock:
    """Validate ``data`` (a parsed lock file) as a lock: InputError (exit 2) naming the file and every bad
    key; a lock of another schema says which harness wrote it and what to do."""
    schema = data.get("schema") if isinstance(data, dict) else None
    if schema is not None and schema != SCHEMA:
        relock = f"harness lock {shlex.quote(str(where.with_suffix('.yaml')))}"
        if type(schema) is int and schema > SCHEMA:
            what, hint = "written by a newer harness", f"use that harness, or delete it and run `{relock}` with this one"
        else:
            what = "written by an older harness" if type(schema) is int else "not a llama-harness lock"
            hint = f"delete it and run `{relock}`"
        raise InputError(f"{where}: lock schema {schema!r} is not {SCHEMA} ({what}; this one reads schema {SCHEMA})",
                         file=str(where), key="schema", hint=hint)
    problems = [f"{where}: schema: required key missing"] if isinstance(data, dict) and "schema" not in data else []
    try:
        parsed = Lock.model_validate(data, context=FROM_FILE)
    except ValidationError as exc:
        for err in exc.errors():
            loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-")))
            msg = re.sub(r" or instance of \w+$", "", err["msg"].removeprefix("Value error, "))
            if err["type"] == "missing":
                msg = "required key missing"
            elif err["type"] == "extra_forbidden":
                msg = "unknown key"
            elif err["type"] == "tuple_type":  # held as a tuple, written as a JSON list
                msg = "Input should be a valid list"
            problems.append(f"{where}: {yamlpos.format_path(loc)}: {msg}")
    if problems:
        raise InputError("malformed lock:\n" + "\n".join(problems), file=str(where),
                         hint=f"fix it, or delete it and run `harness lock {shlex.quote(str(where.with_suffix('.yaml')))}`")
    return parsed


def read(path: Path) -> Lock | None:
    """The lock at ``path`` (None when there is none), validated: InputError (exit 2) naming the bad key."""
    if not os.path.lexists(path):
        return None
    data = readlimits.load_json(path, what="lock")  # a regular file, size and depth bounded
    return parse(data, path)


def write(path: Path, lock: Lock) -> None:
    atomic.write_json(path, lock.to_json())
