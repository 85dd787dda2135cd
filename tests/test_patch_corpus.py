"""Real-world patch files (tests/data/patches/, made by make_corpus.py) through `harness prepare`.

Each file is the only item of a recipe on the test world's master; cases.yaml says the status,
exit code and message it must give.  The cases share one cache and one recipe path, the way a
user edits one recipe (the tree moves from stack to stack); the cache starts cold, so the
older-base case meets a depth-1 mirror.  The same answer on a fresh and on a warm cache is
checked separately for the case whose answer depends on history.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests import world as w
from tests.conftest import run_harness, write_recipe

CORPUS = Path(__file__).parent / "data" / "patches"
CASES: dict[str, dict[str, Any]] = yaml.safe_load((CORPUS / "cases.yaml").read_text())
UP = f"upstream:\n  repo: {w.UPSTREAM_URL}\n  ref: master\n"


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True).stdout


@pytest.fixture(scope="module")
def corpus_env(tmp_path_factory: pytest.TempPathFactory, world: w.World) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("corpus")
    return {"repo": root / "repo", "env": {**world.env, "HARNESS_CACHE": str(root / "cache")}}


def _prepare_case(repo: Path, env: dict[str, str], name: str, kind: str) -> subprocess.CompletedProcess[str]:
    patches = repo / "patches"
    shutil.rmtree(patches, ignore_errors=True)
    patches.mkdir(parents=True)
    src = CORPUS / name
    if src.is_dir():
        shutil.copytree(src, patches / name)
    else:
        shutil.copyfile(src, patches / name)
    recipe = write_recipe(repo, "corpus", UP + f"stack:\n  - {kind}: patches/{name}\n")
    locked = run_harness("lock", recipe, env=env)
    if locked.returncode == 2:  # what git cannot apply at all is refused before it is pinned
        assert not recipe.with_suffix(".lock").exists() or "patches/" + name not in recipe.with_suffix(".lock").read_text()
        return locked
    assert locked.returncode == 0, locked.stderr
    return run_harness("prepare", recipe, "--json", env=env)


@pytest.mark.parametrize("name", list(CASES))
def test_patch_corpus(name: str, corpus_env: dict[str, Any], world: w.World) -> None:
    case = CASES[name]
    res = _prepare_case(corpus_env["repo"], corpus_env["env"], name, case["item"])
    assert "Traceback" not in res.stderr
    assert res.returncode == case["exit"], res.stderr
    if case["exit"] != 0:
        assert case["message"] in " ".join(res.stderr.split()), res.stderr
        return
    out = json.loads(res.stdout)
    item = out["items"][0]
    assert item["status"] == case["status"], item
    assert case["message"] in item["detail"], item
    tree = Path(out["tree"])
    assert _git(tree, "rev-list", "--count", f"{world.shas['master']}..HEAD").strip() == str(case["commits"])
    assert _git(tree, "status", "--porcelain") == ""
    for rel, want in case.get("files", {}).items():
        path = tree / rel
        if want == "present":
            assert path.is_file(), rel
        elif want == "absent":
            assert not path.exists(), rel
        elif want == "executable":
            assert path.stat().st_mode & 0o111, rel
            assert _git(tree, "ls-files", "-s", rel).startswith("100755 ")
        else:
            assert hashlib.sha256(path.read_bytes()).hexdigest() == want, rel
    for rel, hexbytes in case.get("contains", {}).items():
        assert bytes.fromhex(hexbytes) in (tree / rel).read_bytes(), rel
    if case.get("commits", 1) > 1:  # each mail / file its own commit, with its own subject
        subjects = _git(tree, "log", "--format=%s", f"{world.shas['master']}..HEAD").splitlines()
        assert len(set(subjects)) == case["commits"], subjects


def test_older_base_gives_the_same_answer_on_a_fresh_and_a_warm_cache(
    tmp_path: Path, world: w.World, world_env: dict[str, str]
) -> None:
    """A patch made on an older upstream commit needs the history its pre-image blobs are in
    (`git am -3`); it gets it on a fresh (depth-1) cache exactly as on a cache another recipe's
    PR already deepened, and the patched commit is the same."""
    fresh = {**world_env, "HARNESS_CACHE": str(tmp_path / "fresh")}
    res = _prepare_case(tmp_path / "a", fresh, "older-base.patch", "patch")
    assert res.returncode == 0, res.stderr
    cold = json.loads(res.stdout)

    warm = {**world_env, "HARNESS_CACHE": str(tmp_path / "warm")}
    other = write_recipe(tmp_path / "b", "other", UP + "stack:\n  - pr: 1\n")
    assert run_harness("prepare", other, env=warm).returncode == 0  # PR 1's merge base deepened the mirror
    res = _prepare_case(tmp_path / "a", warm, "older-base.patch", "patch")
    assert res.returncode == 0, res.stderr
    hot = json.loads(res.stdout)

    assert cold["items"][0]["status"] == hot["items"][0]["status"] == "applied"
    assert cold["commit"] == hot["commit"]
    assert "merged 3-way" in cold["items"][0]["detail"] and "merged 3-way" in hot["items"][0]["detail"]
    # what the history cost: the fresh run fetched the tree once plus the deepening; the warm one nothing
    assert hot["fetched_bytes"] == 0
    print(f"older base: fresh cache fetched {cold['fetched_bytes']} bytes (tree + history)")
