"""A nightly that publishes a build without a conflicting stack item is degraded, not passed.

The upstream is tests/data/fake_llama (a real CMake project whose builds take seconds) with a
master commit and a PR that edits the same line: ``nightly.skip_conflicts`` builds and
publishes without the PR, and the night says so (status ``degraded``, the item named as
missing, exit 1 unless ``--allow-degraded``).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO, write_recipe
from tests.test_decode_smoke import FAKE

GIT_ENV = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t",
           "GIT_AUTHOR_DATE": "@1760000000 +0000", "GIT_COMMITTER_DATE": "@1760000000 +0000"}  # fmt: skip


def _git(repo: Path, *args: str) -> str:
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("GIT_")}, **GIT_ENV}
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True, env=env).stdout.strip()


def _upstream_with_a_conflicting_pr(tmp_path: Path) -> str:
    work, bare = tmp_path / "fake-llama", tmp_path / "fake-llama.git"
    shutil.copytree(FAKE, work)
    _git(work, "init", "-q", "-b", "master")
    _git(work, "add", ".")
    _git(work, "commit", "-qm", "fake llama.cpp")
    base = _git(work, "rev-parse", "HEAD")
    cmake = work / "CMakeLists.txt"
    original = cmake.read_text()
    line = "# A stand-in for llama.cpp's build"
    cmake.write_text(original.replace(line, line + " (edited by PR 2)"))
    _git(work, "commit", "-qam", "PR 2: edit the first line")
    pr = _git(work, "rev-parse", "HEAD")
    _git(work, "reset", "-q", "--hard", base)
    cmake.write_text(original.replace(line, line + " (edited upstream)"))
    _git(work, "commit", "-qam", "upstream edits the same line")
    _git(tmp_path, "clone", "-q", "--bare", str(work), str(bare))
    _git(bare, "config", "uploadpack.allowAnySHA1InWant", "true")
    _git(bare, "update-ref", "refs/pull/2/head", pr)
    return f"file://{bare}"


def _nightly(recipe: Path, builds: Path, report: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "harness", "nightly", str(recipe), "--builds-dir", str(builds),
                           "--report", str(report), *args],
                          capture_output=True, text=True, cwd=REPO, timeout=600)  # fmt: skip


def test_a_build_without_a_skipped_item_is_degraded_and_exits_1(tmp_path: Path) -> None:
    url = _upstream_with_a_conflicting_pr(tmp_path)
    recipe = write_recipe(tmp_path / "recipes", "fake", f"""upstream: {{repo: {url}, ref: master}}
stack:
  - pr: 2
build:
  targets: [llama-server]
  cmake_args: {{FAKE_CRASH: never}}
nightly:
  skip_conflicts: true
  smoke: [version]
""")
    builds, report = tmp_path / "builds", tmp_path / "report"
    res = _nightly(recipe, builds, report, "--json")
    assert res.returncode == 1, res.stderr
    assert "Traceback" not in res.stderr and "published without PR #2 of" in res.stderr
    [entry] = json.loads((report / "report.json").read_text())["recipes"]
    assert entry["status"] == "degraded" and entry["adopted"] is True and entry["failed_step"] is None
    assert entry["missing"] == [{"item": f"PR #2 of {url}", "detail": "conflicts in CMakeLists.txt"}]
    assert (builds / "fake" / "cpu" / "bin" / "llama-server").exists()  # published, as skip_conflicts asks
    assert json.loads((builds / "fake" / "last-good.json").read_text())["cpu"]["missing"] == [f"PR #2 of {url}"]
    lock = json.loads(recipe.with_suffix(".lock").read_text())
    assert "conflicts with upstream" in lock["stack"][0]["skipped"]
    md = (report / "report.md").read_text()
    assert md.startswith("# Nightly") and ": DEGRADED" in md.splitlines()[0]
    assert "## fake: DEGRADED - lock and builds adopted" in md
    assert "**The published build lacks 1 item(s) of the recipe**" in md and f"- PR #2 of {url}: conflicts in CMakeLists.txt" in md
    assert json.loads((report / "history.jsonl").read_text().splitlines()[-1])["missing"] == [f"PR #2 of {url}"]

    allowed = _nightly(recipe, builds, report, "--allow-degraded")
    assert allowed.returncode == 0, allowed.stderr
    assert "fake: degraded (adopted); missing from the build: PR #2 of" in allowed.stdout
