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
