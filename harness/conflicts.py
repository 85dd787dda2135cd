"""Conflict reports: which item, which files, which hunks, and how to resolve them."""

from __future__ import annotations

import re
import shlex
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from harness.errors import StepError

MAX_SHOWN = 4  # lines of each side shown per hunk


@dataclass(frozen=True)
class Hunk:
    start: int  # 1-based line of the <<<<<<< marker (or of the failed hunk for direct applies)
    end: int
    ours: list[str] = field(default_factory=list)
    theirs: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class FileConflict:
    path: str
    hunks: list[Hunk]
    message: str = ""


@dataclass(frozen=True)
class ConflictReport:
    item: str  # label: PR #N of repo / branch B of repo / patch FILE
    index: int
    onto: str  # commit the item failed to apply on
    files: list[FileConflict]
    worktree: str | None = None
    part: str | None = None  # the file (of a series) or mail (of an mbox) that failed, for multi-part items

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def format(self, recipe_path: str | None = None) -> str:
        what = f"{self.item}, {self.part}," if self.part else self.item
        lines = [f"{what} does not apply (stack item {self.index + 1}, onto {self.onto[:12]}):"]
        for f in self.files:
            lines.append(f"  {f.path}" + (f": {f.message}" if f.message else ""))
            for h in f.hunks:
                if not h.ours and not h.theirs:
                    lines.append(f"    hunk at line {h.start}")
                    continue
                lines.append(f"    lines {h.start}-{h.end}: {self._ours()} {len(h.ours)} line(s), "
                             f"{self.item.split(' of ')[0]} {len(h.theirs)} line(s)")
                for text in h.ours[:MAX_SHOWN]:
                    lines.append(f"      - {text}")
                for text in h.theirs[:MAX_SHOWN]:
                    lines.append(f"      + {text}")
        if self.worktree:
            marked = [f.path for f in self.files if any(h.ours or h.theirs for h in f.hunks)]
            unplaced = [f.path for f in self.files if f.path not in marked]
            lines.append(f"The conflicted tree is kept at {self.worktree}")
            how = []
            if marked:
                how.append("remove the conflict markers in " + ", ".join(marked))
            if unplaced:
                how.append("make the change git could not place by hand in " + ", ".join(unplaced))
            lines.append(
                f"To resolve: {'; '.join(how)}; then run "
                f"`harness patches export {shlex.quote(recipe_path) if recipe_path else 'RECIPE'}` to turn the result into a patch;"
            )
            lines.append("or drop or replace the item in the recipe.")
        return "\n".join(lines)

    def _ours(self) -> str:
        """What the "ours" side of a hunk is: the base for the first item, else the base with the
        items before this one applied (a conflict may be with an earlier item, not upstream)."""
        if self.index == 0:
            return "upstream"
        return "upstream + item 1" if self.index == 1 else f"upstream + items 1-{self.index}"


class ConflictError(StepError):
    kind = "conflict"

    def __init__(self, report: ConflictReport, recipe_path: str | None = None) -> None:
        self.report = report
        super().__init__(report.format(recipe_path), file=recipe_path, details={"conflict": report.to_json()})


_START = re.compile(r"^<{7}( |$)")
_BASE = re.compile(r"^\|{7}( |$)")
_MID = re.compile(r"^={7}$")
_END = re.compile(r"^>{7}( |$)")


def hunks_from_markers(path: Path) -> list[Hunk]:
    """The conflict blocks git left in ``path``."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except (FileNotFoundError, IsADirectoryError):
        return []
    hunks: list[Hunk] = []
    state = None
    start = 0
    ours: list[str] = []
    theirs: list[str] = []
    for n, line in enumerate(text.splitlines(), start=1):
        if _START.match(line):
            state, start, ours, theirs = "ours", n, [], []
        elif state and _BASE.match(line):
            state = "base"
        elif state and _MID.match(line):
            state = "theirs"
        elif state and _END.match(line):
            hunks.append(Hunk(start, n, ours, theirs))
            state = None
        elif state == "ours":
            ours.append(line)
        elif state == "theirs":
            theirs.append(line)
    return hunks


_APPLY_FAILED = re.compile(r"^error: patch failed: (.+):(\d+)$")
_APPLY_OTHER = re.compile(r"^error: (.+?): (does not exist in index|does not match index|already exists in (?:index|working directory)|patch does not apply|No such file or directory)$")


def files_from_apply_errors(stderr: str) -> list[FileConflict]:
    """Files and hunk positions from ``git apply`` error output (patches that could not merge 3-way)."""
    found: dict[str, FileConflict] = {}
    for line in stderr.splitlines():
        if m := _APPLY_FAILED.match(line):
            path, at = m.group(1), int(m.group(2))
            prev = found.get(path)
            if prev and any(h.start == at for h in prev.hunks):
                continue  # git names a hunk again when it retries it (3-way after a direct apply)
            hunks = [*(prev.hunks if prev else []), Hunk(at, at)]
            found[path] = FileConflict(path, hunks, "hunk does not match")
        elif m := _APPLY_OTHER.match(line):
            path = m.group(1)
            if path not in found:
                found[path] = FileConflict(path, [], m.group(2))
    return list(found.values())
