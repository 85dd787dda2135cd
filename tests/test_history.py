"""The stack's answers equal git's on a full clone, on a fresh cache and on a warm one, for the history
shapes that broke on the real TurboQuant fork (tests/history.py): a merge commit exactly on the old
shallow cut (fork PR 7), a PR merged or squash-merged past the first deepening, and criss-crosses whose
true answer needs every merge base (fork PR 31 on master after PR 48: 112 files reported, git's 19)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from harness.source import sdist_upstream as offline
from tests import history as h
from tests.conftest import run_harness, write_recipe

PRS = ["70", "71", "72", "73", "74"]


@pytest.fixture(scope="module")
def hist(tmp_path_factory: pytest.TempPathFactory) -> h.History:
    return h.build(tmp_path_factory.mktemp("history"))


def _env(hist: h.History, cache: Path) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("GIT_CONFIG")}
    env = offline.redirect_env({h.URL: hist.bare}, base=base)
    env["HARNESS_CACHE"] = str(cache)
    return env


def _harness_answer(tmp_path: Path, hist: h.History, pr: str, cache: Path) -> h.Answer:
    recipe = write_recipe(tmp_path / f"pr{pr}", f"pr{pr}", f"upstream:\n  repo: {h.URL}\n  ref: master\nstack:\n  - pr: {pr}\n")
    res = run_harness("prepare", recipe, "--json", env=_env(hist, cache))
    out = json.loads(res.stdout)
    if not out.get("ok", True):
        assert out["error"]["kind"] == "conflict", res.stderr
        return h.Answer("conflict", tuple(sorted(f["path"] for f in out["error"]["conflict"]["files"])))
    item = out["items"][0]
    if item["status"] == "applied":
        tree = subprocess.run(["git", "-C", out["tree"], "rev-parse", f"{out['commit']}^{{tree}}"],
                              capture_output=True, text=True, check=True).stdout.strip()
        return h.Answer("applied", tree=tree)
    return h.Answer(item["status"])


def _warm(tmp_path: Path, hist: h.History, cache: Path) -> None:
    """A cache another recipe used first: an older base and a clean criss-cross PR."""
    recipe = write_recipe(tmp_path / "other", "other",
                          f"upstream:\n  repo: {h.URL}\n  ref: {hist.shas['pr71']}\nstack:\n  - pr: 74\n")
    res = run_harness("prepare", recipe, "--json", env=_env(hist, cache))
    assert res.returncode == 0, res.stderr


def test_answers_equal_gits_on_fresh_and_warm_caches(tmp_path: Path, hist: h.History) -> None:
    expected = {pr: h.oracle(hist.bare, tmp_path, hist.shas["master"], hist.shas[f"pr{pr}"]) for pr in PRS}
    # the shapes are what they claim to be (git's answers), so the comparison below can fail
    assert expected["70"].status == expected["71"].status == "already-merged"
    assert expected["72"] == h.Answer("conflict", ("src/f.txt",))
    assert expected["73"].status == "applied"  # git merges a squash-merged PR as a no-op change ...
    assert expected["74"].status == "applied"
    warm = tmp_path / "warm"
    _warm(tmp_path, hist, warm)
    for cache in (tmp_path / "fresh", warm):
        got = {pr: _harness_answer(tmp_path / cache.name, hist, pr, cache) for pr in PRS}
        for pr in ("70", "71", "72", "74"):
            assert got[pr] == expected[pr], (cache.name, pr, got[pr], expected[pr])
        # ... and the harness says why: its change is upstream already (git merges it to the tip's own tree)
        assert got["73"].status == "already-merged", (cache.name, got["73"])


def test_squash_merged_pr_that_conflicts_is_found_by_patch_id_past_the_first_deepening(tmp_path: Path, hist: h.History) -> None:
    """git's merge conflicts; ``git cherry`` on a full clone finds the squash: so does the harness, fresh or warm."""
    assert h.oracle(hist.bare, tmp_path, hist.shas["master"], hist.shas["pr75"]) == h.Answer("conflict", ("src/other.txt",))
    assert h.cherry(hist.bare, tmp_path, hist.shas["master"], hist.shas["pr75"])
    warm = tmp_path / "warm"
    _warm(tmp_path, hist, warm)
    for cache in (tmp_path / "fresh", warm):
        recipe = write_recipe(tmp_path / cache.name, "p75", f"upstream:\n  repo: {h.URL}\n  ref: master\nstack:\n  - pr: 75\n")
        out = json.loads(run_harness("prepare", recipe, "--json", env=_env(hist, cache)).stdout)
        item = out["items"][0]
        assert item["status"] == "already-merged", (cache.name, item)
        assert item["detail"] == f"same change as upstream commit {hist.shas['squash75'][:12]} (PR 75: shout three (#75))"


def test_mirror_is_a_partial_clone_with_the_whole_graph(tmp_path: Path, hist: h.History) -> None:
    """Small fetches without a shallow cut: every commit and tree, only the files a checkout reads."""
    cache = tmp_path / "c"
    recipe = write_recipe(tmp_path, "p70", f"upstream:\n  repo: {h.URL}\n  ref: master\nstack:\n  - pr: 70\n")
    assert run_harness("prepare", recipe, "--json", env=_env(hist, cache)).returncode == 0
    (mirror,) = (cache / "mirrors").glob("*.git")
    assert not (mirror / "shallow").exists()
    count = subprocess.run(["git", "-C", str(mirror), "rev-list", "--count", hist.shas["master"]],
                           capture_output=True, text=True, check=True).stdout.strip()
    full = subprocess.run(["git", "-C", str(hist.bare), "rev-list", "--count", hist.shas["master"]],
                          capture_output=True, text=True, check=True).stdout.strip()
    assert count == full
    missing = subprocess.run(["git", "-C", str(mirror), "rev-list", "--objects", "--missing=print", "--all"],
                             capture_output=True, text=True, check=True).stdout
    assert "?" in missing  # old versions of files were not fetched


def test_a_retired_mark_is_re_verified_against_the_current_base(tmp_path: Path, hist: h.History) -> None:
    """A PR retired as merged stays in the build when the recipe moves to an older base that lacks it."""
    env = _env(hist, tmp_path / "c")
    recipe = write_recipe(tmp_path, "ret", f"upstream:\n  repo: {h.URL}\n  ref: master\nstack:\n  - pr: 71\n")
    assert run_harness("lock", recipe, env=env).returncode == 0
    lock_path = recipe.with_suffix(".lock")
    data = json.loads(lock_path.read_text())
    data["stack"][0]["retired"] = "already merged upstream (test)"
    lock_path.write_text(json.dumps(data))
    out = json.loads(run_harness("prepare", recipe, "--json", env=env).stdout)
    assert out["items"][0]["status"] == "already-merged" and "still holds" in out["items"][0]["detail"]
    # the recipe moves to a base before PR 71 was merged: the mark no longer holds, the PR is applied
    recipe.write_text(recipe.read_text().replace("ref: master", f"ref: {hist.shas['root']}"))
    data = json.loads(lock_path.read_text())
    data["upstream"]["ref"] = data["upstream"]["sha"] = hist.shas["root"]
    lock_path.write_text(json.dumps(data))
    res = run_harness("prepare", recipe, "--json", env=env)
    out = json.loads(res.stdout)
    assert out["items"][0]["status"] == "applied", res.stderr
    assert "retired mark no longer holds" in out["items"][0]["detail"]
    assert "does not have it" in res.stderr
    assert (Path(out["tree"]) / "src/pr71.txt").read_text() == "PR 71\n"


def test_a_misspelled_ref_or_a_missing_pr_is_bad_input_with_a_suggestion(tmp_path: Path, hist: h.History) -> None:
    """Found by a fresh-user trial: `ref: mastr` and `pr: 99999` were step failures (exit 1) with no next step."""
    env = _env(hist, tmp_path / "c")
    recipe = write_recipe(tmp_path / "a", "typo", f"upstream:\n  repo: {h.URL}\n  ref: mastr\n")
    res = run_harness("lock", recipe, env=env)
    assert res.returncode == 2, res.stderr
    assert "upstream ref 'mastr' not found" in res.stderr and "did you mean 'master'?" in res.stderr
    recipe = write_recipe(tmp_path / "b", "nopr", f"upstream:\n  repo: {h.URL}\n  ref: master\nstack:\n  - pr: 99999\n")
    res = run_harness("lock", recipe, env=env)
    assert res.returncode == 2, res.stderr
    assert "refs/pull/99999/head not found" in res.stderr and "check the number" in res.stderr
