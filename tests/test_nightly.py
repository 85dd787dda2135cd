"""Nightly against a moving upstream, on the session's real build (incremental, reused tree)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import session_build
from tests import world as w
from tests.conftest import REPO

pytestmark = pytest.mark.slow

RECIPE = f"""name: session
upstream:
  repo: {w.UPSTREAM_URL}
  ref: nightly-base
stack:
  - pr: 3
  - pr: 4
  - pr: 2
  - branch: nightly-feature
    repo: {w.FORK_URL}
  - patch: patches/quantize-print-harness.patch
build:
  backends: [cpu]
  targets: [{", ".join(session_build.TARGETS)}]
nightly:
  skip_conflicts: true
  smoke: [version, decode, quantize, serve]
"""


@pytest.fixture
def nightly_recipe(llama_build: Path, test_cache: Path, world: w.World) -> Iterator[dict[str, Path]]:
    """The session recipe, temporarily pointed at the moving world; restored (and rebuilt) after."""
    paths = session_build.layout(test_cache)
    saved = {p: p.read_bytes() for p in (paths["recipe"], paths["recipe"].with_suffix(".lock"), paths["patch"])}
    world.set_ref(world.upstream, "refs/heads/nightly-base", w.BASE)
    world.set_ref(world.fork, "refs/heads/nightly-feature", world.shas["turbo"])
    paths["recipe"].write_text(RECIPE)
    paths["recipe"].with_suffix(".lock").unlink()
    try:
        yield paths
    finally:
        for p, data in saved.items():
            p.write_bytes(data)
        session_build.ensure(test_cache)


def _harness(env: dict[str, str], *args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "harness", *map(str, args)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=3600)


def _env(world: w.World, paths: dict[str, Path]) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("GIT_CONFIG")}
    env = dict(base)
    env.update({k: v for k, v in world.env.items() if k.startswith("GIT_CONFIG")})
    env["HARNESS_CACHE"] = str(paths["cache"])
    return env


def test_nightly_tracks_upstream(nightly_recipe: dict[str, Path], world: w.World, smollm2_gguf: Path, tmp_path: Path) -> None:
    paths = nightly_recipe
    env = _env(world, paths)
    recipe, lock_path, builds_dir = paths["recipe"], paths["recipe"].with_suffix(".lock"), paths["builds"]
    assert _harness(env, "lock", recipe).returncode == 0
    old_lock = json.loads(lock_path.read_text())
    assert old_lock["upstream"]["sha"] == w.BASE

    # upstream moves on: merges PR 3, squash-merges PR 4, edits what PR 2 edits; the fork force-pushes
    world.set_ref(world.upstream, "refs/heads/nightly-base", world.shas["master"])
    world.branch_from(w.BASE)
    (world.work / "ggml" / "turboquant-notes.md").write_text("TurboQuant KV cache, rewritten history\n")
    subprocess.run(["git", "-C", str(world.work), "add", "ggml/turboquant-notes.md"], check=True)
    rewritten = world.commit("turboquant: notes (rewritten)")
    world.set_ref(world.fork, "refs/heads/nightly-feature", rewritten)

    report_dir = tmp_path / "report"
    res = _harness(env, "nightly", recipe, "--report", report_dir, "--builds-dir", builds_dir, "--smoke-model", smollm2_gguf, "--json")
    # PR 2 conflicts and skip_conflicts leaves it out: published, but degraded (exit 1)
    assert res.returncode == 1, res.stderr[-3000:]
    report = json.loads((report_dir / "report.json").read_text())
    entry = report["recipes"][0]
    assert entry["status"] == "degraded" and entry["adopted"] is True
    assert [m["item"] for m in entry["missing"]] == [f"PR #2 of {w.UPSTREAM_URL}"]
    assert (entry["old_base"], entry["new_base"]) == (w.BASE, world.shas["master"])
    status = {i["item"]: i for i in entry["items"]}
    pr = f"PR #{{}} of {w.UPSTREAM_URL}".format
    assert status[pr(3)]["status"] == "already-merged" and status[pr(3)]["retired"] is True
    assert status[pr(4)]["status"] == "already-merged" and status[pr(4)]["retired"] is True
    assert status[pr(2)]["status"] == "conflict" and "README.md" in status[pr(2)]["detail"]
    branch = status[f"branch nightly-feature of {w.FORK_URL}"]
    assert branch["status"] == "moved" and branch["moved"]["force_push"] is True
    assert "does not descend" in branch["moved"]["detail"]
    assert status["patch patches/quantize-print-harness.patch"]["status"] == "applied"
    assert entry["skipped_conflicts"] == ["2"]
    assert entry["smoke"]["quantize:cpu"]["ok"] and entry["smoke"]["serve:cpu"]["content"].strip()
    assert entry["smoke"]["version:cpu"]["ok"] and entry["smoke"]["decode:cpu"]["types"]["Q4_0"]["cpu"]["tokens"] == 4

    # the candidate lock was adopted: merged PRs retired, the conflict skipped, the force-push taken
    new_lock = json.loads(lock_path.read_text())
    assert new_lock["upstream"]["sha"] == world.shas["master"]
    items = {(i["kind"], i["ref"]): i for i in new_lock["stack"]}
    assert "already merged upstream" in items[("pr", "3")]["retired"]
    assert "already merged upstream" in items[("pr", "4")]["retired"]
    assert "conflicts with upstream" in items[("pr", "2")]["skipped"]
    assert items[("branch", "nightly-feature")]["sha"] == rewritten
    assert _harness(env, "lock", recipe, "--check").returncode == 0
    # and the published build is the one nightly built and tested
    manifest = json.loads((builds_dir / "session" / "cpu" / "manifest.json").read_text())
    assert manifest["identity"] == entry["builds"]["cpu"]["identity"]
    pointer = json.loads((builds_dir / "session" / "last-good.json").read_text())
    assert pointer["cpu"]["identity"] == manifest["identity"]
    # a user building now gets exactly that build, without rebuilding
    built = _harness(env, "build", recipe, "--builds-dir", builds_dir, "--json")
    assert built.returncode == 0 and json.loads(built.stdout)[0]["noop"] is True

    md = (report_dir / "report.md").read_text()
    assert "## session: DEGRADED" in md and "force-pushed" in md and "retired from the lock" in md
    assert f"- PR #2 of {w.UPSTREAM_URL}: conflicts in README.md" in md
    assert len((report_dir / "history.jsonl").read_text().splitlines()) == 1
    assert (report_dir / "history.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # a broken night: the patch no longer compiles. Nothing is adopted, the report says where.
    lock_before = lock_path.read_bytes()
    manifest_before = (builds_dir / "session" / "cpu" / "manifest.json").read_bytes()
    patch = paths["patch"]
    patch.write_text(patch.read_text().replace('tree)\\n\\n");', 'tree)\\n\\n") BROKEN;'))
    res = _harness(env, "nightly", recipe, "--report", report_dir, "--builds-dir", builds_dir, "--smoke-model", smollm2_gguf)
    assert res.returncode == 1
    entry = json.loads((report_dir / "report.json").read_text())["recipes"][0]
    assert entry["status"] == "failed" and entry["failed_step"] == "build:cpu" and entry["adopted"] is False
    assert "quantize.cpp" in entry["error"] and "error" in entry["error"]
    assert lock_path.read_bytes() == lock_before
    assert (builds_dir / "session" / "cpu" / "manifest.json").read_bytes() == manifest_before
    assert "## session: FAIL (failed at build:cpu)" in (report_dir / "report.md").read_text()
    assert len((report_dir / "history.jsonl").read_text().splitlines()) == 2
