"""The patch stack on the real llama.cpp tree: applied, already-merged, conflict, drift, determinism."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests import world as w
from tests.conftest import REPO, run_harness, write_recipe

UP = f"upstream:\n  repo: {w.UPSTREAM_URL}\n  ref: master\n"
LOCAL_PATCH = "--- a/CONTRIBUTING.md\n+++ b/CONTRIBUTING.md\n@@ -1,2 +1,4 @@\n # Contributors\n+\n+(local patch)\n \n"


def _prepare(recipe: Path, *extra: str, cache: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    if cache is not None:
        env["HARNESS_CACHE"] = str(cache)
    return run_harness("prepare", recipe, "--json", *extra, env=env)


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True).stdout


def test_clean_stack_gives_the_same_commit_everywhere(tmp_path: Path, world: w.World, world_env: dict[str, str]) -> None:
    (tmp_path / "patches").mkdir()
    (tmp_path / "patches" / "local.patch").write_text(LOCAL_PATCH)
    recipe = write_recipe(
        tmp_path,
        "full",
        UP
        + f"stack:\n  - pr: 1\n  - branch: feature/turboquant-kv-cache\n    repo: {w.FORK_URL}\n"
        + f"  - pr: 7\n    repo: {w.FORK_URL}\n  - patch: patches/local.patch\n",
    )
    first = _prepare(recipe, cache=tmp_path / "cache-a")
    assert first.returncode == 0, first.stderr
    out = json.loads(first.stdout)
    assert [(i["kind"], i["ref"], i["status"]) for i in out["items"]] == [
        ("pr", "1", "applied"),
        ("branch", "feature/turboquant-kv-cache", "applied"),
        ("pr", "7", "applied"),
        ("patch", "patches/local.patch", "applied"),
    ]
    tree = Path(out["tree"])
    assert "(PR 1: patched by the world fixture)" in (tree / "tools/quantize/quantize.cpp").read_text()
    assert (tree / "ggml/turboquant-notes.md").exists()
    assert "(fork PR 7: mtp. prefix)" in (tree / "docs/build.md").read_text()
    assert "(local patch)" in (tree / "CONTRIBUTING.md").read_text()
    assert "(upstream title)" in (tree / "README.md").read_text()
    assert _git(tree, "rev-parse", "HEAD").strip() == out["commit"]
    assert _git(tree, "status", "--porcelain") == ""
    # the commits carry the fixed identity and the base commit's date
    log = _git(tree, "log", "-4", "--format=%an <%ae> %ct %s").splitlines()
    base_time = _git(world.upstream, "show", "-s", "--format=%ct", world.shas["master"]).strip()
    assert all(line.startswith(f"llama-harness <harness@llama-harness.invalid> {base_time} ") for line in log)

    second = _prepare(recipe, cache=tmp_path / "cache-b")
    assert second.returncode == 0, second.stderr
    assert json.loads(second.stdout)["commit"] == out["commit"]

    again = _prepare(recipe, cache=tmp_path / "cache-a")
    assert json.loads(again.stdout)["cached"] is True
    assert json.loads(again.stdout)["commit"] == out["commit"]


# a stack state file this harness cannot read: written before states had a schema, by a newer harness,
# by another tool, cut short, or not one result per item.  It is a cache: the stack is applied again.
STATE_EDITS = {
    "no schema (older harness)": lambda s: json.dumps({k: v for k, v in s.items() if k != "schema"}),
    "newer schema": lambda s: json.dumps({**s, "schema": 2, "items": [{**i, "how": "new"} for i in s["items"]]}),
    "foreign": lambda s: json.dumps({"lockfileVersion": 3, "packages": {}}),
    "truncated": lambda s: json.dumps(s)[:40],
    "one result short": lambda s: json.dumps({**s, "items": s["items"][:-1]}),
}


def test_an_unreadable_stack_state_is_applied_again(tmp_path: Path, world_env: dict[str, str]) -> None:
    (tmp_path / "patches").mkdir()
    (tmp_path / "patches" / "local.patch").write_text(LOCAL_PATCH)
    recipe = write_recipe(tmp_path, "state", UP + "stack:\n  - pr: 1\n  - patch: patches/local.patch\n")
    first = _prepare(recipe)
    assert first.returncode == 0, first.stderr
    out = json.loads(first.stdout)
    [state_file] = [p for p in (Path(out["tree"]).parent / "state").glob("*.json") if p.name != "conflict.json"]
    good = json.loads(state_file.read_text())
    assert good["schema"] == 1 and [i["status"] for i in good["items"]] == ["applied", "applied"]
    for name, edit in STATE_EDITS.items():
        state_file.write_text(edit(good))
        res = _prepare(recipe)
        assert res.returncode == 0 and "Traceback" not in res.stderr, (name, res.stderr)
        again = json.loads(res.stdout)
        assert again["cached"] is False, name
        assert "applying the stack again" in res.stderr, (name, res.stderr)
        assert (again["commit"], again["items"]) == (out["commit"], out["items"]), name
        assert json.loads(state_file.read_text()) == good, name  # written again, in this harness's schema
    assert json.loads(_prepare(recipe).stdout)["cached"] is True


def test_already_merged_items_are_skipped(tmp_path: Path, world: w.World, world_env: dict[str, str]) -> None:
    (tmp_path / "patches").mkdir()
    (tmp_path / "patches" / "upstream-title.patch").write_text(
        "--- a/README.md\n+++ b/README.md\n@@ -1,2 +1,2 @@\n-# llama.cpp\n+# llama.cpp (upstream title)\n \n"
    )
    recipe = write_recipe(
        tmp_path, "merged", UP + "stack:\n  - pr: 3\n  - pr: 4\n  - patch: patches/upstream-title.patch\n  - pr: 1\n"
    )
    res = _prepare(recipe)
    assert res.returncode == 0, res.stderr
    items = json.loads(res.stdout)["items"]
    assert [i["status"] for i in items] == ["already-merged", "already-merged", "already-merged", "applied"]
    assert "already part of the tree" in items[0]["detail"]
    assert "upstream already has its changes" in items[1]["detail"] or "same change" in items[1]["detail"]
    assert "applies in reverse" in items[2]["detail"]
    tree = Path(json.loads(res.stdout)["tree"])
    assert _git(tree, "rev-list", "--count", f"{world.shas['master']}..HEAD").strip() == "1"


def test_squash_merged_pr_detected_by_patch_id(tmp_path: Path, world: w.World, world_env: dict[str, str]) -> None:
    # upstream squash-merged PR 4 and then edited the same lines: merging the PR conflicts,
    # but its patch-id matches the squash commit, so it is already merged.
    world.branch_from(world.shas["master"])
    w.edit(world.work, "tools/imatrix/README.md", "(PR 4 note)", "(PR 4 note, reworded upstream)")
    later = world.commit("imatrix docs: reword")
    world.set_ref(world.upstream, "refs/heads/squashed-then-edited", later)
    recipe = write_recipe(
        tmp_path, "squash", f"upstream:\n  repo: {w.UPSTREAM_URL}\n  ref: squashed-then-edited\nstack:\n  - pr: 4\n"
    )
    res = _prepare(recipe)
    assert res.returncode == 0, res.stderr
    item = json.loads(res.stdout)["items"][0]
    assert item["status"] == "already-merged"
    assert item["detail"].startswith(f"same change as upstream commit {world.shas['squash4'][:12]}")


def test_conflict_report_then_export(tmp_path: Path, world: w.World, world_env: dict[str, str]) -> None:
    recipe = write_recipe(tmp_path, "conf", UP + "stack:\n  - pr: 1\n  # the PR that conflicts\n  - pr: 2\n    note: retitle\n  - pr: 3\n")
    res = run_harness("prepare", recipe)
    assert res.returncode == 1
    err = res.stderr
    assert f"PR #2 of {w.UPSTREAM_URL} does not apply (stack item 2 (pr: 2), onto " in err
    assert "1 file(s) in conflict, 1 hunk(s)" in err
    assert "  README.md" in err
    assert "lines 1-5: upstream + item 1 1 line(s), PR #2 1 line(s)" in err  # the tree PR #2 met
    assert "- # llama.cpp (upstream title)" in err and "+ # llama.cpp (PR 2 title)" in err
    assert "harness patches export" in err
    js = json.loads(_prepare(recipe).stdout)
    assert js["ok"] is False and js["error"]["kind"] == "conflict" and js["error"]["exit_code"] == 1
    conflict = js["error"]["conflict"]
    assert conflict["files"][0]["path"] == "README.md"
    work = Path(conflict["worktree"])
    assert "<<<<<<<" in (work / "README.md").read_text()

    # resolve by hand, export as a patch: recipe and lock now use it, and prepare passes
    text = (work / "README.md").read_text().splitlines(keepends=True)
    start = text.index(next(t for t in text if t.startswith("<<<<<<<")))
    end = text.index(next(t for t in text if t.startswith(">>>>>>>")))
    text[start : end + 1] = ["# llama.cpp (upstream title, PR 2 resolved)\n"]
    (work / "README.md").write_text("".join(text))
    res = run_harness("patches", "export", recipe, "--json")
    assert res.returncode == 0, res.stderr
    patch = Path(json.loads(res.stdout)["patch"])
    assert patch.exists() and "PR 2 resolved" in patch.read_text()
    body = recipe.read_text()
    assert "  - pr: 1\n  # the PR that conflicts\n  - patch: patches/conf-02-pr-2.patch  # was PR #2" in body
    assert body.endswith("  - pr: 3\n")
    assert run_harness("lock", recipe, "--check").returncode == 0
    res = _prepare(recipe)
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert [i["status"] for i in out["items"]] == ["applied", "applied", "already-merged"]
    assert "PR 2 resolved" in (Path(out["tree"]) / "README.md").read_text()


def test_conflicting_patch_names_file_and_hunk(tmp_path: Path, world_env: dict[str, str]) -> None:
    (tmp_path / "patches").mkdir()
    (tmp_path / "patches" / "rotten.patch").write_text(
        "--- a/README.md\n+++ b/README.md\n@@ -1,2 +1,2 @@\n-# llama.cpp (old title)\n+# llama.cpp (rotten)\n \n"
    )
    recipe = write_recipe(tmp_path, "rot", UP + "stack:\n  - patch: patches/rotten.patch\n")
    res = run_harness("prepare", recipe)
    assert res.returncode == 1
    assert "patch patches/rotten.patch does not apply" in res.stderr
    assert "README.md: hunk does not match" in res.stderr and "hunk at line 1" in res.stderr


def test_a_p0_diff_is_a_path_problem_not_a_conflict(tmp_path: Path, world_env: dict[str, str]) -> None:
    """issue 23 #7 (a user's `diff -u` made inside the tree): git apply -p1 looks one directory too deep."""
    (tmp_path / "patches").mkdir()
    (tmp_path / "patches" / "p0.patch").write_text(
        "--- tools/quantize/README.md\n+++ tools/quantize/README.md\n@@ -1,2 +1,3 @@\n # quantize\n+(p0)\n \n"
    )
    recipe = write_recipe(tmp_path, "pzero", UP + "stack:\n  - patch: patches/p0.patch\n")
    res = run_harness("prepare", recipe)
    assert res.returncode == 2, res.stderr
    assert "made with -p0" in res.stderr and "tools/quantize/README.md" in res.stderr
    assert "does not apply" not in res.stderr


def test_dry_run_says_when_an_edited_patch_made_the_lock_stale(tmp_path: Path, world_env: dict[str, str]) -> None:
    """The plan shows the lock as it stands and why it is stale; --frozen fails as the real build would."""
    (tmp_path / "patches").mkdir()
    patch = tmp_path / "patches" / "mine.patch"
    patch.write_text("--- a/README.md\n+++ b/README.md\n@@ -1,2 +1,2 @@\n-# llama.cpp (old title)\n+# mine\n \n")
    recipe = write_recipe(tmp_path, "stale", UP + "stack:\n  - patch: patches/mine.patch\n")
    assert run_harness("lock", recipe).returncode == 0
    fresh = run_harness("build", recipe, "--dry-run", "--frozen")
    assert fresh.returncode == 0 and "stale:" not in fresh.stdout, fresh.stderr
    patch.write_text(patch.read_text().replace("+# mine", "+# mine, edited"))
    res = run_harness("build", recipe, "--dry-run", "--json")
    assert res.returncode == 0, res.stderr
    [plan] = json.loads(res.stdout)
    [problem] = plan["lock"]["stale"]
    assert problem.startswith("patch patches/mine.patch: sha256 is ")
    assert "stale:     patch patches/mine.patch" in run_harness("build", recipe, "--dry-run").stdout
    frozen = run_harness("build", recipe, "--dry-run", "--frozen")
    assert frozen.returncode == 2 and "lock disagrees with the recipe (and --frozen)" in frozen.stderr


def test_drift_is_reported_and_locked_sha_used(tmp_path: Path, world: w.World, world_env: dict[str, str]) -> None:
    world.set_ref(world.upstream, "refs/pull/12/head", world.shas["pr1"])
    recipe = write_recipe(tmp_path, "drift", UP + "stack:\n  - pr: 12\n")
    assert run_harness("lock", recipe).returncode == 0
    world.set_ref(world.upstream, "refs/pull/12/head", world.shas["pr3"])  # force-push
    res = _prepare(recipe)
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert out["drift"] == [{"item": f"PR #12 of {w.UPSTREAM_URL}", "locked": world.shas["pr1"], "remote": world.shas["pr3"]}]
    assert "moved" in res.stderr and "harness lock --update" in res.stderr
    assert out["items"][0]["pin"] == world.shas["pr1"]
    assert "(PR 1: patched" in (Path(out["tree"]) / "tools/quantize/quantize.cpp").read_text()


def test_concurrent_prepares_share_one_cache(tmp_path: Path, world_env: dict[str, str]) -> None:
    recipe = write_recipe(tmp_path, "conc", UP + "stack:\n  - pr: 1\n")
    assert run_harness("lock", recipe).returncode == 0
    cmd = [sys.executable, "-m", "harness", "prepare", str(recipe), "--json"]
    procs = [subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [r[1] for r in results]
    commits = {json.loads(out)["commit"] for out, _ in results}
    assert len(commits) == 1


def test_killed_fetch_leaves_a_usable_cache(tmp_path: Path, world_env: dict[str, str]) -> None:
    recipe = write_recipe(tmp_path, "kill", UP + "stack:\n  - pr: 1\n")
    assert run_harness("lock", recipe).returncode == 0
    cache = Path(os.environ["HARNESS_CACHE"])
    proc = subprocess.Popen(
        [sys.executable, "-m", "harness", "prepare", str(recipe)], cwd=REPO, start_new_session=True,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not list((cache / "mirrors").glob("*.git/objects/pack/*")):
        time.sleep(0.01)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    # and the leftovers a kill at the worst moment would leave
    for mirror in (cache / "mirrors").glob("*.git"):
        (mirror / "shallow.lock").write_text("")
        (mirror / "objects" / "pack" / "tmp_pack_deadbeef").write_text("partial")
    res = _prepare(recipe)
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["items"][0]["status"] == "applied"


def test_prepare_after_a_kill_that_left_an_empty_mirror(tmp_path: Path, world_env: dict[str, str]) -> None:
    """A run killed between creating a mirror and its first fetch leaves an empty partial clone.  Asking
    it for a commit must not start git's lazy fetch: from a shallow server (the sdist's llama.cpp) that
    fetch recurses without end in git 2.39 (CI saw a prepare hang for 30 minutes, 6,500 gits deep)."""
    recipe = write_recipe(tmp_path, "empty", UP + "stack:\n  - pr: 1\n")
    assert run_harness("lock", recipe).returncode == 0
    make_empty = ("from harness.source.mirror import Mirror\n"
                  f"with Mirror.for_url({w.UPSTREAM_URL!r}).locked(): pass\n")
    subprocess.run([sys.executable, "-c", make_empty], cwd=REPO, check=True)
    res = run_harness("prepare", recipe, "--json", timeout=300)
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["items"][0]["status"] == "applied"


def test_a_long_conflict_is_cut_with_a_count(tmp_path: Path, world: w.World, world_env: dict[str, str]) -> None:
    """Text shows 4 lines of each side and how many more; text and JSON number the item alike, as the recipe names it."""
    world.branch_from(w.BASE)
    readme = world.work / "README.md"
    rest = readme.read_text().splitlines(keepends=True)[7:]
    readme.write_text("".join(f"(PR 31 line {n})\n" for n in range(7)) + "".join(rest))
    world.push(world.upstream, world.commit("README: PR 31 rewrites the top"), "refs/pull/31/head")
    recipe = write_recipe(tmp_path, "long", UP + "stack:\n  - pr: 1\n  - pr: 31\n")
    res = run_harness("prepare", recipe)
    assert res.returncode == 1, res.stderr
    assert f"PR #31 of {w.UPSTREAM_URL} does not apply (stack item 2 (pr: 31), onto " in res.stderr
    assert "1 file(s) in conflict, 1 hunk(s)" in res.stderr
    assert "      - … 3 more lines" in res.stderr and "      + … 3 more lines" in res.stderr
    assert "(PR 31 line 3)" in res.stderr and "(PR 31 line 4)" not in res.stderr
    conflict = json.loads(_prepare(recipe).stdout)["error"]["conflict"]
    assert (conflict["position"], conflict["stack_item"]) == (2, "stack item 2 (pr: 31)")
    assert conflict["counts"] == {"files": 1, "hunks": 1}
    [hunk] = conflict["files"][0]["hunks"]
    assert (hunk["theirs_lines"], hunk["theirs_more"], hunk["theirs"][-1]) == (7, 0, "(PR 31 line 6)")
