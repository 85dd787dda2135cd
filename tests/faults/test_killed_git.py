"""A git killed at the worst moment, then the next run: it recovers with no manual step.

``bin/git`` is put first on PATH; for the chosen git command it runs the real git under
strace, which sends SIGKILL when git renames one of the chosen lock files into place (the
moment git commits an index, a HEAD, an ORIG_HEAD, a ref).  The first
run fails (exit 1, no traceback) and leaves git's lock file behind; the second run, with
the real git, must give the commit a clean run gives.

The repositories are small real ones made here (an upstream with a PR ref, a fork with a
branch, redirected from the GitHub URLs like the test world): what a kill leaves behind
does not depend on the size of the tree, and a small one keeps each case to seconds.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from harness.recipe.load import load_recipe
from harness.source import sdist_upstream as offline
from harness.source.mirror import Mirror
from harness.source.tree import Tree
from tests import world as w
from tests.conftest import run_harness, write_recipe

BIN = Path(__file__).resolve().parent / "bin"
RECIPE = (
    f"upstream:\n  repo: {w.UPSTREAM_URL}\n  ref: master\n"
    f"stack:\n  - pr: 1\n  - branch: feature/turboquant-kv-cache\n    repo: {w.FORK_URL}\n  - patch: patches/local.patch\n"
)
LOCAL_PATCH = "--- a/CONTRIBUTING.md\n+++ b/CONTRIBUTING.md\n@@ -1,2 +1,4 @@\n # Contributors\n+\n+(local patch)\n \n"


@dataclass
class Small:
    root: Path
    master: str
    env: dict[str, str]  # os.environ with the GitHub URLs redirected to the small repositories


def _small_world(root: Path) -> Small:
    """upstream.git: master (two commits) and refs/pull/1/head; fork.git: feature/turboquant-kv-cache."""
    work, upstream, fork = root / "work", root / "upstream.git", root / "fork.git"
    w.git(root, "init", "-q", "-b", "master", str(work))
    (work / "CONTRIBUTING.md").write_text("# Contributors\n\nThe people who made this.\n")
    (work / "README.md").write_text("# llama.cpp (small)\n\nA stand-in.\n")
    (work / "src.cpp").write_text("".join(f"int f{i}() {{ return {i}; }}\n" for i in range(40)))
    w.git(work, "add", "-A")
    w.git(work, "commit", "-qm", "base")
    w.edit(work, "README.md", "A stand-in.", "A stand-in, edited upstream.")
    w.git(work, "commit", "-qam", "upstream edit")
    master = w.git(work, "rev-parse", "HEAD")
    w.git(work, "checkout", "-q", "--detach", "HEAD~1")
    w.edit(work, "src.cpp", "return 7;", "return 7 + 0; /* PR 1 */")
    w.git(work, "commit", "-qam", "PR 1")
    pr1 = w.git(work, "rev-parse", "HEAD")
    w.git(work, "checkout", "-q", "--detach", master)
    (work / "notes.md").write_text("fork notes\n")
    w.git(work, "add", "notes.md")
    w.git(work, "commit", "-qm", "fork: notes")
    turbo = w.git(work, "rev-parse", "HEAD")
    for bare in (upstream, fork):
        w.git(root, "init", "-q", "--bare", str(bare))
        w.git(bare, "config", "uploadpack.allowAnySHA1InWant", "true")
    w.git(work, "push", "-q", str(upstream), f"{master}:refs/heads/master", f"{pr1}:refs/pull/1/head")
    w.git(work, "push", "-q", str(fork), f"{turbo}:refs/heads/feature/turboquant-kv-cache")
    base = {k: v for k, v in os.environ.items() if not k.startswith("GIT_CONFIG")}
    return Small(root, master, offline.redirect_env({w.UPSTREAM_URL: upstream, w.FORK_URL: fork}, base=base))


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Small:
    return _small_world(tmp_path_factory.mktemp("small"))

pytestmark = pytest.mark.skipif(shutil.which("strace") is None, reason="needs strace")


def _recipe(directory: Path) -> Path:
    (directory / "patches").mkdir(parents=True, exist_ok=True)
    (directory / "patches" / "local.patch").write_text(LOCAL_PATCH)
    return write_recipe(directory, "faults", RECIPE)


@pytest.fixture(scope="module")
def clean_commit(tmp_path_factory: pytest.TempPathFactory, small: Small) -> str:
    """The patched commit of an undisturbed run (the stack is deterministic: every run must give it)."""
    root = tmp_path_factory.mktemp("clean")
    recipe = _recipe(root / "repo")
    env = {**small.env, "HARNESS_CACHE": str(root / "cache")}
    assert run_harness("lock", recipe, env=env).returncode == 0
    res = run_harness("prepare", recipe, "--json", env=env)
    assert res.returncode == 0, res.stderr
    return str(json.loads(res.stdout)["commit"])


def _where(recipe: Path) -> dict[str, Path]:
    tree = Tree.for_recipe(load_recipe(recipe))
    mirror = Mirror.for_url(w.UPSTREAM_URL).path
    git_dir = tree.src / ".git"
    return {"src": git_dir, "stack": git_dir / "worktrees" / tree.stack_work.name, "mirror": mirror}


# (git command, where, lock file): each a moment git holds a lock some later run must not trip on
KILLS = [
    ("checkout", "src", "index.lock"),  # moving the source tree to the patched commit
    ("merge", "stack", "ORIG_HEAD.lock"),  # squash-merging the fork's branch in the scratch worktree
    ("commit", "stack", "HEAD.lock"),  # committing an item
    ("apply", "stack", "index.lock"),  # applying the local patch
    # (no "shallow.lock": a mirror is a partial clone with the whole history, and has no shallow update
    # unless the server is itself shallow)
    ("fetch", "mirror", "./refs/harness/pin/{base}.lock"),  # the pin ref of the base commit
]


@pytest.mark.parametrize(("command", "where", "lock"), KILLS, ids=[f"{c}-{lk.split('/')[-1]}" for c, _, lk in KILLS])
def test_killed_git_then_next_run_recovers(
    tmp_path: Path, small: Small, clean_commit: str, command: str, where: str, lock: str
) -> None:
    env = {**small.env, "HARNESS_CACHE": os.environ["HARNESS_CACHE"]}
    recipe = _recipe(tmp_path / "repo")
    assert run_harness("lock", recipe, env=env).returncode == 0
    spelled = f"{_where(recipe)[where]}/{lock.format(base=small.master)}"  # as git spells it: strace matches strings
    target = Path(spelled)
    faulty = {
        **env,
        "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
        "HARNESS_FAULT_REAL_GIT": str(shutil.which("git")),
        "HARNESS_FAULT_CMD": command,
        "HARNESS_FAULT_PATHS": spelled,
    }
    killed = run_harness("prepare", recipe, env=faulty)
    assert killed.returncode == 1, killed.stderr
    assert "Traceback" not in killed.stderr
    assert target.exists(), f"git was not killed holding {target}:\n{killed.stderr[-2000:]}"

    again = run_harness("prepare", recipe, "--json", env=env)
    assert again.returncode == 0, again.stderr
    out = json.loads(again.stdout)
    assert out["commit"] == clean_commit
    assert [i["status"] for i in out["items"]] == ["applied", "applied", "applied"]
    assert not target.exists()
    tree = Path(out["tree"])
    assert subprocess.run(["git", "-C", str(tree), "status", "--porcelain"], capture_output=True, text=True).stdout == ""
    # every pinned commit's history can be walked (no commit whose parents are missing counts as present)
    mirror = _where(recipe)["mirror"]
    pins = subprocess.run(["git", "-C", str(mirror), "for-each-ref", "--format=%(objectname)", "refs/harness/pin/"],
                          capture_output=True, text=True, check=True).stdout.split()
    assert small.master in pins
    assert subprocess.run(["git", "-C", str(mirror), "rev-list", "--quiet", *pins]).returncode == 0
