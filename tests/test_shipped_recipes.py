"""The shipped recipes lock and prepare what their names say, against repositories that mirror the real ones.

Each recipe file is copied byte for byte into a scratch repository (a lock must not land in
this checkout) and run with the world's redirections (tests/world.py: the upstream at
ggml-org's URL, the TurboQuant fork at AtomicBot-ai/atomic-llama-cpp-turboquant with PR 7
merged into its branch) and a local Hugging Face Hub (tests/hf_hub.py) holding the models
and the Gemma 4 assistant the recipes name.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests import hf_hub, mtp_models
from tests import world as w
from tests.conftest import REPO, run_harness, write_recipe


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[hf_hub.Hub]:
    with hf_hub.serve() as served:
        yield served


def shipped(name: str, tmp_path: Path) -> Path:
    return write_recipe(tmp_path / "repo", name, (REPO / "recipes" / f"{name}.yaml").read_text())


def run(env: dict[str, str], *args: str | Path) -> dict[str, Any]:
    res = run_harness(*args, env=env, timeout=900)
    assert res.returncode == 0, res.stderr[-3000:]
    out: dict[str, Any] = json.loads(res.stdout) if "--json" in args else {}
    return out


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True).stdout.strip()


def test_turboquant_is_the_forks_branch_with_pr_7_already_merged(
    tmp_path: Path, world: w.World, world_env: dict[str, str]
) -> None:
    recipe = shipped("turboquant", tmp_path)
    run(world_env, "lock", recipe)
    lock = json.loads(recipe.with_suffix(".lock").read_text())
    assert lock["upstream"] == {"repo": w.TURBOQUANT_URL, "ref": w.TURBOQUANT_BRANCH, "sha": world.shas["turbo2"]}
    [pr7] = lock["stack"]
    assert (pr7["kind"], pr7["ref"], pr7["repo"], pr7["sha"]) == ("pr", "7", w.TURBOQUANT_URL, world.shas["turbo_pr7"])
    out = run(world_env, "prepare", recipe, "--json")
    [item] = out["items"]
    assert (item["status"], item["detail"]) == ("already-merged", "its head is already part of the tree")
    assert out["base"] == out["commit"] == world.shas["turbo2"]  # nothing applied: the fork's branch as it is
    tree = Path(out["tree"])
    assert "Recommended: turbo3" in (tree / "TURBOQUANT.md").read_text()
    assert "fork PR 7: MTP assistant tensors are renamed mtp." in (tree / "src" / "llama.cpp").read_text()
    assert "(upstream title)" not in (tree / "README.md").read_text()  # nothing of ggml-org's master stacked in


def test_gemma4_mtp_pins_its_model_and_its_assistant(
    tmp_path: Path, world: w.World, world_env: dict[str, str], hub: hf_hub.Hub
) -> None:
    assistant = mtp_models.write_gemma4_assistant(tmp_path / "assistant.gguf")
    model_sha = hub.add("google/gemma-4-26B-A4B-it", {"config.json": b'{"architectures": ["Gemma4ForConditionalGeneration"]}'})
    draft_sha = hub.add("unsloth/gemma-4-26B-A4B-it-GGUF", {
        "gemma-4-26B-A4B-it-UD-Q4_K_XL.gguf": b"GGUF", "MTP/gemma-4-26B-A4B-it-Q8_0-MTP.gguf": assistant,
        "MTP/gemma-4-26B-A4B-it-BF16-MTP.gguf": b"GGUF",
    })  # fmt: skip
    env = {**world_env, **hub.env(tmp_path / "hf-home")}
    env.pop("HF_HUB_OFFLINE", None)
    recipe = shipped("gemma4-mtp", tmp_path)
    run(env, "lock", recipe)
    lock = json.loads(recipe.with_suffix(".lock").read_text())
    assert lock["upstream"]["sha"] == world.shas["master"]
    assert lock["model"] == {"source": "google/gemma-4-26B-A4B-it", "revision": model_sha}
    assert lock["draft"] == {"source": "unsloth/gemma-4-26B-A4B-it-GGUF", "file": "MTP/*Q8_0*.gguf",
                             "revision": draft_sha, "files": ["MTP/gemma-4-26B-A4B-it-Q8_0-MTP.gguf"]}  # fmt: skip
    run(env, "lock", recipe, "--check")
    out = run(env, "prepare", recipe, "--json")
    [item] = out["items"]
    assert (item["ref"], item["status"], item["detail"]) == ("22673", "already-merged", "upstream already has its changes")
    assert out["commit"] == world.shas["master"]
    # what the lock pins is a Gemma 4 MTP assistant (an MTP draft file for -md)
    audited = run_harness("gguf", "audit", assistant, "--json")
    assert json.loads(audited.stdout)["status"] == "draft"


def test_qwen36_keeps_its_built_in_mtp_and_locks_its_model(
    tmp_path: Path, world: w.World, world_env: dict[str, str], hub: hf_hub.Hub
) -> None:
    sha = hub.add("Qwen/Qwen3.6-35B-A3B", {"config.json": b'{"architectures": ["Qwen3_5MoeForConditionalGeneration"]}'})
    env = {**world_env, **hub.env(tmp_path / "hf-home")}
    env.pop("HF_HUB_OFFLINE", None)
    recipe = shipped("qwen36-mtp", tmp_path)
    run(env, "lock", recipe)
    lock = json.loads(recipe.with_suffix(".lock").read_text())
    assert lock["model"] == {"source": "Qwen/Qwen3.6-35B-A3B", "revision": sha}
    assert "draft" not in lock and lock["stack"] == []
    out = run(env, "prepare", recipe, "--json")
    assert out["items"] == [] and out["commit"] == world.shas["master"]
