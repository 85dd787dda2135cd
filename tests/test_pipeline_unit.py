"""The model pipeline's parts, fast: rules, digests and sidecars, preflight, sources, progress parsing.

No llama.cpp tool runs here: the build root is a directory of stand-ins, the checkpoint a
hand-written safetensors file, and the Hub a fake ``snapshot_download``.  The real tools
run in tests/test_pipeline.py.
"""

from __future__ import annotations

import json
import os
import re
import struct
import subprocess
from pathlib import Path
from typing import Any

import pytest

from harness import atomic
from harness.errors import InputError, StepError
from harness.gguf_files import mtp
from harness.gguf_files.split import open_model
from harness.pipeline import (
    cache,
    checkpoint,
    plan,
    preflight,
    progress,
    qtypes,
    rules,
    source,
    summary,
    tools,
)
from harness.pipeline.run import pipeline
from harness.pipeline.steps.download import Download
from harness.pipeline.steps.job import tool_env
from tests import models
from tests.conftest import REPO, write_recipe

LAYOUT = mtp.Layout("qwen35", 5, 1, True)
MTP_NAMES = [
    "blk.4.attn_k.weight", "blk.4.attn_q.weight", "blk.4.ffn_down.weight", "blk.4.nextn.eh_proj.weight",
    "blk.4.nextn.enorm.weight", "nextn.embed_tokens.weight", "mtp.fc.weight",
]  # fmt: skip
TRUNK_NAMES = ["blk.0.attn_qkv.weight", "blk.3.attn_k.weight", "blk.40.attn_k.weight", "token_embd.weight",
               "output_norm.weight", "blk.14.ffn_up.weight"]  # fmt: skip


# --- rules ----------------------------------------------------------------------------------


def test_the_mtp_rule_covers_the_whole_mtp_block_and_nothing_else() -> None:
    [rule] = rules.tensor_type_rules(LAYOUT, "Q8_0", {})
    pattern, qtype = rule.split("=", 1)
    assert qtype == "q8_0"
    assert pattern == pattern.lower(), "llama-quantize lowercases patterns before compiling them"
    regex = re.compile(pattern)
    assert all(regex.search(n) for n in MTP_NAMES)
    assert not any(regex.search(n) for n in TRUNK_NAMES)
    # the trap the issue names: a bare "nextn" rule only catches the NextN projections
    assert not re.search("nextn", "blk.4.attn_k.weight")


def test_the_mtp_rule_comes_before_the_recipes_rules_and_names_every_mtp_layer() -> None:
    layout = mtp.Layout("glm4moe", 48, 2, True)
    got = rules.tensor_type_rules(layout, "q8_0", {"FFN_down_exps": "Q4_K", "attn_v": "q6_k"})
    assert got[0] == r"^(blk\.(46|47)\.|nextn\.|mtp\.)=q8_0"
    assert got[1:] == ["ffn_down_exps=q4_k", "attn_v=q6_k"]
    assert rules.argv(got)[:2] == ["--tensor-type", got[0]]


def test_no_mtp_rule_without_mtp_layers_or_without_mtp_type() -> None:
    assert rules.tensor_type_rules(mtp.Layout("llama", 30, 0, False), "Q8_0", {}) == []
    assert rules.tensor_type_rules(LAYOUT, None, {}) == []


@pytest.mark.parametrize(
    ("tensor_types", "message"),
    [
        ({r"blk\.\D+": "q8_0"}, r"turns \\D into its opposite"),
        ({"a=b": "q8_0"}, "may not contain '='"),
        ({"attn(": "q8_0"}, "not a regular expression"),
        ({"attn_v": "Q4_K_M"}, "is a file type mixture"),
        ({"attn_v": "q8_1x"}, "not a ggml tensor type"),
    ],
)
def test_bad_tensor_type_rules_are_input_errors(tensor_types: dict[str, str], message: str) -> None:
    with pytest.raises(InputError, match=message):
        rules.user_rules(tensor_types)


QUANTIZE_HELP = """usage: llama-quantize [--help] ...
-----------------------------------------------------------------------------
 allowed quantization types
-----------------------------------------------------------------------------

  41  or  Q1_0    :  1.125 bpw quantization
  39  or  MXFP4_MOE : MXFP4 MoE
  17  or  IQ2_XS  :  2.31 bpw quantization
  15  or  Q4_K_M  :  4.58G, +0.1754 ppl @ Llama-3-8B
  15  or  Q4_K    : alias for Q4_K_M
   7  or  Q8_0    :  7.96G, +0.0026 ppl @ Llama-3-8B
  32  or  BF16    : 14.00G, -0.0050 ppl @ Mistral-7B
          COPY    : only copy tensors, no quantizing
"""


def test_the_quant_type_table_is_read_from_llama_quantize_help() -> None:
    """The lines of QUANT_OPTIONS (tools/quantize/quantize.cpp) as --help prints them."""
    table = qtypes.parse_help(QUANTIZE_HELP)
    assert set(table) == {"Q1_0", "MXFP4_MOE", "IQ2_XS", "Q4_K_M", "Q4_K", "Q8_0", "BF16", "COPY"}
    assert (table["Q1_0"], table["IQ2_XS"]) == (1.125, 2.31)
    assert table["Q4_K_M"] == table["Q4_K"] == pytest.approx(4.9, abs=0.05)  # 4.58 GiB of 8.03e9 weights
    assert table["Q8_0"] == pytest.approx(8.5, abs=0.05) and table["BF16"] == pytest.approx(16.6, abs=0.1)
    assert table["MXFP4_MOE"] is None and qtypes.bpw("MXFP4_MOE", table) == 4.25  # the ggml type MXFP4
    assert qtypes.bpw("NEW_FORK_TYPE", table) == qtypes.UNKNOWN_BPW


def test_quant_types_are_checked_against_the_tools_list() -> None:
    assert qtypes.check(["q4_k_m", "IQ2_XS"], {"Q4_K_M", "IQ2_XS"}, what="x") == ["Q4_K_M", "IQ2_XS"]
    with pytest.raises(InputError, match=r"Q4_K_X.*did you mean Q4_K_M"):
        qtypes.check(["Q4_K_X"], {"Q4_K_M", "Q8_0"}, what="model.quantize.types")
    assert qtypes.needs_imatrix("iq2_xs") and not qtypes.needs_imatrix("Q4_K_M")


# --- digests, sidecars, temp outputs ---------------------------------------------------------


def test_digests_are_cached_by_size_and_mtime(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    f = tmp_path / "w.bin"
    f.write_bytes(b"x" * 1000)
    calls: list[Path] = []
    real = atomic.sha256_file
    monkeypatch.setattr(atomic, "sha256_file", lambda p: calls.append(p) or real(p))
    d = cache.Digests(tmp_path / cache.DIGESTS)
    first = d.file(f)
    d.save()
    again = cache.Digests(tmp_path / cache.DIGESTS).file(f)
    assert first == again and len(calls) == 1
    f.write_bytes(b"y" * 1000)
    os.utime(f, ns=(1, 1))
    assert cache.Digests(tmp_path / cache.DIGESTS).file(f) != first and len(calls) == 2


def test_a_sidecar_is_fresh_only_for_its_key_and_an_untouched_output(tmp_path: Path) -> None:
    out = tmp_path / "m.gguf"
    out.write_bytes(b"gguf")
    cache.write_sidecar(out, {"key": "k1", "output": cache.stamp(out)})
    assert cache.fresh(out, "k1") is not None
    assert cache.fresh(out, "k2") is None
    out.write_bytes(b"other bytes")
    assert cache.fresh(out, "k1") is None
    out.unlink()
    assert cache.fresh(out, "k1") is None


def test_a_failed_write_leaves_the_old_output_and_no_temp_file(tmp_path: Path) -> None:
    out = tmp_path / "m.gguf"
    out.write_bytes(b"old")
    with pytest.raises(RuntimeError), cache.temp_output(out) as tmp:
        assert tmp.path.name.endswith(".gguf") and tmp.path.parent == tmp_path
        tmp.path.write_bytes(b"half a file")
        raise RuntimeError("llama-quantize exited with 1")
    assert out.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.gguf"]
    with cache.temp_output(out) as tmp:
        tmp.path.write_bytes(b"new")
        assert tmp.publish() == [out]
    assert out.read_bytes() == b"new"
    (tmp_path / ".m.gguf.abc.tmp.gguf").write_bytes(b"left by a kill")
    assert [p.name for p in cache.remove_stale_temps(tmp_path)] == [".m.gguf.abc.tmp.gguf"]


def test_a_split_output_is_published_under_the_outputs_shard_names(tmp_path: Path) -> None:
    """A tool told to write X writes X-0000i-of-0000N.gguf (llama-quantize --keep-split, the converter's
    --split-max-*): the shards take the output's names, and the files of an older output go."""
    out = tmp_path / "m-Q4_K_M.gguf"
    out.write_bytes(b"an older single-file output")
    (tmp_path / "m-Q4_K_M-00003-of-00003.gguf").write_bytes(b"the last shard of an older set of 3")
    with cache.temp_output(out) as tmp:
        stem = tmp.path.with_suffix("")
        for i in (1, 2):
            stem.with_name(f"{stem.name}-{i:05d}-of-00002.gguf").write_bytes(f"shard {i}".encode())
        assert [p.name for p in tmp.publish()] == ["m-Q4_K_M-00001-of-00002.gguf", "m-Q4_K_M-00002-of-00002.gguf"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m-Q4_K_M-00001-of-00002.gguf", "m-Q4_K_M-00002-of-00002.gguf"]
    with pytest.raises(RuntimeError), cache.temp_output(out) as tmp:
        stem = tmp.path.with_suffix("")
        stem.with_name(f"{stem.name}-00001-of-00002.gguf").write_bytes(b"half a set")
        raise RuntimeError("killed")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m-Q4_K_M-00001-of-00002.gguf", "m-Q4_K_M-00002-of-00002.gguf"]


# --- checkpoints and sources ------------------------------------------------------------------


def write_safetensors(path: Path, tensors: dict[str, tuple[str, list[int]]]) -> None:
    """A safetensors file of zeros (dtype, shape per name), written by hand."""
    header: dict[str, Any] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for name, (dtype, shape) in tensors.items():
        n = checkpoint.DTYPE_BYTES[dtype]
        for d in shape:
            n *= d
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + n]}
        offset += n
    raw = json.dumps(header).encode()
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw)) + raw + bytes(offset))


def fake_checkpoint(d: Path, *, arch: str = "Qwen3_5ForCausalLM", mtp_layers: int = 1) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    config: dict[str, Any] = {"architectures": [arch], "num_hidden_layers": 4, "torch_dtype": "bfloat16"}
    if mtp_layers:
        config["mtp_num_hidden_layers"] = mtp_layers
    (d / "config.json").write_text(json.dumps(config))
    (d / "tokenizer.json").write_text("{}")
    tensors = {f"model.layers.{i}.mlp.up_proj.weight": ("BF16", [512, 256]) for i in range(4)}
    tensors["model.embed_tokens.weight"] = ("BF16", [1000, 256])
    if mtp_layers:
        tensors["mtp.fc.weight"] = ("BF16", [256, 512])
    write_safetensors(d / "model.safetensors", tensors)
    return d


def test_a_checkpoint_is_read_from_its_headers(tmp_path: Path) -> None:
    ck = checkpoint.read(fake_checkpoint(tmp_path / "ck"))
    assert ck.architecture == "Qwen3_5ForCausalLM"
    assert ck.tensors == 6 and ck.mtp_tensors == 1 and ck.mtp_layers == 1
    assert ck.params == 4 * 512 * 256 + 1000 * 256 + 256 * 512
    assert ck.weight_bytes == 2 * ck.params
    assert ck.files == ("config.json", "model.safetensors", "tokenizer.json")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "config.json").write_text("{}")
    with pytest.raises(InputError, match=r"no \*\.safetensors"):
        checkpoint.read(tmp_path / "empty")


def test_sources_are_directories_or_repo_ids(tmp_path: Path) -> None:
    local = source.parse(str(tmp_path))
    assert local.is_local and local.default_name == tmp_path.name
    hub = source.parse("HuggingFaceTB/SmolLM2-135M-Instruct")
    assert not hub.is_local and hub.default_name == "SmolLM2-135M-Instruct"
    with pytest.raises(InputError, match="not a Hugging Face repo id"):
        source.parse(str(tmp_path / "missing" / "dir"))


def test_resolve_revision_offline_and_for_pinned_shas(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    sha = "a" * 40
    assert source.resolve_revision(str(tmp_path), None) is None  # a local directory has none
    assert source.resolve_revision("org/model", sha) == sha  # nothing to ask
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert source.resolve_revision("org/model", "main") is None  # a warning, not an error


def test_the_lock_pins_the_model_revision(tmp_path: Path) -> None:
    from harness.source import lock as lock_mod

    recipe_path = write_recipe(tmp_path / "repo", "r", "model: {source: org/model}\n")
    from harness.recipe.load import load_recipe

    recipe = load_recipe(recipe_path)
    assert source.locked_revision(recipe, "org/model") is None
    the_lock = lock_mod.Lock(recipe="r", upstream={"repo": "https://example.org/llama.cpp", "ref": "master", "sha": "b" * 40},
                             model={"source": "org/model", "revision": "c" * 40})  # fmt: skip
    lock_mod.write(recipe.lock_path, the_lock)
    assert source.locked_revision(recipe, "org/model") == "c" * 40
    assert source.locked_revision(recipe, "org/other") is None


def test_download_takes_only_conversion_files_and_never_the_token(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import huggingface_hub

    calls: list[dict[str, Any]] = []

    def fake_snapshot_download(repo_id: str, **kwargs: Any) -> str:
        calls.append({"repo_id": repo_id, **kwargs})
        fake_checkpoint(Path(kwargs["local_dir"]))
        return str(kwargs["local_dir"])

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    monkeypatch.setenv("HF_TOKEN", "hf_secret_token_value")
    ctx = _context(tmp_path, source_spec="org/model", revision="d" * 40)
    [outcome] = Download().run(ctx)
    assert not outcome.skipped and ctx.hf_dir == ctx.out / "hf" and ctx.checkpoint is not None
    [call] = calls
    assert call["revision"] == "d" * 40 and "token" not in call
    assert "*.safetensors" in call["allow_patterns"] and "*/*" in call["ignore_patterns"]
    sidecar = (ctx.out / "hf.json").read_text()
    assert "hf_secret" not in sidecar and json.loads(sidecar)["revision"] == "d" * 40
    # unchanged revision and files: no second call to the Hub
    [again] = Download().run(_context(tmp_path, source_spec="org/model", revision="d" * 40))
    assert again.skipped and len(calls) == 1
    # the tools never see the token
    assert "HF_TOKEN" not in tool_env()


def test_download_offline_without_a_revision_says_why(tmp_path: Path) -> None:
    ctx = _context(tmp_path, source_spec="org/model", revision=None)
    with pytest.raises(StepError, match="revision is not known"):
        Download().run(ctx)


# --- preflight --------------------------------------------------------------------------------


def fake_build(root: Path) -> Path:
    """builds/<recipe>/cpu with stand-in tools and a converter that registers two architectures."""
    (root / "bin").mkdir(parents=True)
    for tool in (tools.QUANTIZE, tools.IMATRIX):
        (root / "bin" / tool).write_text("#!/bin/sh\nexit 1\n")
        (root / "bin" / tool).chmod(0o755)
    (root / "conversion").mkdir()
    (root / "gguf-py").mkdir()
    (root / tools.CONVERTER).write_text("# stand-in\n")
    (root / "conversion" / "__init__.py").write_text(
        'TEXT_MODEL_MAP: dict[str, str] = {\n    "LlamaForCausalLM": "llama",\n    "Qwen3_5ForCausalLM": "qwen",\n}\n'
    )
    return root


def _recipe(tmp_path: Path, body: str = "") -> Path:
    return write_recipe(tmp_path / "repo", "session", "name: session\n" + body)


def _context(tmp_path: Path, *, source_spec: str, revision: str | None = None) -> plan.Context:
    from harness.recipe.load import load_recipe

    builds = tmp_path / "builds"
    if not (builds / "session" / "cpu").exists():
        fake_build(builds / "session" / "cpu")
    recipe = load_recipe(_recipe(tmp_path, f"model: {{source: {source_spec}}}\n"))
    options = plan.Options(recipe.path, builds_dir=builds)
    section = plan.effective_section(recipe, options)
    src = source.parse(section.source)
    build = tools.find(recipe, backend=None, builds_dir=builds, python=None)
    out = tmp_path / "models" / "m"
    ctx = plan.Context(recipe, section, src, "m", out, build, options, cache.Digests(out / cache.DIGESTS))
    ctx.revision = revision
    return ctx


def test_disk_preflight_refuses_a_run_that_does_not_fit(tmp_path: Path) -> None:
    est = preflight.Estimate()
    est.add("download", 10 * 2**30)
    est.add("m-BF16.gguf", 8 * 2**30)
    with pytest.raises(InputError, match=r"not enough disk space.*needs about 19\.\d\d GiB.*only 5\.00 GiB is free"):
        preflight.check_disk(est, tmp_path, free=lambda _: 5 * 2**30)
    assert preflight.check_disk(est, tmp_path, free=lambda _: 100 * 2**30) == 100 * 2**30


def test_the_estimate_counts_each_output_by_bits_per_weight(tmp_path: Path) -> None:
    ctx = _context(tmp_path, source_spec=str(fake_checkpoint(tmp_path / "ck")))
    ctx.types = ["Q4_K_M", "IQ2_XS"]
    ctx.type_bpw = qtypes.parse_help(QUANTIZE_HELP)  # the build's llama-quantize --help
    ctx.use_imatrix = True
    est = dict(preflight.estimate(ctx, params=10**9, mtp_layers=0, download=0).items)
    assert est["m-BF16.gguf"] == 2 * 10**9
    assert est["m-Q4_K_M.gguf"] == int(10**9 * ctx.type_bpw["Q4_K_M"] / 8 * 1.02)
    assert est["m-IQ2_XS.gguf"] < est["m-Q4_K_M.gguf"]
    # an output already in place (with its sidecar) is not counted again
    done = ctx.quant_path("Q4_K_M")
    done.parent.mkdir(parents=True, exist_ok=True)
    done.write_bytes(b"q")
    cache.write_sidecar(done, {"key": "k", "output": cache.stamp(done)})
    assert "m-Q4_K_M.gguf" not in dict(preflight.estimate(ctx, params=10**9, mtp_layers=0, download=0).items)


def test_the_pipeline_refuses_to_start_when_the_disk_is_short(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ck = fake_checkpoint(tmp_path / "ck")
    fake_build(tmp_path / "builds" / "session" / "cpu")
    recipe = _recipe(tmp_path, f"model: {{source: {ck}, quantize: {{types: [Q4_K_M]}}}}\n")
    monkeypatch.setattr(tools, "quant_types", lambda build: {"Q4_K_M": 4.89, "Q8_0": 8.5})
    out = tmp_path / "out"
    options = plan.Options(recipe, builds_dir=tmp_path / "builds", out=out)
    with pytest.raises(InputError, match="not enough disk space"):
        pipeline(options, free_space=lambda _: 1024)
    assert not list(out.glob("*.gguf")) and not (out / "logs").exists()  # nothing ran


def test_an_unsupported_architecture_is_refused_before_anything_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ck = fake_checkpoint(tmp_path / "ck", arch="FancyNewForCausalLM", mtp_layers=0)
    fake_build(tmp_path / "builds" / "session" / "cpu")
    recipe = _recipe(tmp_path, f"model: {{source: {ck}}}\n")
    monkeypatch.setattr(tools, "quant_types", lambda build: {"Q4_K_M": 4.89})
    with pytest.raises(InputError, match="FancyNewForCausalLM is not supported by the converter"):
        pipeline(plan.Options(recipe, builds_dir=tmp_path / "builds", out=tmp_path / "out"))


def test_missing_tools_are_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ck = fake_checkpoint(tmp_path / "ck")
    root = fake_build(tmp_path / "builds" / "session" / "cpu")
    (root / "bin" / tools.IMATRIX).unlink()
    recipe = _recipe(tmp_path, f"model: {{source: {ck}, imatrix: {{chunks: 2}}}}\n")
    monkeypatch.setattr(tools, "quant_types", lambda build: {"Q4_K_M": 4.89})
    with pytest.raises(InputError, match=r"lacks what the pipeline needs: .*llama-imatrix"):
        pipeline(plan.Options(recipe, builds_dir=tmp_path / "builds", out=tmp_path / "out"))


def test_a_low_bit_quant_with_mtp_layers_needs_mtp_type(tmp_path: Path) -> None:
    from harness.recipe.schema import ModelQuantize

    ctx = _context(tmp_path, source_spec=str(fake_checkpoint(tmp_path / "ck")))
    ctx.types = ["IQ2_XS"]
    ctx.section = ctx.section.model_copy(update={"quantize": ModelQuantize(types=["IQ2_XS"], mtp_type=None)})
    with pytest.raises(InputError, match="Missing importance matrix"):
        preflight.check_options(ctx, mtp_layers=1)
    preflight.check_options(ctx, mtp_layers=0)  # no MTP layers: nothing left without importance data
    ctx.section = ctx.section.model_copy(update={"quantize": ModelQuantize(types=["IQ2_XS"], mtp_type="IQ2_XS")})
    with pytest.raises(InputError, match="needs an importance matrix"):
        preflight.check_options(ctx, mtp_layers=1)


def test_the_converter_architectures_are_read_from_the_tree(tmp_path: Path) -> None:
    build = tools.Build(fake_build(tmp_path / "b"), "cpu", None, "python3")
    (build.root / "conversion" / "extra.py").write_text('@ModelBase.register("ExtraForCausalLM", "Extra2")\nclass X: ...\n')
    assert tools.supported_architectures(build) >= {"LlamaForCausalLM", "Qwen3_5ForCausalLM", "ExtraForCausalLM", "Extra2"}


# --- options ----------------------------------------------------------------------------------


def test_model_overrides_and_a_recipe_without_a_model_section(tmp_path: Path) -> None:
    from harness.recipe.load import load_recipe

    bare = load_recipe(_recipe(tmp_path))
    with pytest.raises(InputError, match="no model: section"):
        plan.effective_section(bare, plan.Options(bare.path))
    section = plan.effective_section(bare, plan.Options(bare.path, model="org/x", types=("Q5_K_M",)))
    assert section.source == "org/x" and section.quantize.types == ["Q5_K_M"]
    assert section.quantize.mtp_type == "Q8_0" and section.convert.mtp == "keep"
    assert plan.model_name(section, source.parse("org/x")) == "x"


def test_calibration_defaults_to_data_calibration_txt(tmp_path: Path) -> None:
    from harness.recipe.load import load_recipe

    recipe = load_recipe(_recipe(tmp_path))
    path = plan.calibration_path(recipe, None)
    assert path == REPO / "data" / "calibration.txt" and path.stat().st_size > 4000
    with pytest.raises(InputError, match="no such file"):
        plan.calibration_path(recipe, "data/none.txt")


# --- progress and summary ---------------------------------------------------------------------


def test_progress_follows_the_tools_output() -> None:
    progress.configure(enabled=False)
    with progress.bar("quantize") as b:
        on = progress.quantize_lines(b)
        on("[   7/ 272]                blk.0.ffn_up.weight - [  576,  1536,     1,     1], type =    f32, ")
        task = b.progress.tasks[b.task]
        assert (task.completed, task.total) == (7, 272)
    with progress.bar("imatrix") as b:
        on = progress.imatrix_lines(b)
        on("compute_imatrix: computing over 4 chunks, n_ctx=128, batch_size=2048, n_seq=16")
        on("[1]153534.4814,[2]163465.8158,[3]168074.4880,[4]164899.0782,")
        on("Final estimate: PPL = 164899.0782 +/- 3499.68802")
        assert b.progress.tasks[b.task].completed == 4 and b.seen["ppl"] == pytest.approx(164899.0782)
    with progress.bar("convert", 2) as b:
        on = progress.convert_lines(b)
        on("INFO:hf-to-gguf:token_embd.weight,           torch.float32 --> F32, shape = {576, 49152}")
        assert b.progress.tasks[b.task].completed == 1
    progress.configure(enabled=True)


def test_summary_reports_real_bits_per_weight(tmp_path: Path) -> None:
    path = models.write_qwen35(tmp_path / "m.gguf")
    with open_model(path) as gf:
        info = summary.gguf_info(gf)["gguf"]
        nbytes = sum(t.nbytes for t in gf.tensors)
        elements = sum(t.n_elements for t in gf.tensors)
    assert info["bits_per_weight"] == round(nbytes * 8 / elements, 4)
    assert 16 < info["bits_per_weight"] < 32  # F16 matrices, F32 norms
    assert info["file_type"] == "F16" and info["nextn_predict_layers"] == 1 and info["block_count"] == 5


def test_make_quantize_runs_the_harness_with_model_and_quant() -> None:
    res = subprocess.run(["make", "-n", "-C", str(REPO), "quantize", "MODEL=org/some-model", "QUANT=Q5_K_M"],
                         capture_output=True, text=True, check=True)  # fmt: skip
    line = next(x for x in res.stdout.splitlines() if " quantize " in x and "harness" in x)
    assert "recipes/demo.yaml" in line and "--model org/some-model" in line and "--type Q5_K_M" in line
    help_text = subprocess.run(["make", "-C", str(REPO), "help"], capture_output=True, text=True, check=True).stdout
    assert re.search(r"^quantize\s+.*MODEL=", help_text, re.M)


# --- a job: exit codes and checks decide, never the file's existence -----------------------------


def _job(ctx: plan.Context, code: str, output: Path) -> Any:
    import sys

    from harness.pipeline.steps.job import Job

    def verify(tmp: Path) -> dict[str, Any]:
        with open_model(tmp) as gf:  # raises InputError for anything that is not a GGUF
            return {"tensors": len(gf.tensors)}

    return Job(step="quantize", label="quantize X", output=output, tool=Path(sys.executable), inputs={},
               params={"code": code}, argv=lambda tmp: [sys.executable, "-c", code, str(tmp)], verify=verify)  # fmt: skip


def test_a_failed_tool_never_publishes_its_full_size_output(tmp_path: Path) -> None:
    from harness.errors import CommandFailed
    from harness.pipeline.steps.job import execute

    ctx = _context(tmp_path, source_spec="org/model")
    out = ctx.out / "m-X.gguf"
    out.parent.mkdir(parents=True)
    out.write_bytes(b"the previous output")
    crash = "import sys; open(sys.argv[1], 'wb').write(b'\\0' * 100000); sys.exit(1)"
    with pytest.raises(CommandFailed, match="exit code 1"):
        execute(ctx, _job(ctx, crash, out))
    garbage = "import sys; open(sys.argv[1], 'wb').write(b'\\0' * 100000)"  # exit 0, invalid file
    with pytest.raises(StepError, match=r"exited 0, but its output failed the check: m-X.gguf: not a GGUF") as err:
        execute(ctx, _job(ctx, garbage, out))
    assert err.value.exit_code == 1 and ".tmp" not in str(err.value).splitlines()[0]  # the output, not a deleted temp
    assert out.read_bytes() == b"the previous output" and not cache.sidecar_path(out).exists()
    assert sorted(p.name for p in out.parent.iterdir() if p.is_file()) == ["m-X.gguf"]

    good = models.write_qwen35(tmp_path / "tiny.gguf")
    copy = f"import shutil, sys; shutil.copyfile({str(good)!r}, sys.argv[1])"
    first = execute(ctx, _job(ctx, copy, out))
    assert not first.skipped and first.sidecar["tensors"] > 0 and out.read_bytes() == good.read_bytes()
    assert execute(ctx, _job(ctx, copy, out)).skipped  # same key, untouched output
    os.utime(out, ns=(1, 1))  # someone touched the output: made again
    assert not execute(ctx, _job(ctx, copy, out)).skipped


def test_a_new_revision_drops_files_the_old_one_had(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "snapshot_download",
                        lambda repo_id, **kw: str(fake_checkpoint(Path(kw["local_dir"]))))  # fmt: skip
    Download().run(_context(tmp_path, source_spec="org/model", revision="1" * 40))
    stale = tmp_path / "models" / "m" / "hf" / "model-00002-of-00002.safetensors"
    write_safetensors(stale, {"x": ("F32", [4])})
    ctx = _context(tmp_path, source_spec="org/model", revision="2" * 40)
    ctx.remote_files = ["config.json", "model.safetensors", "tokenizer.json"]
    [outcome] = Download().run(ctx)
    assert not outcome.skipped and not stale.exists()
    assert json.loads((ctx.out / "hf.json").read_text())["revision"] == "2" * 40


def test_a_hub_model_is_sized_before_it_is_downloaded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import types

    import huggingface_hub

    downloads: list[str] = []

    def fake_hf_hub_download(repo_id: str, filename: str, **kw: Any) -> str:
        target = Path(kw["local_dir"]) / filename
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps({"architectures": ["LlamaForCausalLM"], "num_hidden_layers": 30,
                                      "torch_dtype": "bfloat16"}))  # fmt: skip
        return str(target)

    def fake_snapshot_download(repo_id: str, **kw: Any) -> Any:
        if kw.get("dry_run"):
            sizes = {"config.json": 800, "tokenizer.json": 2_000_000, "model.safetensors": 16 * 2**30}
            return [types.SimpleNamespace(filename=f, file_size=n, will_download=True) for f, n in sizes.items()]
        downloads.append(repo_id)
        raise AssertionError("downloaded although the disk is short")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_hf_hub_download)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    # the safetensors headers on the Hub: 8 Gi parameters in BF16 (the 16 GiB of model.safetensors)
    monkeypatch.setattr(huggingface_hub, "get_safetensors_metadata",
                        lambda repo_id, **kw: types.SimpleNamespace(parameter_count={"BF16": 8 * 2**30}))  # fmt: skip
    monkeypatch.setattr(tools, "quant_types", lambda build: {"Q4_K_M": 4.89})
    fake_build(tmp_path / "builds" / "session" / "cpu")
    recipe = _recipe(tmp_path, f"model: {{source: org/big-model, revision: {'e' * 40}}}\n")
    with pytest.raises(InputError, match=r"needs about 39\.\d\d GiB \(download 16\.00 GiB, big-model-BF16\.gguf 16\.00 GiB"):
        pipeline(plan.Options(recipe, builds_dir=tmp_path / "builds", out=tmp_path / "out"), free_space=lambda _: 2**30)
    assert downloads == [] and (tmp_path / "out" / "hf" / "config.json").exists()
