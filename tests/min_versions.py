"""Print pip constraints that pin every dependency of pyproject.toml to its declared floor.

``make test-min-versions`` installs the harness with them (``pip install --constraint``) into
a venv of its own and runs the unit tests there: a floor that is wrong (a version that lacks
what we call, a version that does not exist, a yanked one) fails there, not on a user's machine.
A requirement without a ``>=`` floor is an error: every dependency declares one.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

PYPROJECT = Path(__file__).resolve().parent.parent / "pyproject.toml"
_REQ = re.compile(r"^\s*(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[[^\]]*\])?\s*(?P<spec>[^;]*)")


def floors() -> list[str]:
    """``name==floor`` for each of the project's dependencies (the extras' tools are not pinned)."""
    project = tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))["project"]
    pins: dict[str, str] = {}
    for requirement in project["dependencies"]:
        match = _REQ.match(requirement)
        assert match, requirement
        name = match["name"]
        floor = re.search(r">=\s*([0-9][^,\s]*)", match["spec"])
        if not floor:
            raise SystemExit(f"pyproject.toml: {requirement!r} declares no floor (>=)")
        pins[name.lower()] = f"{name}=={floor[1]}"
    return sorted(pins.values(), key=str.lower)


if __name__ == "__main__":
    print("\n".join(floors()))
