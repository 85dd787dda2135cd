"""A recipe's draft / assistant model (``draft:``): pinned by lock, fetched, audited, served with -md.

The Hub is tests/hf_hub.py (the real huggingface_hub client against a local server that
answers as the Hub does); draft files are tiny GGUFs written here (tests/models.py,
tests/mtp_models.py) or made by the pipeline from a tiny Qwen3.5 checkpoint.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests import hf_hub, models, mtp_models
from tests.conftest import run_harness, write_recipe
from tests.test_gguf_server import qwen35_vocab  # noqa: F401  (a fixture)
from tests.test_pipeline import Build, harness, pipeline_build, qwen_hf  # noqa: F401  (fixtures)
from tests.test_serve import served_recipe

BASE = "0c1e57098bba43ac29e6e3b677cdceebdd22334f"  # a full SHA: the lock asks git nothing
REPO_ID = "unsloth/tiny-qwen35-GGUF"


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[hf_hub.Hub]:
    with hf_hub.serve() as served:
        yield served


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A qwen35 model without MTP layers, the MTP head of the same model, a Gemma 4 assistant."""
    d = tmp_path_factory.mktemp("drafts")
    full = models.write_qwen35(d / "full.gguf", mtp="full")
    files = {"none": models.write_qwen35(d / "none.gguf", mtp="none"), "head": d / "head.gguf",
             "assistant": mtp_models.write_gemma4_assistant(d / "assistant.gguf")}  # fmt: skip
    assert run_harness("gguf", "extract-mtp", full, "-o", files["head"]).returncode == 0
    return files


def hub_env(hub: hf_hub.Hub, tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "HF_TOKEN")}
    return {**env, **hub.env(tmp_path / "hf-home")}


def draft_recipe(directory: Path, draft: str, extra: str = "") -> Path:
    return write_recipe(directory, "mini", f"""name: mini
upstream: {{repo: https://github.com/ggml-org/llama.cpp, ref: {BASE}}}
build: {{backends: [cpu]}}
draft: {draft}
{extra}""")


def test_lock_pins_a_hub_draft_like_the_main_model(hub: hf_hub.Hub, tiny: dict[str, Path], tmp_path: Path) -> None:
    sha = hub.add(REPO_ID, {"MTP/tiny-Q8_0-MTP.gguf": tiny["head"], "tiny-Q4_K_M.gguf": tiny["none"],
                            "README.md": b"# tiny\n"})  # fmt: skip
    recipe = draft_recipe(tmp_path / "repo", f"{{source: {REPO_ID}, file: 'MTP/*Q8_0*.gguf'}}")
    env = hub_env(hub, tmp_path)
    res = run_harness("lock", recipe, env=env)
    assert res.returncode == 0, res.stderr
    lock = json.loads(recipe.with_suffix(".lock").read_text())
    assert lock["draft"] == {"source": REPO_ID, "file": "MTP/*Q8_0*.gguf", "revision": sha,
                             "files": ["MTP/tiny-Q8_0-MTP.gguf"]}  # fmt: skip
    assert f"draft {REPO_ID}: (new) -> {sha[:12]}" in res.stdout + res.stderr
    assert run_harness("lock", recipe, "--check", env=env).returncode == 0
    # the recipe names another file: the lock no longer agrees
    recipe.write_text(recipe.read_text().replace("MTP/*Q8_0*.gguf", "*Q4_K_M.gguf"))
    check = run_harness("lock", recipe, "--check", env=env)
    assert check.returncode == 1 and "draft: recipe has" in check.stdout + check.stderr
    # a glob that matches two files is refused, naming them
    recipe.write_text(recipe.read_text().replace("*Q4_K_M.gguf", "*.gguf"))
    two = run_harness("lock", recipe, env=env)
    assert two.returncode == 2 and "matches 2 files: MTP/tiny-Q8_0-MTP.gguf, tiny-Q4_K_M.gguf" in two.stderr


def test_offline_the_draft_stays_unpinned_and_check_says_so(tmp_path: Path) -> None:
    recipe = draft_recipe(tmp_path / "repo", f"{{source: {REPO_ID}, file: 'MTP/*Q8_0*.gguf'}}")
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    res = run_harness("lock", recipe, env=env)
    assert res.returncode == 0 and "HF_HUB_OFFLINE is set: draft" in res.stderr
    check = run_harness("lock", recipe, "--check", env=env)
    assert check.returncode == 1 and f"the revision of {REPO_ID} is not resolved" in check.stdout + check.stderr


@pytest.mark.slow
def test_serve_fetches_the_pinned_draft_and_passes_it_with_md(
    hub: hf_hub.Hub, tiny: dict[str, Path], tmp_path: Path, llama_bin: Path
) -> None:
    sha = hub.add(REPO_ID, {"MTP/tiny-Q8_0-MTP.gguf": tiny["head"]})
    recipe, builds = served_recipe(tmp_path, llama_bin, serve="{draft_n_max: 2}")
    recipe.write_text(recipe.read_text() + f"draft: {{source: {REPO_ID}, file: 'MTP/*.gguf'}}\n"
                      f"upstream: {{repo: https://github.com/ggml-org/llama.cpp, ref: {BASE}}}\n")  # fmt: skip
    env = hub_env(hub, tmp_path)
    res = run_harness("serve", recipe, "--model", tiny["none"], "--builds-dir", builds, "--dry-run", "--json", env=env)
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    cached = tmp_path / "hf-home" / "hub" / "models--unsloth--tiny-qwen35-GGUF" / "snapshots" / sha / "MTP" / "tiny-Q8_0-MTP.gguf"
    assert out["draft"] == str(cached) and cached.read_bytes() == tiny["head"].read_bytes()
    argv = out["argv"]
    # no spec_type in the recipe: an MTP draft gets draft-mtp (draft-simple would load it as a model of its own)
    assert argv[argv.index("--spec-type") + 1] == "draft-mtp" and argv[argv.index("-md") + 1] == str(cached)
    assert argv[argv.index("--spec-draft-n-max") + 1] == "2" and out["draft_status"] == "draft"
    plain = run_harness("serve", recipe, "--model", tiny["none"], "--builds-dir", builds, "--dry-run", "--json",
                        "--spec", "none", env=env)  # fmt: skip
    assert plain.returncode == 0 and "-md" not in json.loads(plain.stdout)["argv"]  # no speculation asked: no draft
    asked = len(hub.requests)
    again = run_harness("serve", recipe, "--model", tiny["none"], "--builds-dir", builds, "--dry-run", "--json", env=env)
    assert again.returncode == 0 and json.loads(again.stdout)["draft"] == str(cached)
    assert len(hub.requests) == asked  # pinned and cached: the Hub is not asked again


@pytest.mark.slow
def test_a_draft_that_does_not_fit_the_model_stops_serve(tiny: dict[str, Path], tmp_path: Path, llama_bin: Path) -> None:
    recipe, builds = served_recipe(tmp_path, llama_bin)
    draft = recipe.parent / "models" / "assistant.gguf"
    draft.parent.mkdir()
    draft.write_bytes(tiny["assistant"].read_bytes())
    recipe.write_text(recipe.read_text() + "draft: {source: ./models/assistant.gguf}\n")
    res = run_harness("serve", recipe, "--model", tiny["none"], "--builds-dir", builds, timeout=120)
    assert res.returncode == 2, res.stderr
    assert f"draft model {draft}" in res.stderr and "wrong-target" in res.stderr and "vocabulary" in res.stderr
    assert "Traceback" not in res.stderr
    missing = run_harness("serve", recipe, "--model", tiny["none"], "--builds-dir", builds, "--draft",
                          tmp_path / "nope.gguf", timeout=120)  # fmt: skip
    assert missing.returncode == 2 and "--draft" in missing.stderr


# --- the pipeline makes an MTP head, audits it as the recipe's draft, serve drafts with it ------


@pytest.mark.slow
def test_pipeline_audits_the_recipes_draft_and_serve_drafts_with_it(
    qwen_hf: Path, pipeline_build: Build, tmp_path: Path  # noqa: F811
) -> None:
    repo = tmp_path / "repo"
    recipe = write_recipe(repo, pipeline_build.recipe_name, f"""name: {pipeline_build.recipe_name}
model:
  source: {qwen_hf}
  name: tiny-qwen35
  convert: {{outtype: bf16, mtp: separate}}
  imatrix: {{chunks: 2, ctx: 128}}
  quantize: {{types: [Q4_K_M], mtp_type: Q8_0}}
  quality: {{enabled: false}}
draft:
  source: ./out/mtp-tiny-qwen35-Q8_0.gguf    # the MTP head this pipeline makes
serve: {{draft_n_max: 2}}
""")
    out = repo / "out"
    report = harness(pipeline_build, "pipeline", recipe, "--out", out)
    step: dict[str, Any] = report["steps"][-1]
    assert step["step"] == "draft" and step["output"] == str(out / "mtp-tiny-qwen35-Q8_0.gguf")
    side = step["sidecar"]
    assert side["audit"]["status"] == "draft" and side["audit"]["target"] == str(out / "tiny-qwen35-Q4_K_M.gguf")
    assert side["spec_type"] == "draft-mtp"

    res = run_harness("serve", recipe, "--model", out / "tiny-qwen35-Q4_K_M.gguf", "--builds-dir",
                      pipeline_build.builds_dir, "--prompt", "Hello world", "--n-predict", "16", "--json",
                      "--", "-c", "1024", timeout=600)  # fmt: skip
    assert res.returncode == 0, res.stderr[-3000:]
    answer = json.loads(res.stdout)
    timings = answer["timings"]
    assert timings["predicted_n"] == 16 and timings["draft_n"] > 0, timings
    assert 0 <= timings["draft_n_accepted"] <= timings["draft_n"]
    log = Path(answer["log"]).read_text()
    assert "-md " in log and "--spec-type draft-mtp" in log and "loading draft model" in log
