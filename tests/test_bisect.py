"""``harness bisect`` on a small upstream of 40 real commits (tests/bisect_world.py), with real
``git bisect run`` on a full clone of the same range as the oracle, and a failed nightly that
names the culprit."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from harness.bisect import ends as bisect_ends
from harness.bisect import report as bisect_report
from harness.bisect import run as bisect
from tests import bisect_world as bw
from tests.conftest import run_harness, write_recipe

pytestmark = pytest.mark.git_world  # local git repositories only: no network


@pytest.fixture(scope="module")
def bworld(tmp_path_factory: pytest.TempPathFactory) -> bw.World:
    return bw.build(tmp_path_factory.mktemp("bisect-world"))


@pytest.fixture
def env(bworld: bw.World, tmp_path: Path) -> dict[str, str]:
    bworld.set_master(bworld.commits[bw.N])
    return {**os.environ, **{k: v for k, v in bworld.env.items() if k.startswith("GIT_CONFIG")}}


def _recipe(tmp_path: Path, env: dict[str, str], stack: list[int], *, lock_at: str | None = None,
            world: bw.World | None = None) -> Path:
    recipe = write_recipe(tmp_path / "recipes", "tiny", bw.recipe_text(stack))
    if lock_at is not None:
        assert world is not None
        world.set_master(lock_at)
    res = run_harness("lock", recipe, env=env)
    assert res.returncode == 0, res.stderr
    if world is not None:
        world.set_master(world.commits[bw.N])
    return recipe


def _bisect(recipe: Path, env: dict[str, str], *args: str, code: int = 0) -> dict:  # type: ignore[type-arg]
    res = run_harness("bisect", recipe, *args, "--json", env=env, cwd=recipe.parent)
    assert res.returncode == code, res.stderr[-3000:]
    return json.loads(res.stdout)  # type: ignore[no-any-return]


def _oracle(world: bw.World, tmp_path: Path, good: str, bad: str, script: str) -> tuple[list[str], int]:
    """Real ``git bisect run`` on a full clone: (the commit(s) it names as first bad, steps it ran)."""
    clone = tmp_path / "oracle"
    bw.git(tmp_path, "clone", "-q", str(world.upstream), str(clone))
    bw.git(clone, "fetch", "-q", "origin", "+refs/pull/*:refs/pull/*")
    runs = tmp_path / "runs"
    checker = tmp_path / "oracle.sh"
    checker.write_text(f"#!/bin/sh\necho x >> {runs}\n{script}")
    checker.chmod(0o755)
    bw.git(clone, "bisect", "start", "--first-parent", bad, good)
    out = subprocess.run(["git", "-C", str(clone), "bisect", "run", str(checker)], capture_output=True, text=True,
                         env={**os.environ, "GIT_CONFIG_GLOBAL": os.devnull, "GIT_AUTHOR_NAME": "o",
                              "GIT_AUTHOR_EMAIL": "o@example.invalid", "GIT_COMMITTER_NAME": "o",
                              "GIT_COMMITTER_EMAIL": "o@example.invalid"}).stdout
    steps = len(runs.read_text().splitlines())
    if "is the first bad commit" in out:
        return [out.split(" is the first bad commit")[0].split()[-1]], steps
    assert "could be any of" in out, out
    listed = out.split("could be any of:", 1)[1].split()
    return [s for s in listed if len(s) == 40], steps


def test_apply_names_the_commit_git_bisect_names(bworld: bw.World, env: dict[str, str], tmp_path: Path) -> None:
    """Default ends (the lock's base, the upstream ref now): PR 1 stops applying at c23, found in
    about log2(40) steps, as git bisect run finds it with a squash merge of the PR as the check."""
    recipe = _recipe(tmp_path, env, [2, 1], lock_at=bworld.commits[0], world=bworld)
    result = _bisect(recipe, env, "--check", "apply")
    culprit = bworld.commits[bw.APPLY_BREAK]
    assert result["schema"] == 1 and not result["is_range"] and result["why"] == "found"
    assert result["first_bad"]["sha"] == culprit
    assert result["first_bad"]["pr"] == 1000 + bw.APPLY_BREAK
    assert result["first_bad"]["subject"] == bworld.subject(bw.APPLY_BREAK)
    assert result["first_bad"]["date"].startswith("2026-")
    assert result["last_good"]["sha"] == bworld.commits[bw.APPLY_BREAK - 1]
    assert "PR #1 of" in result["detail"] and "feature.txt" in result["detail"] and "item 2" in result["detail"]
    assert result["range_size"] == bw.N and result["good"]["sha"] == bworld.commits[0]
    # the bad end (the upstream ref now, picked not given) and the good end are checked first
    assert [(s["end"], s["commit"]["sha"], s["verdict"]) for s in result["steps"][:2]] == \
        [("bad", bworld.commits[bw.N], "bad"), ("good", bworld.commits[0], "good")]
    bisecting = [s for s in result["steps"] if s["end"] is None]
    assert len(bisecting) == len(result["steps"]) - 2 <= math.ceil(math.log2(bw.N))

    oracle, git_steps = _oracle(bworld, tmp_path, bworld.commits[0], bworld.commits[bw.N],
                                f"git merge -q --squash --no-commit {bworld.prs[1]} >/dev/null 2>&1; rc=$?\n"
                                "git reset -q --hard; [ $rc -eq 0 ]\n")
    assert oracle == [culprit]
    assert abs(len(bisecting) - git_steps) <= 1
    # nothing of the bisection reached the recipe's tree, a builds/ directory or the lock
    cache = Path(env.get("HARNESS_CACHE") or os.environ["HARNESS_CACHE"])
    assert not (cache / "trees").exists() and not (recipe.parent / "builds").exists()
    assert json.loads(recipe.with_suffix(".lock").read_text())["upstream"]["sha"] == bworld.commits[0]


def test_text_output_and_progress(bworld: bw.World, env: dict[str, str], tmp_path: Path) -> None:
    recipe = _recipe(tmp_path, env, [1])
    res = run_harness("bisect", recipe, "--check", "apply", "--good", bworld.commits[20][:10], "--bad",
                      bworld.commits[26], env=env)
    assert res.returncode == 0, res.stderr
    assert f"first bad commit: {bworld.commits[bw.APPLY_BREAK]}" in res.stdout
    assert f"(PR #{1000 + bw.APPLY_BREAK})" in res.stdout
    assert "bisect step 1: checking the bad end" in res.stderr and "bisect step 2: checking the good end" in res.stderr
    assert "bisect step 3: 6 commit(s) left, about 3 step(s) remaining" in res.stderr
    assert "(bad end)" in res.stdout and "(good end)" in res.stdout


def test_run_check_skips_give_a_range(bworld: bw.World, env: dict[str, str], tmp_path: Path) -> None:
    """A run: script exiting 125 on c5 and c6 next to the culprit c7: the answer is the range git gives."""
    recipe = _recipe(tmp_path, env, [2])
    script = "[ -f skipme.txt ] && exit 125\ngrep -q broken state.txt && exit 1\nexit 0\n"
    check = tmp_path / "check.sh"
    check.write_text("#!/bin/sh\n" + script)
    check.chmod(0o755)
    good, bad = bworld.commits[0], bworld.commits[10]
    result = _bisect(recipe, env, "--check", f"run:{check}", "--good", good, "--bad", bad, code=1)
    expected = bworld.commits[bw.SKIP_FROM:bw.RUN_BREAK + 1]
    assert result["is_range"] and result["why"] == "skipped" and result["first_bad"] is None
    assert result["ok"] is False  # no single commit: exit 1, as the text says
    assert [c["sha"] for c in result["candidates"]] == expected
    assert {s["verdict"] for s in result["steps"]} == {"good", "bad", "skip"}
    assert result["last_good"]["sha"] == bworld.commits[bw.SKIP_FROM - 1]
    oracle, _ = _oracle(bworld, tmp_path, good, bad, script)
    assert sorted(oracle) == sorted(expected)


def test_run_check_skips_where_the_stack_does_not_apply(bworld: bw.World, env: dict[str, str], tmp_path: Path) -> None:
    """From c23 PR 1 conflicts: a run: check cannot judge those commits, so they are skipped, not bad."""
    recipe = _recipe(tmp_path, env, [1])
    check = tmp_path / "check.sh"
    check.write_text("#!/bin/sh\ngrep -q 'change 25' other.txt && exit 1\nexit 0\n")
    check.chmod(0o755)
    res = run_harness("bisect", recipe, "--check", f"run:{check}", "--good", bworld.commits[20], "--bad",
                      bworld.commits[28], env=env)
    assert res.returncode == 1, res.stderr[-3000:]
    assert "the first bad commit is one of these 6 (only skipped commits are left):" in res.stdout
    assert "cannot judge the bad end" in res.stderr  # PR 1 conflicts at c28: taken as bad, as git takes --bad
    result = _bisect(recipe, env, "--check", f"run:{check}", "--good", bworld.commits[20], "--bad", bworld.commits[28],
                     code=1)
    assert result["is_range"] and result["why"] == "skipped"
    assert [c["sha"] for c in result["candidates"]] == bworld.commits[bw.APPLY_BREAK:29]
    skipped = [s for s in result["steps"] if s["verdict"] == "skip"]
    assert skipped and all("the stack does not apply" in s["detail"] for s in skipped)


def test_run_check_finds_a_commit_and_budget_gives_a_range(bworld: bw.World, env: dict[str, str], tmp_path: Path) -> None:
    recipe = _recipe(tmp_path, env, [2])
    check = tmp_path / "check.sh"
    check.write_text("#!/bin/sh\ntest -f notes.txt || exit 2\ngrep -q 'change 33' other.txt && exit 1\nexit 0\n")
    check.chmod(0o755)
    good, bad = bworld.commits[0], bworld.commits[bw.N]
    found = _bisect(recipe, env, "--check", f"run:{check}", "--good", good, "--bad", bad)
    assert found["first_bad"]["sha"] == bworld.commits[33]
    assert len(found["steps"]) <= 2 + math.ceil(math.log2(bw.N))  # the two ends, then the bisection
    short = _bisect(recipe, env, "--check", f"run:{check}", "--good", good, "--bad", bad, "--max-steps", "2", code=1)
    assert short["is_range"] and short["why"] == "budget" and len(short["steps"]) == 2 + 2  # the ends not counted
    assert bworld.commits[33] in [c["sha"] for c in short["candidates"]]


def test_build_check_in_a_private_build_dir(bworld: bw.World, env: dict[str, str], tmp_path: Path) -> None:
    """The recipe's cpu backend builds the tiny CMake project; c31 breaks its build."""
    if not shutil.which("cc"):
        pytest.skip("no C compiler")
    recipe = _recipe(tmp_path, env, [2])
    result = _bisect(recipe, env, "--check", "build", "--good", bworld.commits[24], "--bad", bworld.commits[bw.N])
    assert result["first_bad"]["sha"] == bworld.commits[bw.BUILD_BREAK]
    assert "the build failed" in result["detail"] and "main.c" in result["detail"]
    assert len(result["steps"]) <= 2 + math.ceil(math.log2(bw.N - 24))  # the two ends, then the bisection
    assert [s["end"] for s in result["steps"][:2]] == ["bad", "good"] and "main.c" in result["steps"][0]["detail"]
    cache = Path(os.environ["HARNESS_CACHE"])
    bdirs = list((cache / "bisect").glob("tiny-*/build-cpu"))
    assert len(bdirs) == 1 and (bdirs[0] / "CMakeCache.txt").exists()  # one directory, reused by every step
    assert not (cache / "trees").exists() and not (recipe.parent / "builds").exists()


def test_smoke_check(bworld: bw.World, env: dict[str, str], tmp_path: Path) -> None:
    """c12's llama-cli stops printing the stamp: the version smoke check turns bad there."""
    if not shutil.which("cc"):
        pytest.skip("no C compiler")
    recipe = _recipe(tmp_path, env, [2])
    result = _bisect(recipe, env, "--check", "smoke", "--good", bworld.commits[0], "--bad", bworld.commits[bw.SMOKE_FIX - 1])
    assert result["first_bad"]["sha"] == bworld.commits[bw.SMOKE_BREAK]
    assert "smoke check 'version' failed" in result["detail"]


@pytest.mark.parametrize(("args", "message"), [
    (["--check", "bogus"], "not a check"),
    (["--check", "run:"], "needs a command"),
    (["--check", "apply", "--good", "c10", "--bad", "c5"], "is not an ancestor of"),
    (["--check", "apply", "--good", "deadbeef" * 5], "has no such commit"),
    (["--check", "apply", "--good", "no-such-tag"], "has no such commit, branch or tag"),
    (["--check", "apply", "--good", "a b"], "not a commit SHA, branch or tag name"),
    (["--check", "apply", "--bad=-upload-pack=x"], "not a commit SHA, branch or tag name"),
    (["--check", "apply", "--max-steps", "0"], "give 1 or more"),
    (["--check", "bench:tokens_per_second<40"], "give --model GGUF"),
    (["--check", "bench:tokens_per_secnd<40", "--model", "x.gguf"], "did you mean 'tokens_per_second'"),
    (["--check", "bench:tokens_per_second=40"], "expected METRIC<VALUE or METRIC>VALUE"),
    (["--check", "bench:tokens_per_second<0"], "must be above 0"),
    (["--check", "bench:tps<4O"], "expected METRIC<VALUE"),
])
def test_bad_input_is_exit_2(bworld: bw.World, env: dict[str, str], tmp_path: Path, args: list[str], message: str) -> None:
    recipe = _recipe(tmp_path, env, [1], lock_at=bworld.commits[0], world=bworld)
    args = [bworld.commits[int(a[1:])] if a in ("c5", "c10") else a for a in args]
    res = run_harness("bisect", recipe, *args, env=env)
    assert res.returncode == 2, res.stderr
    assert message in res.stderr and "Traceback" not in res.stderr


def _git_bisect_run(world: bw.World, tmp_path: Path, good: str, bad: str, script: str) -> tuple[int, str]:
    """Real ``git bisect run`` with ``script`` on a fresh full clone: (its exit status, what it said)."""
    clone = tmp_path / "oracle-run"
    bw.git(tmp_path, "clone", "-q", str(world.upstream), str(clone))
    checker = tmp_path / "oracle-run.sh"
    checker.write_text("#!/bin/sh\n" + script)
    checker.chmod(0o755)
    bw.git(clone, "bisect", "start", "--first-parent", bad, good)
    out = subprocess.run(["git", "-C", str(clone), "bisect", "run", str(checker)], capture_output=True, text=True,
                         env={**os.environ, "GIT_CONFIG_GLOBAL": os.devnull})
    return out.returncode, out.stdout + out.stderr


def test_run_script_missing_or_not_executable_is_exit_2(bworld: bw.World, env: dict[str, str], tmp_path: Path) -> None:
    """Checked before the first step, as a shell would find it (relative to the current directory)."""
    recipe = _recipe(tmp_path, env, [2])
    (recipe.parent / "check.sh").write_text("#!/bin/sh\nexit 0\n")  # not executable
    for check, message in (("run:./check.sh", "./check.sh is not executable (chmod +x it, or run:'sh "),
                           ("run:./missing.sh", "./missing.sh: no such file"),
                           ("run:no-such-program-xyz", "no-such-program-xyz not found on PATH")):
        res = run_harness("bisect", recipe, "--check", check, "--good", bworld.commits[20], "--bad", bworld.commits[26],
                          env=env, cwd=recipe.parent)
        assert res.returncode == 2, res.stderr
        assert message in res.stderr and "bisect step" not in res.stderr and "Traceback" not in res.stderr
        if check == "run:./check.sh":  # sh would look for ./check.sh in the stacked tree: the hint names the full path
            assert f"run:'sh {(recipe.parent / 'check.sh').resolve()}'" in res.stderr


@pytest.mark.parametrize(("script", "harness_says", "git_says"), [
    ("no-such-command-xyz\n", "bogus exit code 127 at the good end", "bogus exit code 127 for good revision"),
    ("exit 126\n", "bogus exit code 126 at the good end", "bogus exit code 126 for good revision"),
    ("exit 129\n", "exited 129", "is < 0 or >= 128"),
    ("kill -9 $$\n", "was killed by signal 9", "is < 0 or >= 128"),
])
def test_run_check_that_cannot_run_stops_as_git_does(bworld: bw.World, env: dict[str, str], tmp_path: Path,
                                                     script: str, harness_says: str, git_says: str) -> None:
    """A script whose own command is missing (127) or not executable (126) at every commit, or that dies
    (>= 128, a signal): no "first bad commit", exit 1 saying the check itself failed, as git bisect run stops."""
    recipe = _recipe(tmp_path, env, [2])
    check = tmp_path / "check.sh"
    check.write_text("#!/bin/sh\necho about to run it\n" + script)
    check.chmod(0o755)
    good, bad = bworld.commits[0], bworld.commits[10]
    res = run_harness("bisect", recipe, "--check", f"run:{check}", "--good", good, "--bad", bad, env=env)
    assert res.returncode == 1, res.stderr[-3000:]
    assert "the check itself failed" in res.stderr and harness_says in res.stderr
    assert "about to run it" in res.stderr  # its output's tail
    assert "first bad commit" not in res.stdout
    code, said = _git_bisect_run(bworld, tmp_path, good, bad, "echo about to run it\n" + script)
    assert code != 0 and git_says in said and "is the first bad commit" not in said


def test_run_check_127_past_a_good_end_is_bad_as_in_git(bworld: bw.World, env: dict[str, str], tmp_path: Path) -> None:
    """127 only from c7 on (a command the state change removes): the good end passes, so 127 is bad, as git
    bisect run verifies the good revision and then goes on."""
    recipe = _recipe(tmp_path, env, [2])
    script = "grep -q broken state.txt && exec no-such-command-xyz\nexit 0\n"
    check = tmp_path / "check.sh"
    check.write_text("#!/bin/sh\n" + script)
    check.chmod(0o755)
    good, bad = bworld.commits[0], bworld.commits[20]
    result = _bisect(recipe, env, "--check", f"run:{check}", "--good", good, "--bad", bad)
    assert result["first_bad"]["sha"] == bworld.commits[bw.RUN_BREAK] and "exited 127" in result["detail"]
    oracle, _ = _oracle(bworld, tmp_path, good, bad, script)
    assert oracle == [bworld.commits[bw.RUN_BREAK]]


def test_ends_are_checked_first(bworld: bw.World, env: dict[str, str], tmp_path: Path) -> None:
    """A healthy bad end (picked as the upstream ref now, or given) is nothing to bisect; a good end that
    already fails puts the cause at or before it: exit 1 after one or two logged steps, no culprit."""
    healthy = _recipe(tmp_path / "healthy", env, [2], lock_at=bworld.commits[0], world=bworld)  # PR 2 always applies
    for given in ([], ["--bad", bworld.commits[30]]):
        res = run_harness("bisect", healthy, "--check", "apply", *given, env=env)
        tip = bworld.commits[bw.N] if not given else bworld.commits[30]
        assert res.returncode == 1, res.stderr[-3000:]
        assert f"the check passes at the bad end ({tip}): nothing to bisect" in res.stderr
        assert "first bad commit" not in res.stdout and "checking the good end" not in res.stderr
    broken = _recipe(tmp_path / "broken", env, [1])  # PR 1 conflicts from c23 on
    res = run_harness("bisect", broken, "--check", "apply", "--good", bworld.commits[25], "--bad", bworld.commits[30],
                      "--json", env=env)
    assert res.returncode == 1, res.stderr[-3000:]
    assert (f"the check already fails at the good end ({bworld.commits[25]}): PR #1 of {bw.URL}: conflicts in "
            "feature.txt") in res.stderr
    assert "the cause is at or before it; pass an older --good" in res.stderr
    assert json.loads(res.stdout)["ok"] is False and "bisect step 3" not in res.stderr


def test_good_and_bad_take_tags_and_branches_as_git_does(bworld: bw.World, env: dict[str, str], tmp_path: Path) -> None:
    """llama.cpp's release tags (b6019: lightweight here, annotated there) and a branch, resolved at the
    upstream as git bisect resolves them in a clone: the same first bad commit."""
    bw.git(bworld.upstream, "tag", "-f", "b6020", bworld.commits[20])
    bw.git(bworld.upstream, "tag", "-f", "-a", "-m", "release b6026", "b6026", bworld.commits[26])
    bw.git(bworld.upstream, "branch", "-f", "release", bworld.commits[28])
    recipe = _recipe(tmp_path, env, [1])
    result = _bisect(recipe, env, "--check", "apply", "--good", "b6020", "--bad", "b6026")
    assert result["good"]["sha"] == bworld.commits[20] and result["bad"]["sha"] == bworld.commits[26]
    assert result["first_bad"]["sha"] == bworld.commits[bw.APPLY_BREAK]
    oracle, _ = _oracle(bworld, tmp_path, "b6020", "b6026",
                        f"git merge -q --squash --no-commit {bworld.prs[1]} >/dev/null 2>&1; rc=$?\n"
                        "git reset -q --hard; [ $rc -eq 0 ]\n")
    assert oracle == [bworld.commits[bw.APPLY_BREAK]]
    by_branch = _bisect(recipe, env, "--check", "apply", "--good", bworld.commits[20][:8], "--bad", "release")
    assert by_branch["bad"]["sha"] == bworld.commits[28]
    assert by_branch["first_bad"]["sha"] == bworld.commits[bw.APPLY_BREAK]


def test_ends_in_the_mirror_need_no_remote(bworld: bw.World, env: dict[str, str], tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """Full (and abbreviated) SHAs the mirror already holds are taken from it, pinned behind a pin that holds
    them: with the upstream gone, a bisection of a range it has runs, and c27 (in the mirror's history, never
    pinned) is an end without a fetch; a tag, which only the remote can name, says it cannot reach it."""
    from harness.recipe.load import load_recipe
    from harness.source import lock
    from harness.source.mirror import Mirror

    recipe = _recipe(tmp_path, env, [1])
    good, bad = bworld.commits[20], bworld.commits[30]
    assert _bisect(recipe, env, "--check", "apply", "--good", good, "--bad", bad)["first_bad"]["sha"] == \
        bworld.commits[bw.APPLY_BREAK]
    for k, v in env.items():
        if k.startswith("GIT_CONFIG"):
            monkeypatch.setenv(k, v)
    the_lock = lock.read(load_recipe(recipe).lock_path)
    assert the_lock is not None
    mirror = Mirror.for_url(bw.URL)
    with mirror.locked():
        assert not mirror.has(bworld.commits[27])
    away = bworld.upstream.with_name("upstream-away.git")
    bworld.upstream.rename(away)
    try:
        again = _bisect(recipe, env, "--check", "apply", "--good", good[:10], "--bad", bad)
        assert again["first_bad"]["sha"] == bworld.commits[bw.APPLY_BREAK]
        _, got_good, got_bad = bisect_ends.ends(load_recipe(recipe), the_lock, good, bworld.commits[27])
        assert (got_good, got_bad) == (good, bworld.commits[27])
        with mirror.locked():
            assert mirror.has(bworld.commits[27])
        res = run_harness("bisect", recipe, "--check", "apply", "--good", good, "--bad", "b6026", env=env)
        assert res.returncode == 1 and "cannot reach" in res.stderr, res.stderr[-2000:]
    finally:
        away.rename(bworld.upstream)


def test_no_lock_says_run_lock(bworld: bw.World, env: dict[str, str], tmp_path: Path) -> None:
    recipe = write_recipe(tmp_path / "recipes", "tiny", bw.recipe_text([1]))
    res = run_harness("bisect", recipe, "--check", "apply", env=env)
    assert res.returncode == 2, res.stderr
    assert "bisect needs the recipe's lock: run `harness lock" in res.stderr and "--frozen" not in res.stderr


def test_search_matches_git_step_counts() -> None:
    """The midpoint choice needs ceil(log2(n)) steps at most on n commits, whatever the first bad one."""
    for n in (2, 3, 7, 16, 40, 100):
        for culprit in range(n):
            calls: list[int] = []

            def judge(i: int, culprit: int = culprit, calls: list[int] = calls) -> bisect.Verdict:
                calls.append(i)
                return bisect.Verdict("bad" if i >= culprit else "good")

            lo, hi, why = bisect.search([str(i) for i in range(n)], judge)
            assert (hi, why) == (culprit, "found") and lo == culprit - 1
            assert len(calls) <= math.ceil(math.log2(n))


def test_nightly_names_the_culprit(bworld: bw.World, env: dict[str, str], tmp_path: Path) -> None:
    """A night passes at c0; upstream moves to c40 where PR 1 conflicts: the failed night's report names c23."""
    if not shutil.which("cc"):
        pytest.skip("no C compiler")
    recipe = _recipe(tmp_path, env, [2, 1])
    bworld.set_master(bworld.commits[0])
    report, builds = tmp_path / "report", tmp_path / "builds"
    first = run_harness("nightly", recipe, "--report", report, "--builds-dir", builds, "--json", env=env)
    assert first.returncode == 0, first.stderr[-3000:]
    bworld.set_master(bworld.commits[bw.N])
    second = run_harness("nightly", recipe, "--report", report, "--builds-dir", builds, "--json", env=env)
    assert second.returncode == 1, second.stderr[-3000:]
    entry = json.loads(second.stdout)["recipes"][0]
    assert entry["failed_step"] == "stack"
    assert entry["bisect"]["first_bad"]["sha"] == bworld.commits[bw.APPLY_BREAK]
    assert len(entry["bisect"]["steps"]) <= 8
    md = (report / "report.md").read_text()
    assert f"Culprit: upstream {bworld.commits[bw.APPLY_BREAK][:12]}" in md and f"PR #{1000 + bw.APPLY_BREAK}" in md
    # the failed night kept the lock and the published build
    assert json.loads(recipe.with_suffix(".lock").read_text())["upstream"]["sha"] == bworld.commits[0]


@pytest.mark.parametrize(("subject", "pr"), [
    ("llama : add MTP support (#22673)", 22673),
    ("Merge pull request #14 from AtomicBot-ai/b1-mtp-qwen-rebase", 14),
    ("ggml : fix #123 in the middle", None),
])
def test_pr_from_subject(subject: str, pr: int | None) -> None:
    found = bisect_report.PR_IN_SUBJECT.search(subject)
    assert (int(found.group(1) or found.group(2)) if found else None) == pr


def _recorded_tps(name: str, scale: float = 1.0) -> dict[str, list[float]]:
    """The baseline's tokens/s per prompt and round of a real `harness bench` run (tests/data/bench)."""
    data = json.loads((Path(__file__).parent / "data" / "bench" / name).read_text())
    values: dict[str, list[float]] = {}
    for s in data["samples"]:
        if s["mode"] == "none":
            values.setdefault(f"{s['category']}/{s['prompt']}", []).append(scale * s["tokens_per_second"])
    return values


@pytest.mark.parametrize(("expr", "verdict"), [
    ("tokens_per_second<25", "good"),  # run 1: median 30.6, interval 27.5-34.1: above the threshold
    ("tokens_per_second<40", "bad"),  # the whole interval below 40
    ("tps<30", "skip"),  # the interval straddles 30: no clear difference, not steered by noise
    ("tokens/s>40", "good"),  # >: bad above; below it is the good side
    ("tokens_per_second>25", "bad"),
])
def test_bench_threshold_decided_by_the_interval(expr: str, verdict: str) -> None:
    from harness.bisect import bench as bisect_bench

    got, detail = bisect_bench.decide(_recorded_tps("demo-run1.json"), bisect_bench.parse(expr))
    assert got == verdict, detail
    assert "95% interval 27.52-34.11, 18 samples" in detail
    if verdict == "skip":
        assert "no clear difference from 30" in detail


def test_bench_too_few_samples_is_a_skip() -> None:
    """Five prompts, one round: even all of them far below the threshold is no verdict (stats.MIN_PAIRS)."""
    from harness.bisect import bench as bisect_bench

    one_round = {k: v[:1] for k, v in list(_recorded_tps("demo-run1.json").items())[:5]}
    got, detail = bisect_bench.decide(one_round, bisect_bench.parse("tokens_per_second<100"))
    assert got == "skip" and "a verdict needs 6" in detail


def test_bench_bisection_on_recorded_noise_finds_the_slow_commit() -> None:
    """40 commits measured with the two recorded runs' real noise in turn; from commit 27 on every figure
    is 0.6x: bisecting with bench:tokens_per_second<25 names commit 27 in log2 steps."""
    from harness.bisect import bench as bisect_bench

    threshold = bisect_bench.parse("tokens_per_second<25")
    runs = [_recorded_tps("demo-run1.json"), _recorded_tps("demo-run2.json")]
    slow = 27

    def judge(i: int) -> bisect.Verdict:
        values = runs[i % 2] if i < slow else {k: [0.6 * v for v in vs] for k, vs in runs[i % 2].items()}
        return bisect.Verdict(*bisect_bench.decide(values, threshold))

    lo, hi, why = bisect.search([str(i) for i in range(40)], judge)
    assert (lo, hi, why) == (slow - 1, slow, "found")


@pytest.mark.slow
def test_bench_measures_the_real_llama_server(tmp_path: Path, llama_bin: Path, smollm2_gguf: Path) -> None:
    """One step's measurement on the session's real llama-server and SmolLM2: every prompt of the suite in
    every round gives a figure, and thresholds far on either side decide without a skip."""
    from harness.bisect import bench as bisect_bench
    from harness.recipe.load import load_recipe

    recipe = load_recipe(write_recipe(tmp_path / "repo", "mini", "name: mini\nbuild: {backends: [cpu]}\n"
                                      "serve: {ctx: 512, args: [-t, '2']}\n"))
    values = bisect_bench.measure(llama_bin / "llama-server", recipe, "cpu", smollm2_gguf, tmp_path / "work",
                                  n_predict=16, repeat=2)
    assert len(values) == 12 and all(len(v) == 2 and min(v) > 0 for v in values.values())
    assert bisect_bench.decide(values, bisect_bench.parse("tokens_per_second<0.01"))[0] == "good"
    assert bisect_bench.decide(values, bisect_bench.parse("tokens_per_second<100000"))[0] == "bad"
    assert (tmp_path / "work" / "logs" / "none.round1.log").is_file()


def test_gate_verdict_is_the_gates_refusal() -> None:
    """At each step of a gate bisection the candidate's figures are held against the last good night's
    with the nightly's own rule (gates.compare): bad when a mean KLD rose by more than allowed."""
    from harness.bisect import checks as bisect_checks
    from harness.recipe.load import Recipe
    from harness.recipe.schema import RecipeModel

    spec = RecipeModel.model_validate({"name": "g", "build": {"backends": ["cpu"]},
                                       "nightly": {"gates": {"model": "m.gguf", "max_kld_increase": 0.005}}})
    recipe = Recipe(path=Path("g.yaml"), spec=spec, root=Path("."))
    before = {"Q4_K_M.mean_kld": 0.0312}
    worse = bisect_checks.gate_verdict({"Q4_K_M.mean_kld": 0.0402, "Q4_K_M.p99_kld": 0.3}, before, recipe)
    same = bisect_checks.gate_verdict({"Q4_K_M.mean_kld": 0.0330, "Q4_K_M.p99_kld": 0.3}, before, recipe)
    assert worse.verdict == "bad" and "Q4_K_M.mean_kld 0.040200 vs 0.031200" in worse.detail
    assert same.verdict == "good" and "Q4_K_M.mean_kld 0.033000" in same.detail


def test_a_gate_failure_bisects_with_the_gates_check(bworld: bw.World, env: dict[str, str], tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """A night refused at its gates after a night that passed: nightly's culprit hunt bisects with the
    gates check (each step builds, then measures the gate model). The tiny project has no llama-quantize,
    so the first step's measurement says so and the hunt reports that error instead of a culprit."""
    if not shutil.which("cc"):
        pytest.skip("no C compiler")
    from harness.recipe.load import load_recipe
    from harness.source import lock

    path = _recipe(tmp_path, env, [2], lock_at=bworld.commits[0], world=bworld)
    path.write_text(path.read_text() + "  gates: {model: gate.gguf}\n")
    (path.parent / "gate.gguf").write_bytes(b"GGUF")
    for k, v in env.items():
        if k.startswith("GIT_CONFIG"):
            monkeypatch.setenv(k, v)
    recipe = load_recipe(path)
    old = lock.read(recipe.lock_path)
    assert old is not None
    last_good = tmp_path / "last-good.json"
    last_good.write_text(json.dumps({"cpu": {"lock_digest": old.digest},
                                     "gates": {"metrics": {"Q4_K_M.mean_kld": 0.03}}}))
    found = bisect.for_night(recipe, old, bworld.commits[8], "gates", last_good)
    assert found is not None and "no llama-quantize" in str(found.get("error")), found
    # not the last good night's lock: no hunt
    last_good.write_text(json.dumps({"cpu": {"lock_digest": "0" * 64}}))
    assert bisect.for_night(recipe, old, bworld.commits[8], "gates", last_good) is None


def test_nightly_with_a_moved_pr_head_blames_the_item_or_upstream(bworld: bw.World, env: dict[str, str],
                                                                  tmp_path: Path) -> None:
    """PR 1's head moves to a commit that rewrites state.txt, which upstream's c7 also rewrites.  Upstream
    at c10: the last good stack (PR 1's old head) still applies there, so the culprit is PR 1, not an
    upstream commit.  Upstream at c40: the old head conflicts too (c23), so upstream is bisected."""
    if not shutil.which("cc"):
        pytest.skip("no C compiler")
    work = tmp_path / "pr1"
    bw.git(tmp_path, "clone", "-q", str(bworld.upstream), str(work))
    bw.git(work, "checkout", "-q", bworld.prs[1])
    (work / "state.txt").write_text("PR 1 v2 rewrites this\n")
    bw.git(work, "commit", "-qam", "feature: PR 1 v2", date=1790000009)
    bw.git(work, "push", "-q", str(bworld.upstream), "HEAD:refs/pull/1/head")
    try:
        for tip, culprit in ((10, None), (bw.N, bw.APPLY_BREAK)):
            bw.git(bworld.upstream, "update-ref", "refs/pull/1/head", bworld.prs[1])
            recipe = _recipe(tmp_path / str(tip), env, [2, 1])
            bworld.set_master(bworld.commits[0])
            report, builds = tmp_path / str(tip) / "report", tmp_path / str(tip) / "builds"
            first = run_harness("nightly", recipe, "--report", report, "--builds-dir", builds, "--json", env=env)
            assert first.returncode == 0, first.stderr[-3000:]
            bworld.set_master(bworld.commits[tip])
            bw.git(work, "push", "-q", "-f", str(bworld.upstream), "HEAD:refs/pull/1/head")
            second = run_harness("nightly", recipe, "--report", report, "--builds-dir", builds, "--json", env=env)
            assert second.returncode == 1, second.stderr[-3000:]
            entry = json.loads(second.stdout)["recipes"][0]
            assert entry["failed_step"] == "stack"
            found, md = entry["bisect"], (report / "report.md").read_text()
            assert found["moved"] == [f"PR #1 of {bw.URL}"]
            if culprit is None:
                assert found["culprit"] == "stack" and found["base"]["sha"] == bworld.commits[tip]
                assert "first_bad" not in found and "not upstream" in found["detail"]
                assert f"Culprit: the moved stack item(s) PR #1 of {bw.URL}" in md
            else:
                assert found["first_bad"]["sha"] == bworld.commits[culprit]
                assert f"Culprit: upstream {bworld.commits[culprit][:12]}" in md and "fails at the new base" in md
    finally:
        bw.git(bworld.upstream, "update-ref", "refs/pull/1/head", bworld.prs[1])


def test_steps_fetch_no_commits(bworld: bw.World, env: dict[str, str], tmp_path: Path,
                                monkeypatch: pytest.MonkeyPatch) -> None:
    """The mirror fetched the bad end with its whole history once: a step's prepare fetches no commit
    (only the blobs its checkout reads).  Every commit fetch git really runs is recorded."""
    from harness.bisect import checks as bisect_checks
    from harness.recipe.load import load_recipe
    from harness.source import lock
    from harness.source.mirror import Mirror

    path = _recipe(tmp_path, env, [2, 1], lock_at=bworld.commits[0], world=bworld)
    for k, v in env.items():
        if k.startswith("GIT_CONFIG"):
            monkeypatch.setenv(k, v)
    fetched: list[str] = []
    real_fetch = Mirror.fetch

    def recording(self: Mirror, wanted: object) -> int:
        wants = list(wanted)  # type: ignore[call-overload]
        fetched.extend(w.sha for w in wants if not self.has(w.sha))
        return real_fetch(self, wants)

    monkeypatch.setattr(Mirror, "fetch", recording)
    recipe = load_recipe(path)
    old = lock.read(recipe.lock_path)
    assert old is not None
    result = bisect.run(recipe, old, bisect_checks.parse("apply"), good=bworld.commits[0], bad=bworld.commits[bw.N])
    assert result.first_bad is not None and result.first_bad.sha == bworld.commits[bw.APPLY_BREAK]
    assert len(result.steps) >= 5
    names = {**{c: f"c{k}" for k, c in enumerate(bworld.commits)}, **{c: f"pr{n}" for n, c in bworld.prs.items()}}
    steps = [s for s in fetched if s in bworld.commits[1:bw.N]]
    assert not steps, [names.get(s, s) for s in fetched]  # (the ends and the PR heads: once, if not there yet)
