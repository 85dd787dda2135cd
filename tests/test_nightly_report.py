"""report.json and history.jsonl are versioned models: an old history line is read, a line this
harness cannot read is skipped with one note naming the file and the lines, never a traceback."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.nightly import report as nightly_report

pytestmark = pytest.mark.unit

ENTRY = {"recipe": "r", "status": "passed", "failed_step": None, "error": None, "adopted": True, "items": [],
         "builds": {"cpu": {"ok": True, "noop": True, "timings": {"build_s": 12.0}, "ninja_steps": 0,
                            "stamp": {"number": 1, "commit": "abc"}}}, "smoke": {}, "seconds": 3.0}
# history.jsonl lines a report directory may hold: name -> (line, read?)
LINES = {
    "first format (no schema)": ('{"date": "2026-01-01", "recipe": "r", "status": "failed", "failed_step": "stack", '
                                 '"build_s": 0, "seconds": 1.5, "base": null, "missing": [], "gates": null}', True),
    "cut short by a kill": ('{"date": "2026-01-02", "recipe": "r", "sta', False),
    "another tool's": ('{"lockfileVersion": 3}', False),
    "newer schema": ('{"schema": 2, "date": "2026-01-03", "recipe": "r", "status": "passed", "runs": []}', False),
    "not an object": ("[1, 2]", False),
}


def test_old_and_foreign_history_lines(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "history.jsonl").write_text("".join(line + "\n" for line, _ in LINES.values()))
    files = nightly_report.write(tmp_path, {"date": "2026-01-04", "recipes": [ENTRY]})
    err = capsys.readouterr().err
    skipped = [n for n, (_, read) in enumerate(LINES.values(), start=1) if not read]
    assert f"skipped {len(skipped)} line(s)" in err and f"(line {', '.join(map(str, skipped))})" in err, err
    assert str(files["history"]) in err
    rows = nightly_report.read_history(files["history"])
    assert [(r.date, r.status, r.build_s) for r in rows] == [("2026-01-01", "failed", 0.0), ("2026-01-04", "passed", 12.0)]
    assert json.loads(files["history"].read_text().splitlines()[-1])["schema"] == nightly_report.SCHEMA
    assert files["chart"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads(files["json"].read_text())["schema"] == nightly_report.SCHEMA


def test_a_report_of_another_shape_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="status"):
        nightly_report.write(tmp_path, {"date": "d", "recipes": [{**ENTRY, "status": "green"}]})
    assert not (tmp_path / "history.jsonl").exists()
