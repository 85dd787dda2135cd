"""The prompt suite: one directory per task category, one ``.txt`` file per prompt.

The built-in suite ships as package data (``harness/data/prompts/<category>/*.txt``);
``--prompts DIR`` adds the user's ``DIR/<category>/*.txt`` (a file of the same name
replaces the built-in one).
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from importlib import resources
from importlib.abc import Traversable
from pathlib import Path

from harness.errors import InputError


@dataclass(frozen=True)
class Prompt:
    category: str
    name: str
    text: str


def builtin_root() -> Traversable:
    return resources.files("harness") / "data" / "prompts"


def load_suite(
    user_dir: Path | None = None, *, categories: list[str] | None = None, builtin: bool = True
) -> list[Prompt]:
    """Prompts sorted by category then name, limited to ``categories`` when given."""
    found: dict[tuple[str, str], Prompt] = {}
    if builtin:
        _collect(builtin_root(), found)
    if user_dir is not None:
        if not user_dir.is_dir():
            raise InputError(f"--prompts {user_dir}: not a directory", hint="expected DIR/<category>/*.txt")
        if not any(user_dir.glob("*/*.txt")):
            raise InputError(f"no prompts in {user_dir}", hint="expected DIR/<category>/*.txt")
        _collect(user_dir, found, replace=True)
    known = sorted({p.category for p in found.values()})
    if categories:
        for c in categories:
            if c not in known:
                close = difflib.get_close_matches(c, known, n=1)
                hint = f"did you mean {close[0]!r}? " if close else ""
                raise InputError(
                    f"unknown prompt category {c!r}", hint=f"{hint}known: {', '.join(known) or 'none'}"
                )
        found = {k: p for k, p in found.items() if p.category in categories}
    if not found:
        raise InputError("no prompts to run")
    return [found[k] for k in sorted(found)]


def _collect(root: Traversable | Path, found: dict[tuple[str, str], Prompt], replace: bool = False) -> None:
    for category in root.iterdir():
        if not category.is_dir() or category.name.startswith("."):
            continue
        for item in category.iterdir():
            if item.is_file() and item.name.endswith(".txt"):
                text = item.read_text(encoding="utf-8").strip()
                if not text:
                    raise InputError(f"empty prompt file: {item}")
                key = (category.name, item.name[: -len(".txt")])
                if replace or key not in found:
                    found[key] = Prompt(category.name, key[1], text)
