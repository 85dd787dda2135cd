"""report.json and history.jsonl are versioned models: an old history line is read, a line this
harness cannot read is skipped with one note naming the file and the lines, never a traceback."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.nightly import entry as entry_mod
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


def _night() -> entry_mod.Entry:
    """A failed night with every typed part set as harness/nightly/run.py sets it."""
    from harness.bisect.report import Commit, Result, Step
    from harness.build.manifest import Stamp
    from harness.smoke.results import DecodedType, DecodeResult, Skipped

    r = entry_mod
    c1, c2 = (Commit(sha=ch * 40, subject=f"commit {ch}", date="2026-01-01T00:00:00+00:00") for ch in "ab")
    upstream = Result(recipe="r", check="smoke", good=c1, bad=c2, range_size=1, first_bad=c2, last_good=c1,
                      candidates=[c2], is_range=False, why="found", steps=[Step(step=1, commit=c2, verdict="bad", seconds=1.0)])
    conflict = {"path": "src/llama.cpp", "hunks": [{"start": 3, "end": 9, "ours": ["a"], "theirs": ["b"], "ours_lines": 1,
                                                    "theirs_lines": 1, "ours_more": 0, "theirs_more": 0}], "message": ""}
    entry = r.Entry(recipe="r", path="r.yaml", status="failed", failed_step=None, error=None, adopted=False, items=[],
                    missing=[], moves=[], builds={}, smoke={})
    entry.old_base, entry.new_base = c1.sha, c2.sha
    entry.moves = [r.MoveRecord(what="PR #1 of o/r", old="1" * 40, new="2" * 40, gone=False)]
    moved = r.ItemRow(item="PR #1 of o/r", kind="pr", ref="1", repo="https://github.com/o/r", pin="2" * 40, status="moved",
                      detail="applied")
    moved.moved = r.ItemMove(status="moved", detail="1111 -> 2222 (force-pushed)", force_push=True)
    entry.items = [moved, r.ItemRow(item="patch p.patch", kind="patch", ref="p.patch", repo=None, pin="3" * 64,
                                    status="conflict", detail="conflicts in src/llama.cpp",
                                    files=[r.ConflictFile.model_validate(conflict)])]
    entry.builds = {"cpu": r.Built(ok=True, noop=False, identity="id", stamp=Stamp(number=1, commit="abc", late=False),
                                   timings={"build_s": 12.0, "total_s": 20.0}, ninja_steps=3, log="build.log",
                                   isa=r.BuildIsa(variant="native", disabled={"AMX": "learned"}, fallbacks=[])),
                    "cuda": r.BuildFailed(ok=False, log=None, smoke_failed="decode")}
    decoded = DecodedType(tokens=4, token_ids=[1, 2, 3, 4], probs_checked=True, seconds=0.1, tokens_per_s=40.0)
    entry.smoke = {"version:cpu": r.VersionSummary(ok=True, versions={"llama-server": "version: 1 (abc)"}),
                   "decode:cpu": DecodeResult(ok=True, decoder="llama-server", n_predict=4, types={"Q4_0": {"cpu": decoded}},
                                              scope="full", features={}, cpu_variant=None, seconds=1.0),
                   "rpc:cpu": Skipped(ok=True, skipped="no rpc-server"),
                   "decode:cuda": r.SmokeFailed(ok=False, error="killed by SIGILL", signal="SIGILL", type="Q4_0")}
    entry.gates = r.GatesRecord(metrics={"Q4_0.mean_kld": 0.02}, last_good={"Q4_0.mean_kld": 0.01}, max_kld_increase=0.005,
                                max_mtp_acceptance_drop=None, min_tokens_per_s_ratio=None, tokens_per_s=None,
                                refused=[r.GateRefusal(metric="Q4_0.mean_kld", last_good=0.01, candidate=0.02,
                                                       threshold=0.005, kind="increase", text="worse")])
    entry.bisect = r.NIGHT_BISECT.validate_python({**upstream.model_dump(by_alias=True), "moved": ["PR #1 of o/r"]})
    entry.failed_step, entry.error, entry.seconds = "gates", "worse", 9.5
    return entry


def test_the_nightly_entry_round_trips_through_report_json(tmp_path: Path) -> None:
    """Every typed part of a night comes back from report.json as the same model; the JSON keeps the
    shape of the night's dict (keys never set left out, a failed check's details beside ok and error)."""
    from harness.smoke.results import DecodeResult, Skipped

    entry = _night()
    files = nightly_report.write(tmp_path, nightly_report.Report(date="2026-01-04", recipes=[entry]))
    data = json.loads(files["json"].read_text())
    [again] = nightly_report.Report.model_validate(data).recipes
    assert again == entry and again.to_json() == entry.to_json() == data["recipes"][0]
    assert isinstance(again.smoke["decode:cpu"], DecodeResult) and isinstance(again.smoke["rpc:cpu"], Skipped)
    assert isinstance(again.smoke["decode:cuda"], entry_mod.SmokeFailed)
    assert isinstance(again.builds["cuda"], entry_mod.BuildFailed)
    assert isinstance(again.bisect, entry_mod.UpstreamCulprit) and again.bisect.moved == ["PR #1 of o/r"]
    shown = data["recipes"][0]
    assert shown["smoke"]["decode:cuda"] == {"ok": False, "error": "killed by SIGILL", "signal": "SIGILL", "type": "Q4_0"}
    assert shown["smoke"]["rpc:cpu"] == {"ok": True, "skipped": "no rpc-server"}
    assert shown["builds"]["cuda"] == {"ok": False, "log": None, "smoke_failed": "decode"}
    assert "note" not in shown["smoke"]["decode:cpu"]["types"]["Q4_0"]["cpu"]
    assert shown["items"][0]["moved"]["force_push"] is True and "files" not in shown["items"][0]
    assert shown["bisect"]["schema"] == 1 and shown["bisect"]["first_bad"]["sha"] == "b" * 40
    md = files["md"].read_text()
    assert "**Culprit: upstream bbbbbbbbbbbb commit b, " in md and "- smoke decode:cuda: FAILED" in md
    # the stack culprit and a failed bisection are the other two answers
    for other, kind in (({"culprit": "stack", "moved": ["x"], "check": "build", "detail": "d",
                          "base": {"sha": "c" * 40, "subject": "s", "date": "d"}}, entry_mod.StackCulprit),
                        ({"error": "no mirror"}, entry_mod.BisectFailed)):
        assert isinstance(entry_mod.NIGHT_BISECT.validate_python(other), kind)
