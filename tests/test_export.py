"""`harness patches export`: transactional, round-trip YAML (anchors, comments, quoting kept), series parts."""

from __future__ import annotations

import json
import shlex
import shutil
from pathlib import Path

from tests import world as w
from tests.conftest import run_harness, write_recipe

CORPUS = Path(__file__).parent / "data" / "patches"

# comments, quoted numbers, flow mappings and an anchor defined by the item that conflicts
ANCHORED = f"""# A recipe as people write them: comments, anchors, quoted numbers.
name: anchors
upstream:
  repo: {w.UPSTREAM_URL}
  ref: "master"        # quoted on purpose
stack:
  - pr: 1
  # PR 2 conflicts with master's README retitle; its keys are reused below
  - &retitle {{pr: 2, note: "0012"}}
  - <<: *retitle
    pr: 3              # merged upstream already
build:
  backends: [cpu]
  cmake_args: {{GGML_NATIVE: "OFF", LLAMA_BUILD_NUMBER: '0042'}}
  targets:
    - llama-server
    - 'llama-quantize'
"""


def _resolve_readme(work: Path, title: str) -> None:
    text = (work / "README.md").read_text().splitlines(keepends=True)
    start = next(i for i, t in enumerate(text) if t.startswith("<<<<<<<"))
    end = next(i for i, t in enumerate(text) if t.startswith(">>>>>>>"))
    text[start : end + 1] = [f"# llama.cpp ({title})\n"]
    (work / "README.md").write_text("".join(text))


def _conflict(recipe: Path, *args: str) -> dict[str, object]:
    res = run_harness("prepare", recipe, "--json", *args)
    assert res.returncode == 1, res.stderr
    return dict(json.loads(res.stdout)["error"]["conflict"])


def test_export_keeps_the_rest_of_the_recipe_byte_for_byte(tmp_path: Path, world_env: dict[str, str]) -> None:
    recipe = write_recipe(tmp_path / "my recipes", "anchors", ANCHORED)
    assert run_harness("lock", recipe).returncode == 0
    conflict = _conflict(recipe)
    _resolve_readme(Path(str(conflict["worktree"])), "upstream title, PR 2 resolved")

    res = run_harness("patches", "export", recipe, "--json")
    assert res.returncode == 0, res.stderr
    patch = Path(json.loads(res.stdout)["patch"])
    assert patch.name == "anchors-02-pr-2.patch" and "PR 2 resolved" in patch.read_text()

    before, after = ANCHORED.splitlines(keepends=True), recipe.read_text().splitlines(keepends=True)
    assert len(after) == len(before)
    changed = [i for i, (a, b) in enumerate(zip(before, after, strict=True)) if a != b]
    # the replaced item, and the alias of the anchor it defined, written out in place
    assert [before[i] for i in changed] == ['  - &retitle {pr: 2, note: "0012"}\n', "  - <<: *retitle\n"]
    assert [after[i] for i in changed] == [
        "  - patch: patches/anchors-02-pr-2.patch  # was PR #2 of https://github.com/ggml-org/llama.cpp (conflict resolved)\n",
        '  - <<: {pr: 2, note: "0012"}\n',
    ]
    assert run_harness("validate", recipe).returncode == 0
    assert run_harness("lock", recipe, "--check").returncode == 0
    res = run_harness("prepare", recipe, "--json")
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert [(i["kind"], i["status"]) for i in out["items"]] == [("pr", "applied"), ("patch", "applied"), ("pr", "already-merged")]
    assert "PR 2 resolved" in (Path(out["tree"]) / "README.md").read_text()


def test_a_failed_export_changes_nothing(tmp_path: Path, world_env: dict[str, str]) -> None:
    recipe = write_recipe(tmp_path / "r", "conf", f"upstream:\n  repo: {w.UPSTREAM_URL}\nstack:\n  - pr: 1\n  - pr: 2\n")
    assert run_harness("lock", recipe).returncode == 0
    res = run_harness("prepare", recipe)
    assert res.returncode == 1
    assert f"`harness patches export {shlex.quote(str(recipe))}`" in res.stderr
    conflict = _conflict(recipe)
    work = Path(str(conflict["worktree"]))
    _resolve_readme(work, "resolved")
    # the user added an item that cannot be locked: the export must stop before anything is written
    recipe.write_text(recipe.read_text() + "  - pr: 999\n")
    recipe_bytes, lock_bytes = recipe.read_bytes(), recipe.with_suffix(".lock").read_bytes()
    res = run_harness("patches", "export", recipe)
    assert res.returncode == 2 and "refs/pull/999/head not found" in res.stderr
    assert "Traceback" not in res.stderr
    assert recipe.read_bytes() == recipe_bytes and recipe.with_suffix(".lock").read_bytes() == lock_bytes
    assert not (tmp_path / "r" / "patches").exists()
    assert work.exists() and "(resolved)" in (work / "README.md").read_text()
    # fixed, the same export goes through
    recipe.write_text(recipe.read_text().replace("  - pr: 999\n", ""))
    res = run_harness("patches", "export", recipe)
    assert res.returncode == 0, res.stderr
    assert not work.exists()
    assert run_harness("lock", recipe, "--check").returncode == 0


def test_export_of_a_series_rewrites_the_part_that_conflicted(tmp_path: Path, world_env: dict[str, str]) -> None:
    repo = tmp_path / "r"
    shutil.copytree(CORPUS / "series-conflict", repo / "patches" / "fixes")
    recipe = write_recipe(repo, "series", f"upstream:\n  repo: {w.UPSTREAM_URL}\nstack:\n  - patches: patches/fixes/\n")
    assert run_harness("lock", recipe).returncode == 0
    conflict = _conflict(recipe)
    assert conflict["part"] == "0002-README-the-series-retitles-too.patch"
    _resolve_readme(Path(str(conflict["worktree"])), "upstream title, series title")
    body = recipe.read_bytes()
    first = (repo / "patches" / "fixes" / "0001-docker-docs-conflict-series-1.patch").read_bytes()

    res = run_harness("patches", "export", recipe, "--json")
    assert res.returncode == 0, res.stderr
    assert Path(json.loads(res.stdout)["patch"]).name == "0002-README-the-series-retitles-too.patch"
    assert recipe.read_bytes() == body  # the recipe still names the directory
    assert (repo / "patches" / "fixes" / "0001-docker-docs-conflict-series-1.patch").read_bytes() == first
    assert run_harness("lock", recipe, "--check").returncode == 0
    res = run_harness("prepare", recipe, "--json")
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert out["items"][0]["detail"] == "2 of 2 commits applied"
    assert "(upstream title, series title)" in (Path(out["tree"]) / "README.md").read_text()
