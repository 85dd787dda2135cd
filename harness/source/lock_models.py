"""The lock's pins of Hugging Face files (``model:``, ``draft:``) as typed models.

``harness lock`` writes them; they are fields of the lock's model (:class:`harness.source.lock.Lock`),
so a hand edit (a number for a revision, a missing key, a file name that climbs out of the
repository) is refused when the lock is read, naming the lock file and the key.  :func:`draft_pin`,
:func:`model_pin` and :func:`problems` check one entry alone (an InputError, exit 2, naming each bad key).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from harness.errors import InputError
from harness.recipe import yamlpos
from harness.recipe.stack_items import SHA40

REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")  # owner/name, as the recipe's model and draft sources
MAX_FILES = 10_000  # far more shards than any split set has


def _short(value: str) -> str:
    """``value`` quoted for a message, cut to one line"""
    return repr(value if len(value) <= 80 else value[:80] + "...")


class _Pin(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    source: str
    revision: str

    @field_validator("source")
    @classmethod
    def _repo(cls, value: str) -> str:
        if not REPO_ID.match(value):
            raise ValueError(f"{_short(value)} is not a Hugging Face repository id (owner/name)")
        return value

    @field_validator("revision")
    @classmethod
    def _sha(cls, value: str) -> str:
        if not SHA40.match(value):
            raise ValueError(f"{_short(value)} is not a full commit SHA (40 lowercase hex digits)")
        return value


class ModelPin(_Pin):
    """``model: {source, revision}``: the main model's repository at one commit."""


class DraftPin(_Pin):
    """``draft: {source, file, revision, files}``: the draft's repository at one commit, and the
    files of that commit ``file`` matched (one GGUF, or the shards of one split set)."""

    file: str | None = None
    files: list[str] = Field(min_length=1, max_length=MAX_FILES)

    @field_validator("files")
    @classmethod
    def _inside(cls, value: list[str]) -> list[str]:
        for name in value:
            parts = name.split("/")
            if (not name or name.startswith("/") or "\\" in name or any(p in ("", ".", "..") for p in parts)
                    or any(ord(c) < 32 for c in name) or len(name) > 1024):  # fmt: skip
                raise ValueError(f"{_short(name)} is not a file name inside the repository")
        return value


P = TypeVar("P", bound=_Pin)


def draft_pin(data: Any, lock_path: Path) -> DraftPin:
    return _validated(DraftPin, data, lock_path, "draft")


def model_pin(data: Any, lock_path: Path) -> ModelPin:
    return _validated(ModelPin, data, lock_path, "model")


def problems(data: Any, lock_path: Path, key: str) -> list[str]:
    """What is wrong with the lock's ``key`` entry (``model`` or ``draft``), one line each; empty when fine."""
    model: type[_Pin] = ModelPin if key == "model" else DraftPin
    try:
        model.model_validate(data)
    except ValidationError as exc:
        return _lines(exc, lock_path, key)
    return []


def _validated(model: type[P], data: Any, lock_path: Path, key: str) -> P:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise InputError(
            "hand-edited or damaged lock:\n" + "\n".join(_lines(exc, lock_path, key)),
            hint=f"fix it, or delete its {key!r} entry and run `harness lock` for the recipe",
        ) from None


def _lines(exc: ValidationError, lock_path: Path, key: str) -> list[str]:
    out = []
    for err in exc.errors()[:10]:
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "missing":
            msg = "required key missing"
        elif err["type"] == "extra_forbidden":
            msg = "unknown key"
        out.append(f"{lock_path}: {yamlpos.format_path((key, *err['loc']))}: {msg}")
    return out
