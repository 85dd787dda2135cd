"""Several files as one switch: a journal written first, rolled back or forward by whoever reads next.

Nightly's adoption (harness/nightly/adoption.py) made this pattern for its lock, builds and
``last-good.json``; here it is for plain files (``patches export``'s patch, recipe and lock).
A journal beside the files is written atomically before any of them and removed after all:

- ``prepared`` holds each file's old content (or its absence).  The writer may now write some
  of them for a check that needs them on disk (the lock reads the new patch); a kill here is
  rolled **back**: every file gets its old content again.
- ``committed`` holds the new content of every file as well; a kill here is rolled **forward**.

Every step is idempotent, so a kill during a recovery is recovered again.  :func:`recover` is
called by the readers (``load_recipe`` for a recipe's journal): they see the old set or the new
one.  It leaves alone the journal of a live writer (its host and pid are in it), and removes one
it cannot read with a warning.  Every path of a journal must lie under the root the caller owns.
"""

from __future__ import annotations

import base64
import contextlib
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Literal, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from harness import atomic, console, faults, readlimits
from harness.errors import InputError

M = TypeVar("M", bound=BaseModel)


def load(path: Path, model: type[M], what: str) -> M | None:
    """The journal at ``path`` validated as ``model``; None when there is none, or (with a warning,
    the file removed) when it is another version's, cut short or not ours."""
    if not os.path.lexists(path):
        return None
    try:
        return model.model_validate(readlimits.load_json(path))
    except (InputError, ValidationError) as exc:
        console.warn(f"{path}: unreadable {what} journal, ignored and removed ({str(exc).splitlines()[0]})")
        path.unlink(missing_ok=True)
        return None


class Entry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    path: str
    old: str | None  # base64; None: the file did not exist
    new: str | None = None  # base64, once committed
    made: list[str] = []  # directories the write creates (innermost first), removed on roll-back


class Journal(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    version: Literal[1] = 1
    host: str
    pid: int
    phase: Literal["prepared", "committed"]
    entries: list[Entry]


def _b64(data: bytes | None) -> str | None:
    return None if data is None else base64.b64encode(data).decode()


def _bytes(text: str | None) -> bytes | None:
    return None if text is None else base64.b64decode(text)


class Switch:
    """One all-or-nothing write of ``paths`` (all under ``root``), journaled at ``journal``."""

    def __init__(self, journal: Path, root: Path, paths: Sequence[Path]) -> None:
        self.journal, self.root = journal, root
        self.paths = [atomic.under(p, root) for p in dict.fromkeys(paths)]
        entries = []
        for p in self.paths:
            made = [str(d) for d in (p.parent, *p.parent.parents) if not d.exists()]
            entries.append(Entry(path=str(p), old=_b64(p.read_bytes() if p.exists() else None), made=made))
        self._entries = entries
        self._write(Journal(host=atomic.host_id(), pid=os.getpid(), phase="prepared", entries=entries))
        faults.point("journal:prepared")

    def _write(self, journal: Journal) -> None:
        atomic.write_json(self.journal, journal.model_dump())

    def tentative(self, path: Path, data: bytes) -> None:
        """Write one file before the switch (for a check that reads it); undone by a roll-back."""
        assert atomic.under(path, self.root) in self.paths
        _put(path, data)
        faults.point("journal:tentative")

    def commit(self, new: Mapping[Path, bytes | None]) -> None:
        """Switch every file to ``new`` (bytes, or None: the file stays as it was); the journal goes last."""
        wanted = {atomic.under(p, self.root): data for p, data in new.items()}
        entries = []
        for e in self._entries:
            data = wanted.get(Path(e.path))
            entries.append(e.model_copy(update={"new": e.old if data is None else _b64(data)}))
        self._write(Journal(host=atomic.host_id(), pid=os.getpid(), phase="committed", entries=entries))
        faults.point("journal:committed")
        _forward(entries)
        self.journal.unlink()

    def abort(self) -> None:
        """Put every file back as it was (an error before the switch)."""
        _back(self._entries)
        self.journal.unlink(missing_ok=True)


def _put(path: Path, data: bytes | None) -> None:
    if data is None:
        path.unlink(missing_ok=True)
        return
    if path.exists() and path.read_bytes() == data:
        return
    with atomic.temp_file_beside(path) as tmp:
        tmp.write_bytes(data)


def _forward(entries: Sequence[Entry]) -> None:
    for e in entries:
        before = Path(e.path).read_bytes() if Path(e.path).exists() else None
        _put(Path(e.path), _bytes(e.new))
        if before != _bytes(e.new):
            faults.point("journal:wrote")  # one file of the set switched, the others not yet (tests/faults)


def _back(entries: Sequence[Entry]) -> None:
    for e in entries:
        _put(Path(e.path), _bytes(e.old))
        if e.old is None:
            for directory in e.made:
                with contextlib.suppress(OSError):
                    Path(directory).rmdir()


def recover(journal: Path, root: Path) -> str | None:
    """Finish what a killed writer left at ``journal``: "rolled back", "rolled forward", or None
    (no journal, or its writer still runs)."""
    found = load(journal, Journal, "multi-file write")
    if found is None:
        return None
    if found.host == atomic.host_id() and atomic.pid_alive(found.pid):
        return None
    try:
        for e in found.entries:
            atomic.under(Path(e.path), root)
    except InputError as exc:
        console.warn(f"{journal}: names a file outside {root}, ignored and removed ({exc})")
        journal.unlink(missing_ok=True)
        return None
    if found.phase == "committed":
        _forward(found.entries)
    else:
        _back(found.entries)
    journal.unlink(missing_ok=True)
    return "rolled forward" if found.phase == "committed" else "rolled back"
