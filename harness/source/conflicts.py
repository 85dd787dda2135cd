"""Conflict reports: which item, which files, which hunks, and how to resolve them."""

from __future__ import annotations

import re
import shlex
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from harness.errors import StepError

MAX_SHOWN = 4  # lines of each side shown per hunk (text)
MAX_JSON = 40  # lines of each side kept per hunk (JSON); the rest are counted


@dataclass(frozen=True)
class Hunk:
    start: int  # 1-based line of the <<<<<<< marker (or of the failed hunk for direct applies)
    end: int
    ours: list[str] = field(default_factory=list)
    theirs: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """The hunk with each side cut at ``MAX_JSON`` lines; ``*_lines`` count them all, ``*_more`` what was cut."""
        return {
            "start": self.start, "end": self.end,
            "ours": self.ours[:MAX_JSON], "theirs": self.theirs[:MAX_JSON],
            "ours_lines": len(self.ours), "theirs_lines": len(self.theirs),
            "ours_more": max(0, len(self.ours) - MAX_JSON), "theirs_more": max(0, len(self.theirs) - MAX_JSON),
        }  # fmt: skip


@dataclass(frozen=True)
class FileConflict:
    path: str
    hunks: list[Hunk]
    message: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"path": self.path, "hunks": [h.to_json() for h in self.hunks], "message": self.message}


@dataclass(frozen=True)
class ConflictReport:
    item: str  # label: PR #N of repo / branch B of repo / patch FILE
    index: int  # 0-based, as in the recipe's key path stack[index]; people and `position` count from 1
    onto: str  # commit the item failed to apply on
    files: list[FileConflict]
    worktree: str | None = None
    part: str | None = None  # the file (of a series) or mail (of an mbox) that failed, for multi-part items
    spec: str = ""  # the item as the recipe writes it: "pr: 31", "patch: patches/x.patch"

    @property
    def position(self) -> int:
        """The item's number in the stack, counted from 1: "stack item 3" in text and JSON alike."""
        return self.index + 1

    @property
    def named(self) -> str:
        """"stack item 3 (pr: 31)": the number and the item as the recipe writes it."""
        return f"stack item {self.position}" + (f" ({self.spec})" if self.spec else "")

    def counts(self) -> dict[str, int]:
        return {"files": len(self.files), "hunks": sum(len(f.hunks) for f in self.files)}

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["files"] = [f.to_json() for f in self.files]
        return {**data, "position": self.position, "stack_item": self.named, "counts": self.counts()}

    def format(self, recipe_path: str | None = None) -> str:
        what = f"{self.item}, {self.part}," if self.part else self.item
        counts = self.counts()
        lines = [f"{what} does not apply ({self.named}, onto {self.onto[:12]}): "
                 f"{counts['files']} file(s) in conflict, {counts['hunks']} hunk(s)"]
        for f in self.files:
            lines.append(f"  {f.path}" + (f": {f.message}" if f.message else ""))
            for h in f.hunks:
                if not h.ours and not h.theirs:
                    lines.append(f"    hunk at line {h.start}")
                    continue
                lines.append(f"    lines {h.start}-{h.end}: {self._ours()} {len(h.ours)} line(s), "
                             f"{self.item.split(' of ')[0]} {len(h.theirs)} line(s)")
                lines += _excerpt("-", h.ours)
                lines += _excerpt("+", h.theirs)
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


def _excerpt(sign: str, side: list[str]) -> list[str]:
    """The first ``MAX_SHOWN`` lines of one side of a hunk, and how many more there are."""
    shown = [f"      {sign} {text}" for text in side[:MAX_SHOWN]]
    more = len(side) - MAX_SHOWN
    return [*shown, f"      {sign} … {more} more line{'s' if more > 1 else ''}"] if more > 0 else shown


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
