"""Locks against the local upstream: full SHAs, kept pins, --update moves, --check."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tests import world as w
from tests.conftest import run_harness, write_recipe

UP_PINNED = f"upstream:\n  repo: {w.UPSTREAM_URL}\n  ref: {w.BASE}\n"

RECIPE = f"""
upstream:
  repo: {w.UPSTREAM_URL}
  ref: master
stack:
  - pr: 1
  - branch: feature/turboquant-kv-cache
    repo: {w.FORK_URL}
  - pr: 7
    repo: {w.FORK_URL}
  - patch: patches/local.patch
"""


def _recipe(tmp_path: Path) -> Path:
    (tmp_path / "patches").mkdir(parents=True, exist_ok=True)
    (tmp_path / "patches" / "local.patch").write_text(
        "--- a/CONTRIBUTING.md\n+++ b/CONTRIBUTING.md\n@@ -1,2 +1,4 @@\n # Contributors\n+\n+(local patch)\n \n"
    )
    return write_recipe(tmp_path, "r", RECIPE)


def test_lock_pins_everything(tmp_path: Path, world: w.World, world_env: dict[str, str]) -> None:
    recipe = _recipe(tmp_path)
    res = run_harness("lock", recipe, "--json")
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["ok"] is True and json.loads(res.stdout)["changed"] is True
    lock = json.loads(recipe.with_suffix(".lock").read_text())
    assert lock["schema"] == 1
    assert lock["upstream"] == {"repo": w.UPSTREAM_URL, "ref": "master", "sha": world.shas["master"]}
    pr1, branch, pr7, patch = lock["stack"]
    assert pr1 == {"kind": "pr", "ref": "1", "repo": w.UPSTREAM_URL, "fetch_ref": "refs/pull/1/head", "sha": world.shas["pr1"]}
    assert branch["sha"] == world.shas["turbo"] and branch["repo"] == w.FORK_URL
    assert pr7["sha"] == world.shas["pr7"] and pr7["fetch_ref"] == "refs/pull/7/head"
    assert len(patch["sha256"]) == 64
    assert run_harness("lock", recipe, "--check").returncode == 0


def test_pins_kept_until_update(tmp_path: Path, world: w.World, world_env: dict[str, str]) -> None:
    recipe = write_recipe(tmp_path, "r", f"upstream:\n  repo: {w.UPSTREAM_URL}\n  ref: master\nstack:\n  - pr: 11\n")
    world.set_ref(world.upstream, "refs/pull/11/head", world.shas["pr1"])
    assert run_harness("lock", recipe).returncode == 0
    world.set_ref(world.upstream, "refs/pull/11/head", world.shas["pr3"])  # force-push
    res = run_harness("lock", recipe)
    assert res.returncode == 0
    assert json.loads(recipe.with_suffix(".lock").read_text())["stack"][0]["sha"] == world.shas["pr1"]
    res = run_harness("lock", recipe, "--update")
    assert res.returncode == 0, res.stderr
    assert f"PR #11 of {w.UPSTREAM_URL}: {world.shas['pr1'][:12]} -> {world.shas['pr3'][:12]}" in res.stdout
    assert json.loads(recipe.with_suffix(".lock").read_text())["stack"][0]["sha"] == world.shas["pr3"]


def test_check_fails_when_recipe_changes(tmp_path: Path, world_env: dict[str, str]) -> None:
    recipe = _recipe(tmp_path)
    assert run_harness("lock", recipe).returncode == 0
    (tmp_path / "patches" / "local.patch").write_text((tmp_path / "patches" / "local.patch").read_text() + "+more\n")
    res = run_harness("lock", recipe, "--check")
    assert res.returncode == 1
    assert "patch patches/local.patch: sha256 is" in res.stderr
    assert f"next: run `harness lock {recipe}` to bring the lock in line with the recipe" in res.stderr
    recipe.write_text(recipe.read_text().replace("  - pr: 1\n", ""))
    res = run_harness("lock", recipe, "--check", "--json")
    assert res.returncode == 1
    out = json.loads(res.stdout)
    assert out["ok"] is False and out["problems"][0].startswith("stack: recipe has")
    assert out["next"].startswith(f"run `harness lock {recipe}`")
    assert run_harness("lock", recipe).returncode == 0  # the step it names brings them in line
    assert run_harness("lock", recipe, "--check").returncode == 0


def test_unknown_pr_is_a_clear_error(tmp_path: Path, world_env: dict[str, str]) -> None:
    recipe = write_recipe(tmp_path, "r", f"upstream:\n  repo: {w.UPSTREAM_URL}\nstack:\n  - pr: 999\n")
    res = run_harness("lock", recipe)
    assert res.returncode == 2  # bad input: the recipe names a PR the repository does not have
    assert f"PR #999 of {w.UPSTREAM_URL}: refs/pull/999/head not found" in res.stderr


def test_unreachable_remote_is_a_clear_error(tmp_path: Path) -> None:
    recipe = write_recipe(tmp_path, "r", "upstream:\n  repo: file:///nonexistent/llama.cpp\n")
    res = run_harness("lock", recipe)
    assert res.returncode == 1
    assert f"{recipe}: upstream (ref: master): cannot reach file:///nonexistent/llama.cpp:\n" in res.stderr
    assert "\n  git: fatal: '/nonexistent/llama.cpp' does not appear to be a git repository\n" in res.stderr
    assert not [line for line in res.stderr.splitlines() if line.startswith("fatal:")]  # git's reason, indented
    assert "check the network, the URL" in res.stderr and "Traceback" not in res.stderr
    # a pinned base is fetched before its lock is written (prepare): the same screen, naming the item
    recipe.write_text(f"upstream:\n  repo: file:///nonexistent/llama.cpp\n  ref: {w.BASE}\n")
    res = run_harness("prepare", recipe)
    assert res.returncode == 1, res.stderr
    assert f"{recipe}: upstream (ref: {w.BASE}): cannot fetch from file:///nonexistent/llama.cpp:\n  git: " in res.stderr
    assert not [line for line in res.stderr.splitlines() if line.startswith("fatal:")]
    assert not recipe.with_suffix(".lock").exists()


@pytest.mark.parametrize("where", ["commit", "upstream"])
def test_a_sha_the_repository_lacks_is_refused_before_the_lock_is_written(
    tmp_path: Path, world_env: dict[str, str], where: str
) -> None:
    missing = "deadbeef" * 5
    body = (f"upstream:\n  repo: {w.UPSTREAM_URL}\n  ref: master\nstack:\n  - commit: {missing}\n" if where == "commit"
            else f"upstream:\n  repo: {w.UPSTREAM_URL}\n  ref: {missing}\n")
    recipe = write_recipe(tmp_path, "r", body)
    res = run_harness("prepare", recipe)
    assert res.returncode == 2, res.stderr
    named = f"stack item 1 (commit: {missing})" if where == "commit" else f"upstream (ref: {missing})"
    assert f"{named}: the recipe pins {missing}, which {w.UPSTREAM_URL} does not have" in res.stderr
    assert not recipe.with_suffix(".lock").exists()


def test_a_retired_mark_is_re_verified_against_the_base(tmp_path: Path, world_env: dict[str, str]) -> None:
    """A hand-set ``retired`` on PR 1 (not in the base) fails --check and --frozen naming the item and the
    next step; `harness lock` drops it.  The mark on PR 3 (merged by the base) holds and stays."""
    recipe = write_recipe(tmp_path, "r", f"upstream:\n  repo: {w.UPSTREAM_URL}\n  ref: master\nstack:\n  - pr: 3\n  - pr: 1\n")
    assert run_harness("lock", recipe).returncode == 0
    path = recipe.with_suffix(".lock")
    data = json.loads(path.read_text())
    data["stack"][0]["retired"] = "already merged upstream (nightly)"
    path.write_text(json.dumps(data))
    assert run_harness("lock", recipe, "--check").returncode == 0  # PR 3's mark holds
    data["stack"][1]["retired"] = "set by hand"
    path.write_text(json.dumps(data))
    res = run_harness("lock", recipe, "--check")
    assert res.returncode == 1
    assert "stack item 2 (pr: 1) is marked retired (set by hand), but the base" in res.stderr
    assert "stack item 1 (pr: 3)" not in res.stderr and f"next: run `harness lock {recipe}`" in res.stderr
    res = run_harness("prepare", recipe, "--frozen")
    assert res.returncode == 1
    assert f"{path}: stack item 2 (pr: 1) is marked retired (set by hand)" in res.stderr
    assert f"run `harness lock {recipe}`: it re-verifies every retired mark" in res.stderr
    res = run_harness("lock", recipe)
    assert res.returncode == 0, res.stderr
    assert "stack item 2 (pr: 1) is marked retired (set by hand)" in res.stdout and "mark dropped" in res.stdout
    pins = json.loads(path.read_text())["stack"]
    assert "retired" not in pins[1] and pins[0]["retired"] == "already merged upstream (nightly)"
    assert run_harness("lock", recipe, "--check").returncode == 0
    assert run_harness("prepare", recipe, "--frozen").returncode == 0


def test_model_revision_is_locked(tmp_path: Path, world_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    sha = "3c2f" + "0" * 36
    recipe = write_recipe(tmp_path, "m", UP_PINNED + f"model:\n  source: google/gemma-4-26b-a4b\n  revision: {sha}\n")
    assert run_harness("lock", recipe).returncode == 0
    lock = json.loads(recipe.with_suffix(".lock").read_text())
    assert lock["model"] == {"source": "google/gemma-4-26b-a4b", "revision": sha}
    recipe.write_text(recipe.read_text().replace("gemma-4-26b-a4b", "gemma-4-e4b"))
    res = run_harness("lock", recipe, "--check")
    assert res.returncode == 1 and "model: recipe has google/gemma-4-e4b" in res.stderr
    # a branch name cannot be resolved offline: a warning, no pin, no failure
    recipe.write_text(recipe.read_text().replace(sha, "main"))
    res = run_harness("lock", recipe)
    assert res.returncode == 0 and "HF_HUB_OFFLINE is set" in res.stderr


BAD_LOCKS = Path(__file__).parent / "data" / "bad_locks"
BAD_LOCK_CASES: dict[str, list[str]] = yaml.safe_load((BAD_LOCKS / "cases.yaml").read_text())


@pytest.mark.parametrize("name", sorted(BAD_LOCK_CASES))
def test_malformed_lock_is_bad_input_naming_the_key(tmp_path: Path, name: str) -> None:
    recipe = write_recipe(tmp_path, "r", UP_PINNED)
    lock = recipe.with_suffix(".lock")
    lock.write_bytes((BAD_LOCKS / name).read_bytes())
    for args in (("lock", recipe, "--check"), ("prepare", recipe, "--frozen"), ("lock", recipe)):
        res = run_harness(*args)
        assert res.returncode == 2, (args, res.stderr)
        assert "Traceback" not in res.stderr
        for expected in BAD_LOCK_CASES[name]:
            assert expected in res.stderr, (args, res.stderr)
        assert str(lock) in res.stderr
    assert lock.read_bytes() == (BAD_LOCKS / name).read_bytes()  # never overwritten behind the user's back


def test_urls_are_normalized_once_at_load(tmp_path: Path, world: w.World, world_env: dict[str, str]) -> None:
    spelled = "HTTPS://GitHub.com/ggml-org/llama.cpp.git/"
    recipe = write_recipe(tmp_path, "r", f"upstream:\n  repo: {spelled}\n  ref: master\nstack:\n  - pr: 1\n    repo: {spelled}\n")
    res = run_harness("lock", recipe)
    assert res.returncode == 0, res.stderr
    lock = json.loads(recipe.with_suffix(".lock").read_text())
    assert lock["upstream"]["repo"] == lock["stack"][0]["repo"] == w.UPSTREAM_URL
    assert run_harness("lock", recipe, "--check").returncode == 0


@pytest.mark.parametrize("name", ["no-diff.patch", "binary-without-data.patch", "binary-only-without-data.diff"])
def test_a_file_git_cannot_apply_is_refused_before_it_is_pinned(tmp_path: Path, name: str) -> None:
    """The lock reads the patch it pins and checks it as the stack would (patchset.checked_parts),
    with no git world: the upstream is pinned to a SHA, so nothing is asked of a remote."""
    corpus = Path(__file__).parent / "data" / "patches"
    case = yaml.safe_load((corpus / "cases.yaml").read_text())[name]
    (tmp_path / "patches").mkdir()
    (tmp_path / "patches" / name).write_bytes((corpus / name).read_bytes())
    recipe = write_recipe(tmp_path, "r", f"upstream:\n  repo: file:///nonexistent/llama.cpp\n  ref: {w.BASE}\n"
                                         f"stack:\n  - patch: patches/{name}\n")  # fmt: skip
    res = run_harness("lock", recipe)
    assert res.returncode == case["exit"] == 2, res.stderr
    assert case["message"] in " ".join(res.stderr.split())
    assert not recipe.with_suffix(".lock").exists()
