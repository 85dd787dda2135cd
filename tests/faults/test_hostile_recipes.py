"""Hostile recipes: every one ends at once with exit 2 and a FILE:LINE message, in bounded time and memory.

The data files are the cases of a fault audit: a 342-byte alias bomb (10^9 nodes expanded),
a merge-key bomb, 3,000 nested brackets, recursive aliases, empty/comment-only/null files,
names that would lead out of builds/ (``...yaml`` is named ``..``), non-UTF-8 and binary
files.  Bad recipes of tests/data/bad_recipes run through the same bounds.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

from tests.faults.conftest import harness_measured

DATA = Path(__file__).resolve().parent.parent / "data"
FILES = sorted([*(DATA / "hostile_recipes").iterdir(), *(DATA / "bad_recipes").glob("*.yaml")])
# files that cannot carry an "# expect:" comment (or must keep their exact size)
EXPECT = {
    "alias-bomb.yaml": ["5: yaml: more than 50000 nodes with its aliases expanded"],
    "empty.yaml": ["1: (top): the recipe is empty"],
    "binary.yaml": ["2: not UTF-8 text (invalid start byte at byte 128)"],
}
MAX_SECONDS = 5.0
MAX_RSS_MB = 256.0


def _expectations(path: Path) -> list[str]:
    if path.name in EXPECT:
        return EXPECT[path.name]
    return [m.group(1) for m in re.finditer(r"^# expect: (.+)$", path.read_text(errors="replace"), re.M)]


@pytest.mark.skipif(sys.platform != "linux", reason="reads /proc/self/status")
@pytest.mark.parametrize("path", FILES, ids=[f"{p.parent.name}/{p.name}" for p in FILES])
def test_hostile_recipe_is_refused_quickly(path: Path) -> None:
    assert path.stat().st_size < 1 << 20
    expected = _expectations(path)
    assert expected, f"{path} has no '# expect:' lines"
    res = harness_measured("validate", path)
    assert res.returncode == 2, res.stderr
    assert "Traceback" not in res.stderr
    for line in expected:
        assert f"{path}:{line}" in res.stderr, f"missing {line!r} in:\n{res.stderr}"
    assert res.seconds < MAX_SECONDS, f"{res.seconds:.1f}s"
    assert res.max_rss_mb < MAX_RSS_MB, f"{res.max_rss_mb:.0f} MiB"


def test_fifty_megabyte_recipe_is_refused_without_reading_it(tmp_path: Path) -> None:
    path = tmp_path / "big.yaml"
    with open(path, "w") as f:
        f.write("stack:\n")
        line = "  - {pr: 1, note: " + "x" * 80 + "}\n"
        f.write(line * (50 * (1 << 20) // len(line)))
    res = harness_measured("validate", path)
    assert res.returncode == 2, res.stderr
    assert f"{path}: too large for a recipe (over 256 KiB)" in res.stderr
    assert res.seconds < MAX_SECONDS and res.max_rss_mb < MAX_RSS_MB, res


def test_largest_accepted_recipe_is_quick(tmp_path: Path) -> None:
    """Just under the size limit, valid: loaded within the same bounds."""
    path = tmp_path / "wide.yaml"
    items = []
    size = 0
    n = 0
    while size < 250 * 1024:
        item = f"  - pr: {n + 1}\n    note: {'n' * 60}\n"
        items.append(item)
        size += len(item)
        n += 1
    path.write_text("upstream: {ref: master}\nstack:\n" + "".join(items))
    (tmp_path / ".git").mkdir()
    res = harness_measured("validate", path)
    assert res.returncode == 0, res.stderr
    assert res.seconds < MAX_SECONDS and res.max_rss_mb < MAX_RSS_MB, res
