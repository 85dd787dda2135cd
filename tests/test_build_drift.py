"""`harness build` reports a PR head that moved since locking, and records it in the manifest."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests import world as w
from tests.conftest import run_harness, write_recipe

pytestmark = pytest.mark.slow


def test_build_reports_force_push_drift_and_records_it(
    tmp_path: Path, world: w.World, world_env: dict[str, str], llama_build: Path
) -> None:
    # llama_build: the session's build warmed ccache, so this build of the same sources is mostly cache hits
    world.branch_from(world.shas["master"])
    w.edit(world.work, "docs/docker.md", "# Docker\n", "# Docker\n\n(PR 23, first push)\n")
    locked = world.commit("docker docs: PR 23")
    world.set_ref(world.upstream, "refs/pull/23/head", locked)
    recipe = write_recipe(tmp_path, "drift", f"upstream:\n  repo: {w.UPSTREAM_URL}\n  ref: master\nstack:\n  - pr: 23\n"
                          "build:\n  targets: [llama-gguf-split]\n")
    assert run_harness("lock", recipe).returncode == 0
    w.edit(world.work, "docs/docker.md", "(PR 23, first push)", "(PR 23, force-pushed)")
    moved = world.commit("docker docs: PR 23, amended")
    world.set_ref(world.upstream, "refs/pull/23/head", moved)

    res = run_harness("build", recipe, "--builds-dir", tmp_path / "builds", "--json")
    assert res.returncode == 0, res.stderr[-3000:]
    assert f"PR #23 of {w.UPSTREAM_URL}: moved {locked[:12]} -> {moved[:12]} since locking" in res.stderr
    manifest = json.loads((tmp_path / "builds" / "drift" / "cpu" / "manifest.json").read_text())
    assert manifest["drift"] == [{"item": f"PR #23 of {w.UPSTREAM_URL}", "locked": locked, "remote": moved}]
    assert manifest["stack"][0]["pin"] == locked
