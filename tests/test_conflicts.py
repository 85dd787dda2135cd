"""Conflict reports read as they are: each hunk once, each side named for what it is."""

from __future__ import annotations

from harness.conflicts import ConflictReport, FileConflict, Hunk, files_from_apply_errors

# what `git apply --3way` printed for a patch whose context matched nowhere (a fresh-user trial):
# git names the hunk once for its direct attempt and again for the 3-way retry
APPLY_STDERR = """error: patch failed: tools/quantize/quantize.cpp:660
Falling back to direct application...
error: patch failed: tools/quantize/quantize.cpp:660
error: tools/quantize/quantize.cpp: patch does not apply
"""


def test_a_hunk_git_names_twice_is_reported_once() -> None:
    [f] = files_from_apply_errors(APPLY_STDERR)
    assert f.path == "tools/quantize/quantize.cpp" and [h.start for h in f.hunks] == [660]
    text = ConflictReport("patch p.patch", 0, "a" * 40, [f]).format()
    assert text.count("hunk at line 660") == 1


def test_the_ours_side_is_upstream_only_for_the_first_item() -> None:
    hunk = Hunk(3, 7, ["upstream line"], ["patch line"])
    first = ConflictReport("patch a.patch", 0, "a" * 40, [FileConflict("f.c", [hunk])]).format()
    third = ConflictReport("patch c.patch", 2, "b" * 40, [FileConflict("f.c", [hunk])]).format()
    assert "lines 3-7: upstream 1 line(s), patch c.patch" not in third
    assert "lines 3-7: upstream 1 line(s), patch a.patch 1 line(s)" in first
    assert "lines 3-7: upstream + items 1-2 1 line(s), patch c.patch 1 line(s)" in third
