"""Nightly's adoption as one switch: the lock, every backend's build and ``last-good.json`` move together.

Adopting writes three kinds of file (the candidate lock beside the recipe, each candidate build
over ``builds/<recipe>/<backend>``, then ``last-good.json``); a kill between two of them used to
leave them disagreeing.  Now a journal, ``builds/<recipe>/.adopting.json``, is written first
(atomically): it holds everything the adoption writes.  Each step is idempotent, the journal is
removed last, and the next nightly (or anything calling ``finish``) rolls a journal it finds
forward before it starts: by then every candidate had passed, so forward is the way to the
consistent state (harness/journal.py does the same for plain files: ``patches export``).  A build the journal names whose candidate is gone and whose published copy
is not the journal's identity cannot be rolled forward; ``last-good.json`` then leaves it out.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from harness import atomic, console, faults
from harness import journal as journals
from harness.build import published
from harness.source import lock
from harness.source.lock import Lock

JOURNAL = ".adopting.json"
SCHEMA = 1


class Move(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    backend: str
    candidate: str
    final: str
    identity: str


class Journal(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    version: int = SCHEMA
    lock_path: str
    lock: dict[str, Any]
    moves: list[Move]
    pointer: dict[str, Any]
    last_good: str


def journal_path(builds_dir: Path | None, recipe: str) -> Path:
    return published.build_root(builds_dir, recipe, JOURNAL)


def adopt(builds_dir: Path | None, recipe: str, lock_path: Path, candidate: Lock, moves: list[Move],
          pointer: dict[str, Any], last_good: Path) -> None:
    """Journal the adoption, then carry it out (``finish``)."""
    journal = Journal(lock_path=str(lock_path), lock=candidate.to_json(), moves=moves, pointer=pointer,
                      last_good=str(last_good))
    atomic.write_json(journal_path(builds_dir, recipe), journal.model_dump())
    faults.point("adopt:journaled")
    finish(builds_dir, recipe)


def finish(builds_dir: Path | None, recipe: str) -> bool:
    """Roll forward an adoption a killed run left (see the module docstring); whether there was one."""
    path = journal_path(builds_dir, recipe)
    journal = journals.load(path, Journal, "adoption")  # None when absent, or not ours (warned, removed)
    if journal is None:
        return False
    root = published.root_of(builds_dir)
    lock.write(Path(journal.lock_path), lock.parse(journal.lock, Path(journal.lock_path)))
    faults.point("adopt:locked")
    pointer = dict(journal.pointer)
    for move in journal.moves:
        candidate, final = Path(move.candidate), Path(move.final)
        if candidate.is_dir():
            atomic.replace_dir(candidate, final, root=root)
            faults.point("adopt:moved")
        elif getattr(published.manifest(final), "identity", None) != move.identity:
            console.warn(f"{final}: the adopted build is gone; left out of {journal.last_good}")
            pointer.pop(move.backend, None)
    atomic.write_json(Path(journal.last_good), pointer)
    path.unlink()
    return True
