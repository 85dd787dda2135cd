"""What a finished stack is remembered by: each item's result, in a versioned state file.

``stack.prepare`` writes ``<tree>/state/<key>.json`` beside ``refs/harness/patched/<key>``; the
two together let a second ``prepare`` of the same lock cost nothing.  The state file is a cache:
one this harness cannot read (another schema, another tool's, damaged, or not one result per
item of the lock) counts as none, and the stack is applied again.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from harness import atomic, console, readlimits
from harness.errors import InputError

SCHEMA: Final = 1  # 1: a versioned model (before: {"commit", "items"} read by key)


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class PartResult(_Frozen):
    """One mail of an mbox or one file of a ``patches:`` series."""

    name: str
    status: str
    detail: str = ""
    commit: str | None = None


class ItemResult(_Frozen):
    """How one stack item went: ``status`` is applied, already-merged, conflict or skipped (harness/source/stack.py)."""

    kind: str
    ref: str
    repo: str | None
    pin: str
    status: str
    detail: str = ""
    commit: str | None = None
    parts: tuple[PartResult, ...] | None = None  # per mail / series file, when the item has several

    def to_json(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude={"parts"} if self.parts is None else set())

    def replace(self, **changes: Any) -> ItemResult:
        return ItemResult.model_validate({**dict(self), **changes})


class State(_Frozen):
    schema_: Literal[1] = Field(alias="schema")  # required: a state without one is an older harness's
    commit: str
    items: tuple[ItemResult, ...]


def read(path: Path, count: int) -> State | None:
    """The state at ``path`` when it is one this harness wrote for a lock of ``count`` items; else None."""
    if not path.exists():
        return None
    try:
        state = State.model_validate(readlimits.load_json(path, what="stack state"))
    except (InputError, ValidationError) as exc:
        if isinstance(exc, InputError):
            why = str(exc).splitlines()[0]
        else:
            first = exc.errors()[0]
            why = ".".join(str(p) for p in first["loc"]) + ": " + first["msg"]
        console.info(f"stack state {path} is not one this harness reads ({why}); applying the stack again")
        return None
    if len(state.items) != count:
        console.info(f"stack state {path} has {len(state.items)} results for {count} items; applying the stack again")
        return None
    return state


def write(path: Path, commit: str, items: list[ItemResult]) -> None:
    atomic.write_json(path, {"schema": SCHEMA, "commit": commit, "items": [i.to_json() for i in items]})
