"""Recipes: every problem at once as FILE:LINE: key.path: message, exit code 2."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from harness.errors import InputError
from harness.recipe.load import load_recipe
from tests.conftest import REPO, run_harness, write_recipe

BAD = sorted((Path(__file__).parent / "data" / "bad_recipes").glob("*.yaml"))


def _expectations(path: Path) -> list[str]:
    return [m.group(1) for m in re.finditer(r"^# expect: (.+)$", path.read_text(), re.M)]


@pytest.mark.parametrize("path", BAD, ids=[p.stem for p in BAD])
def test_bad_recipe_reports_every_problem(path: Path) -> None:
    expected = _expectations(path)
    assert expected, f"{path} has no '# expect:' lines"
    res = run_harness("validate", path)
    assert res.returncode == 2, res.stderr
    for line in expected:
        assert f"{path}:{line}" in res.stderr, f"missing {line!r} in:\n{res.stderr}"
    assert "Traceback" not in res.stderr


def test_shipped_recipes_validate() -> None:
    recipes = sorted((REPO / "recipes").glob("*.yaml"))
    assert {"demo", "gemma4-mtp", "qwen36-mtp", "turboquant"} <= {p.stem for p in recipes}
    res = run_harness("validate", *recipes)
    assert res.returncode == 0, res.stderr


def test_defaults_and_name(tmp_path: Path) -> None:
    path = write_recipe(tmp_path, "my-recipe", "stack:\n  - pr: 5\n")
    recipe = load_recipe(path)
    assert recipe.name == "my-recipe"
    assert recipe.spec.upstream.repo == "https://github.com/ggml-org/llama.cpp"
    assert recipe.spec.upstream.ref == "master"
    assert recipe.lock_path == path.with_suffix(".lock")
    assert recipe.spec.stack[0].label(recipe.spec.upstream.repo) == "PR #5 of https://github.com/ggml-org/llama.cpp"


def test_patch_path_relative_to_recipe_or_repo_root(tmp_path: Path) -> None:
    (tmp_path / "patches").mkdir()
    (tmp_path / "patches" / "a.patch").write_text("diff\n")
    (tmp_path / "recipes" / "patches").mkdir(parents=True)
    (tmp_path / "recipes" / "patches" / "b.patch").write_text("diff\n")
    path = write_recipe(tmp_path, "r", "stack:\n  - patch: patches/a.patch\n  - patch: patches/b.patch\n")
    nested = tmp_path / "recipes" / "r.yaml"
    nested.write_text(path.read_text())
    recipe = load_recipe(nested)
    assert recipe.resolve_local("patches/a.patch") == (tmp_path / "patches" / "a.patch").resolve()
    assert recipe.resolve_local("patches/b.patch") == (tmp_path / "recipes" / "patches" / "b.patch").resolve()


def test_load_recipe_raises_input_error_with_all_lines(tmp_path: Path) -> None:
    path = write_recipe(tmp_path, "r", "upstream:\n  reff: x\nbuild:\n  backends: [gpu]\n")
    with pytest.raises(InputError) as info:
        load_recipe(path)
    lines = str(info.value).splitlines()
    assert lines == [
        f"{path}:2: upstream.reff: unknown key (did you mean 'ref'?)",
        f"{path}:4: build.backends[0]: unknown backend 'gpu' (did you mean 'cpu'?); one of cpu, cuda, metal, vulkan, hip",
    ]
