"""Conflict reports read as they are: each hunk once, each side named for what it is."""

from __future__ import annotations

from harness.source.conflicts import ConflictReport, FileConflict, Hunk, files_from_apply_errors

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


def test_a_cut_excerpt_says_how_much_more_there_is_and_the_report_counts() -> None:
    long = Hunk(1, 20, [f"upstream {n}" for n in range(9)], [f"item {n}" for n in range(5)])
    files = [FileConflict("a.c", [long, Hunk(30, 34, ["x"], ["y"])]), FileConflict("b.c", [Hunk(2, 6, ["p"], ["q"])])]
    report = ConflictReport("PR #31 of u", 2, "c" * 40, files, spec="pr: 31")
    text = report.format()
    assert "(stack item 3 (pr: 31), onto cccccccccccc): 2 file(s) in conflict, 3 hunk(s)" in text
    assert "      - upstream 3\n      - … 5 more lines\n      + item 0" in text
    assert "      + item 3\n      + … 1 more line\n" in text
    data = report.to_json()
    assert data["counts"] == {"files": 2, "hunks": 3}
    assert data["position"] == 3 and data["stack_item"] == "stack item 3 (pr: 31)" and data["index"] == 2
    hunk = data["files"][0]["hunks"][0]
    assert (hunk["ours_lines"], hunk["ours_more"], len(hunk["ours"])) == (9, 0, 9)  # JSON keeps up to MAX_JSON
