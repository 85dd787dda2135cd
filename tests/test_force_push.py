"""PR heads that moved after locking: force-pushed (still fetchable by SHA) and garbage-collected."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
from pathlib import Path

from tests import world as w
from tests.conftest import run_harness, write_recipe

UP = f"upstream:\n  repo: {w.UPSTREAM_URL}\n  ref: master\n"


def _push_pr(world: w.World, number: int, onto: str, text: str) -> str:
    """A commit on ``onto`` editing docs/docker.md, pushed as refs/pull/N/head (a force-push when it exists)."""
    world.branch_from(onto)
    w.edit(world.work, "docs/docker.md", "# Docker\n", f"# Docker\n\n({text})\n")
    sha = world.commit(f"docker docs: {text}")
    world.set_ref(world.upstream, f"refs/pull/{number}/head", sha)
    return sha


def test_force_pushed_pr_builds_from_its_lock_on_a_fresh_cache(tmp_path: Path, world: w.World, world_env: dict[str, str]) -> None:
    # locked on the old base, then rebased onto master and force-pushed: no ref points at the
    # locked head any more (GitHub keeps it fetchable by SHA, as the test upstream does)
    locked = _push_pr(world, 21, w.BASE, "PR 21, first push")
    recipe = write_recipe(tmp_path, "fp", UP + "stack:\n  - pr: 21\n")
    assert run_harness("lock", recipe).returncode == 0
    rebased = _push_pr(world, 21, world.shas["master"], "PR 21, rebased")

    res = run_harness("prepare", recipe, "--json")  # a fresh cache: the mirror starts at depth 1
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert out["items"][0]["pin"] == locked and out["items"][0]["status"] == "applied"
    assert "(PR 21, first push)" in (Path(out["tree"]) / "docs/docker.md").read_text()
    assert out["drift"] == [{"item": f"PR #21 of {w.UPSTREAM_URL}", "locked": locked, "remote": rebased}]
    assert f"moved {locked[:12]} -> {rebased[:12]}" in res.stderr


def test_garbage_collected_pr_head_names_the_item_and_what_to_do(
    tmp_path: Path, world: w.World, world_env: dict[str, str]
) -> None:
    gone = _push_pr(world, 22, w.BASE, "PR 22, first push")
    recipe = write_recipe(tmp_path / "my recipes", "gc", UP + "stack:\n  - pr: 22\n")
    assert run_harness("lock", recipe).returncode == 0
    _push_pr(world, 22, world.shas["master"], "PR 22, rebased")
    # the remote's gc: the old head and its tree are unreachable loose objects, pruned
    w.git(world.upstream, "prune", "--expire=now")
    assert subprocess.run(["git", "-C", str(world.upstream), "cat-file", "-e", gone]).returncode != 0

    res = run_harness("prepare", recipe)
    assert res.returncode == 1, res.stderr
    assert "Traceback" not in res.stderr
    assert f"PR #22 of {w.UPSTREAM_URL}: commit {gone} cannot be fetched from {w.UPSTREAM_URL}" in res.stderr
    assert world.shas["master"] not in res.stderr  # the base is fine; only the PR head is named
    assert f"`harness lock --update {shlex.quote(str(recipe))}`" in res.stderr  # a path with a space, quoted

    # what the advice says works: the new head is pinned and builds
    assert run_harness("lock", "--update", recipe).returncode == 0
    res = run_harness("prepare", recipe, "--json")
    assert res.returncode == 0, res.stderr
    assert "(PR 22, rebased)" in (Path(json.loads(res.stdout)["tree"]) / "docs/docker.md").read_text()
    assert os.environ["HARNESS_CACHE"] in json.loads(res.stdout)["tree"]


def test_gone_pr_head_says_where_the_ref_points_now_with_gits_reason(
    tmp_path: Path, world: w.World, world_env: dict[str, str]
) -> None:
    """A failed fetch is diagnosed from what git says (issue 20): the ref moved, and git's own reason is shown."""
    _push_pr(world, 23, w.BASE, "PR 23, first push")
    recipe = write_recipe(tmp_path, "moved", UP + "stack:\n  - pr: 23\n")
    assert run_harness("lock", recipe).returncode == 0
    now = _push_pr(world, 23, world.shas["master"], "PR 23, rebased")
    w.git(world.upstream, "prune", "--expire=now")
    res = run_harness("prepare", recipe)
    assert res.returncode == 1, res.stderr
    assert f"refs/pull/23/head now points at {now[:12]}" in res.stderr
    assert "git: " in res.stderr and "not our ref" in res.stderr  # git's own words, not a guess


def test_a_sha_the_recipe_pins_itself_that_the_repository_lacks_is_bad_input(
    tmp_path: Path, world_env: dict[str, str]
) -> None:
    """issue 23 #6: a typo'd full SHA in the recipe is exit 2 naming it; `lock --update` cannot help and is not advised."""
    typo = "0c1e57098bba43ac29e6e3b677cdceebdd22334e"
    recipe = write_recipe(tmp_path, "typo", f"upstream:\n  repo: {w.UPSTREAM_URL}\n  ref: {typo}\n")
    res = run_harness("prepare", recipe)
    assert res.returncode == 2, res.stderr
    assert f"the recipe pins {typo}, which {w.UPSTREAM_URL} does not have" in res.stderr
    assert "lock --update` cannot help" in res.stderr
    assert "Traceback" not in res.stderr


def test_an_unreachable_remote_is_named_with_gits_reason(tmp_path: Path, world_env: dict[str, str]) -> None:
    recipe = write_recipe(tmp_path, "away", f"upstream:\n  repo: {w.UPSTREAM_URL}\n  ref: {w.BASE}\n")
    env = {**os.environ, **world_env}
    n = int(env["GIT_CONFIG_COUNT"])
    for k in range(n):  # the redirect now points at a directory that is not a repository
        if env[f"GIT_CONFIG_VALUE_{k}"] == w.UPSTREAM_URL:
            env[f"GIT_CONFIG_KEY_{k}"] = f"url.file://{tmp_path}/nowhere.insteadOf"
    res = run_harness("prepare", recipe, env=env)
    assert res.returncode == 1, res.stderr
    assert f"cannot fetch from {w.UPSTREAM_URL}" in res.stderr and "git: " in res.stderr
    assert "force-pushed" not in res.stderr


def test_failure_tails_put_gits_reason_first_and_cap_lines() -> None:
    from harness.source import git

    tail = git.failure_tail("fatal: the reason\n", b"x" * 500_000 + b"\n" + b"line\n" * 100)
    lines = tail.splitlines()
    assert lines[0] == "fatal: the reason"
    assert len(lines) <= git.TAIL_LINES + 2 and len(tail) < 20 * (git.TAIL_LINE_BYTES + 60)
