"""The model pipeline end to end: real checkpoints, the real converter, llama-imatrix, llama-quantize, llama-server.

- SmolLM2-135M: its HF checkpoint is rebuilt from the real GGUF (tests/hf_models.py), then
  ``harness pipeline`` converts it (F32), computes an importance matrix and quantizes it; the
  rebuilt F32 file quantized back the way the original was made gives the original tensors
  byte for byte; llama-server answers with the result; a second run does nothing.
- A tiny Qwen3.5 with one MTP layer (transformers >= 5, ``mtp.*`` added by hand):
  ``convert.mtp`` keep / drop / separate, an IQ2_XS trunk whose MTP block stays at Q8_0
  (without the rule llama-quantize aborts with "Missing importance matrix"), and
  llama-server drafting with the MTP layer (``--spec-type draft-mtp``, or ``-md`` with the
  separate head).

The build is the session's (tests/session_build.py), or with ``HARNESS_TEST_LLAMA_BIN`` a
root of symlinks to those binaries plus the converter of ``HARNESS_TEST_CONVERTER_DIR``.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests

from harness.gguf_files import audit
from harness.gguf_files.split import GGUFModel, open_model
from harness.pipeline import tools
from tests import hf_models
from tests.conftest import run_harness, write_recipe
from tests.test_gguf_server import qwen35_vocab  # noqa: F401  (a fixture)

pytestmark = pytest.mark.slow
CONVERTER_FILES = (tools.CONVERTER, "conversion", "gguf-py")
# keys the converter at 0c1e570 writes that the one SmolLM2's GGUF was made with did not
NEWER_CONVERTER_KEYS = {"llama.attention.key_length", "llama.attention.value_length"}


@dataclass(frozen=True)
class Build:
    builds_dir: Path
    recipe_name: str
    root: Path

    @property
    def bin(self) -> Path:
        return self.root / "bin"


@pytest.fixture(scope="session")
def pipeline_build(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Build:
    env_bin = os.environ.get("HARNESS_TEST_LLAMA_BIN")
    if not env_bin:
        root: Path = request.getfixturevalue("llama_build")
        return Build(root.parent.parent, root.parent.name, root)
    tree = Path(os.environ.get("HARNESS_TEST_CONVERTER_DIR") or Path(env_bin).parent)
    if not (tree / tools.CONVERTER).exists():
        pytest.fail("HARNESS_TEST_LLAMA_BIN needs HARNESS_TEST_CONVERTER_DIR: a llama.cpp tree with convert_hf_to_gguf.py")
    builds = tmp_path_factory.mktemp("builds")
    root = builds / "session" / "cpu"
    root.mkdir(parents=True)
    (root / "bin").symlink_to(Path(env_bin).resolve())
    for name in CONVERTER_FILES:
        (root / name).symlink_to((tree / name).resolve())
    return Build(builds, "session", root)


def harness(build: Build, *args: str | Path) -> dict[str, Any]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    res = run_harness(*args, "--builds-dir", build.builds_dir, "--json", env=env, timeout=1200)
    assert res.returncode == 0, f"exit {res.returncode}\n{res.stderr[-4000:]}"
    report: dict[str, Any] = json.loads(res.stdout)
    return report


def recipe(tmp_path: Path, build: Build, model: str) -> Path:
    if "quality:" not in model:  # the quality step has its own tests (test_quality.py)
        model += "  quality: {enabled: false}\n"
    return write_recipe(tmp_path / "repo", build.recipe_name, f"name: {build.recipe_name}\nmodel:\n{model}")


def labels(report: dict[str, Any]) -> list[tuple[str, bool]]:
    return [(s["label"], s["skipped"]) for s in report["steps"]]


@contextlib.contextmanager
def server(build: Build, model: Path, *args: str | Path, log: Path) -> Iterator[str]:
    from harness.serve.server import running_server

    with running_server(build.bin / "llama-server", model, ["-c", "1024", *map(str, args)], log_path=log) as srv:
        yield srv.url


def complete(url: str, prompt: str, n: int = 24) -> dict[str, Any]:
    r = requests.post(url + "/completion", json={"prompt": prompt, "n_predict": n, "temperature": 0}, timeout=300)
    r.raise_for_status()
    result: dict[str, Any] = r.json()
    return result


def tensor_types(path: Path) -> dict[str, str]:
    with open_model(path) as gf:
        return {t.name: t.type_name for t in gf.tensors}


def test_the_converter_of_the_build_registers_the_test_models(pipeline_build: Build) -> None:
    known = tools.supported_architectures(tools.Build(pipeline_build.root, "cpu", None, "python3"))
    assert {"LlamaForCausalLM", "Qwen3_5ForCausalLM", "Qwen3NextForCausalLM"} <= known


def test_the_quant_type_table_comes_from_the_builds_llama_quantize(pipeline_build: Build) -> None:
    table = tools.quant_types(tools.Build(pipeline_build.root, "cpu", None, "python3"))
    assert table["Q4_K_M"] == table["Q4_K"] == pytest.approx(4.9, abs=0.05) and table["IQ2_XS"] == 2.31
    assert "Q2_0" in table and "COPY" in table  # Q2_0: newer than the gguf package on PyPI


def test_the_builds_gguf_py_knows_types_the_installed_package_does_not(pipeline_build: Build) -> None:
    from harness.gguf_files import gguf_py

    module = gguf_py.constants(pipeline_build.root / "gguf-py")
    table = gguf_py.type_table(module)
    assert table[42] == ("Q2_0", 64, 18)
    assert {"qwen35", "deepseek4", "glm4moe"} <= gguf_py.mtp_architectures(module)


# --- SmolLM2 ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def smollm2_hf(tmp_path_factory: pytest.TempPathFactory, smollm2_gguf: Path) -> Path:
    return hf_models.smollm2_from_gguf(smollm2_gguf, tmp_path_factory.mktemp("hf") / "SmolLM2-135M-Instruct")


@dataclass(frozen=True)
class Run:
    recipe: Path
    out: Path
    report: dict[str, Any]


@pytest.fixture(scope="module")
def smol(tmp_path_factory: pytest.TempPathFactory, smollm2_hf: Path, pipeline_build: Build) -> Run:
    tmp = tmp_path_factory.mktemp("smol")
    r = recipe(tmp, pipeline_build, f"""  source: {smollm2_hf}
  name: smollm2
  convert: {{outtype: f32}}
  imatrix: {{chunks: 3, ctx: 256}}
  quantize: {{types: [Q4_K_M]}}
""")
    out = tmp / "models" / "smollm2"
    return Run(r, out, harness(pipeline_build, "pipeline", r, "--out", out))


def test_smollm2_is_converted_measured_and_quantized(smol: Run) -> None:
    assert labels(smol.report) == [("convert f32", False), ("imatrix", False), ("quantize Q4_K_M", False)]
    _, imatrix, quant = smol.report["steps"]
    assert Path(imatrix["output"]).stat().st_size > 0
    assert math.isfinite(imatrix["sidecar"]["ppl"]) and imatrix["sidecar"]["ppl"] > 1
    for step in smol.report["steps"]:
        side = json.loads(Path(step["output"] + ".json").read_text())
        assert side["key"] and side["temp_output"] in " ".join(side["command"])  # the exact command, as run
        assert all(len(i["sha256"]) == 64 for i in side["inputs"].values())
        assert side["output"]["sha256"] and side["seconds"] > 0 and side["tool"]["backend"] == "cpu"
    assert "--imatrix" in quant["sidecar"]["command"]
    assert not [p for p in smol.out.iterdir() if ".tmp" in p.name]


def test_the_summary_shows_real_bits_per_weight(smol: Run) -> None:
    rows = {Path(r["file"]).name: r for r in smol.report["summary"]}
    q = rows["smollm2-Q4_K_M.gguf"]
    with open_model(smol.out / "smollm2-Q4_K_M.gguf") as gf:
        real = sum(t.nbytes for t in gf.tensors) * 8 / sum(t.n_elements for t in gf.tensors)
        kinds = {t.type_name for t in gf.tensors}
    assert q["bits_per_weight"] == pytest.approx(real, abs=1e-3)
    # hidden 576 is not a multiple of 256: most K-quant tensors fell back to wider types
    assert real > 5.5 and kinds - {"Q4_K", "Q6_K", "F32"}
    assert rows["smollm2-F32.gguf"]["bits_per_weight"] == pytest.approx(32.0)


def assert_same_model(made: GGUFModel, original: GGUFModel) -> None:
    """Same tensors (names, types, shapes, bytes) and the same metadata values.

    Not the same file: llama-quantize at 0c1e570 moves general.file_type to the end of the
    metadata (gguf_set_val_* removes and re-appends a key) and writes tensors in its own
    order, and this converter writes two keys more than the one SmolLM2's file was made with.
    """
    assert {t.name for t in made.tensors} == {t.name for t in original.tensors}
    for t in original.tensors:
        m = made.tensor(t.name)
        assert m is not None and (m.type, m.shape) == (t.type, t.shape), t.name
        assert np.array_equal(made.data(m), original.data(t)), t.name
    assert set(made.kv) - set(original.kv) == NEWER_CONVERTER_KEYS and set(original.kv) <= set(made.kv)
    for key, kv in original.kv.items():
        assert (made.kv[key].type, made.kv[key].value) == (kv.type, kv.value), key


def test_the_rebuilt_checkpoint_quantizes_back_to_the_original(
    smol: Run, smollm2_gguf: Path, pipeline_build: Build, tmp_path: Path
) -> None:
    out = tmp_path / "again.Q4_1.gguf"
    subprocess.run(
        [pipeline_build.bin / "llama-quantize", "--pure", "--token-embedding-type", "q8_0",
         smol.out / "smollm2-F32.gguf", out, "Q4_1"],
        check=True, capture_output=True,
    )  # fmt: skip
    with open_model(out) as made, open_model(smollm2_gguf) as original:
        assert_same_model(made, original)


def test_llama_server_answers_with_the_quant(smol: Run, pipeline_build: Build, tmp_path: Path) -> None:
    with server(pipeline_build, smol.out / "smollm2-Q4_K_M.gguf", log=tmp_path / "server.log") as url:
        result = complete(url, "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n", n=12)
    assert result["tokens_predicted"] > 0 and "Paris" in result["content"]


def test_a_second_run_with_nothing_changed_does_no_work(smol: Run, pipeline_build: Build) -> None:
    stamps = {p.name: p.stat().st_mtime_ns for p in smol.out.glob("*.gguf")}
    report = harness(pipeline_build, "pipeline", smol.recipe, "--out", smol.out)
    assert report["did_nothing"] and all(skipped for _, skipped in labels(report))
    assert [label for label, _ in labels(report)] == ["convert f32", "imatrix", "quantize Q4_K_M"]
    assert {p.name: p.stat().st_mtime_ns for p in smol.out.glob("*.gguf")} == stamps
    # one more type: only that quant is made
    report = harness(pipeline_build, "quantize", smol.recipe, "--out", smol.out, "--type", "Q4_K_M", "--type", "Q5_0")
    assert labels(report) == [("convert f32", True), ("imatrix", True), ("quantize Q4_K_M", True),
                              ("quantize Q5_0", False)]  # fmt: skip


# --- a tiny Qwen3.5 with MTP ----------------------------------------------------------------


@pytest.fixture(scope="module")
def qwen_hf(tmp_path_factory: pytest.TempPathFactory, qwen35_vocab: Path) -> Path:  # noqa: F811
    return hf_models.tiny_qwen35_mtp(qwen35_vocab, tmp_path_factory.mktemp("hf") / "tiny-qwen35-mtp")


def qwen_recipe(tmp: Path, build: Build, qwen_hf: Path, mtp: str, types: str) -> Path:
    return recipe(tmp, build, f"""  source: {qwen_hf}
  name: tiny-qwen35
  convert: {{outtype: bf16, mtp: {mtp}}}
  imatrix: {{chunks: 2, ctx: 128}}
  quantize: {{types: [{types}], mtp_type: Q8_0}}
""")


def mtp_matrices(types: dict[str, str], block: int = 4) -> dict[str, str]:
    return {n: t for n, t in types.items() if n.startswith(f"blk.{block}.") and t not in ("F32",)}


def test_mtp_keep_with_an_iq2_trunk(qwen_hf: Path, pipeline_build: Build, tmp_path: Path) -> None:
    r = qwen_recipe(tmp_path, pipeline_build, qwen_hf, "keep", "IQ2_XS")
    out = tmp_path / "out"
    report = harness(pipeline_build, "pipeline", r, "--out", out)
    assert labels(report) == [("convert bf16", False), ("imatrix", False), ("quantize IQ2_XS", False)]
    quant = out / "tiny-qwen35-IQ2_XS.gguf"
    with open_model(quant) as gf:
        a = audit.audit(gf)
    assert (a.status, a.block_count, a.nextn) == ("ok", 5, 1)
    types = tensor_types(quant)
    mtp = mtp_matrices(types)
    assert len(mtp) == 8 and set(mtp.values()) == {"Q8_0"}, mtp  # 4 attention + 3 FFN + nextn.eh_proj
    assert "IQ2_XS" in {types[f"blk.{i}.ffn_up.weight"] for i in range(4)}
    side = report["steps"][2]["sidecar"]
    assert side["params"]["tensor_type_rules"] == [r"^(blk\.(4)\.|nextn\.|mtp\.)=q8_0"]
    assert side["mtp_type_mismatches"] == [] and side["audit"] == "ok"

    # what the rule prevents: llama-imatrix never ran the MTP layer, so without the rule ...
    res = subprocess.run(
        [pipeline_build.bin / "llama-quantize", "--imatrix", out / "tiny-qwen35.imatrix.gguf",
         out / "tiny-qwen35-BF16.gguf", tmp_path / "no-rule.gguf", "IQ2_XS"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert res.returncode != 0
    assert "Missing importance matrix for tensor blk.4.attn_k.weight" in res.stdout + res.stderr

    with server(pipeline_build, quant, "--spec-type", "draft-mtp", log=tmp_path / "server.log") as url:
        result = complete(url, "Hello world", n=8)
    assert "draft-mtp" in result["generation_settings"]["speculative.types"].split(",")
    assert result["timings"]["draft_n"] > 0


def test_mtp_drop_converts_without_the_mtp_layer(qwen_hf: Path, pipeline_build: Build, tmp_path: Path) -> None:
    r = qwen_recipe(tmp_path, pipeline_build, qwen_hf, "drop", "Q4_K_M")
    report = harness(pipeline_build, "convert", r, "--out", tmp_path / "out")
    [step] = report["steps"]
    assert "--no-mtp" in step["sidecar"]["command"]
    with open_model(Path(step["output"])) as gf:
        a = audit.audit(gf)
        names = [t.name for t in gf.tensors]
    assert (a.status, a.block_count, a.nextn) == ("no-mtp-heads", 4, 0)
    assert not [n for n in names if n.startswith("blk.4.")]


def test_mtp_separate_makes_a_head_for_draft_model_serving(
    qwen_hf: Path, pipeline_build: Build, tmp_path: Path
) -> None:
    r = qwen_recipe(tmp_path, pipeline_build, qwen_hf, "separate", "Q4_K_M")
    out = tmp_path / "out"
    report = harness(pipeline_build, "pipeline", r, "--out", out)
    assert [label for label, _ in labels(report)] == [
        "convert bf16", "convert bf16 (mtp-head)", "imatrix", "quantize Q4_K_M", "quantize MTP head Q8_0",
    ]  # fmt: skip
    main_types = tensor_types(out / "tiny-qwen35-Q4_K_M.gguf")
    assert not mtp_matrices(main_types)
    with open_model(out / "tiny-qwen35-Q4_K_M.gguf") as gf:
        assert (audit.audit(gf).block_count, audit.audit(gf).nextn) == (4, 0)
    head = out / "mtp-tiny-qwen35-Q8_0.gguf"
    with open_model(head) as gf:
        a = audit.audit(gf)
    assert (a.status, a.block_count, a.nextn) == ("draft", 5, 1)  # an MTP-only head: a draft file for -md
    head_types = tensor_types(head)
    assert set(mtp_matrices(head_types).values()) == {"Q8_0"} and "token_embd.weight" in head_types
    assert not [n for n in head_types if n.startswith(("blk.0.", "blk.3."))]  # the head only

    with server(pipeline_build, out / "tiny-qwen35-Q4_K_M.gguf", "-md", head, log=tmp_path / "server.log") as url:
        result = complete(url, "Hello world", n=8)
    assert "draft-mtp" in result["generation_settings"]["speculative.types"].split(",")
    assert result["timings"]["draft_n"] > 0


def test_mtp_keep_as_split_sets_made_by_the_converter_and_llama_quantize(
    qwen_hf: Path, pipeline_build: Build, tmp_path: Path
) -> None:
    """The converter's own --split-max-tensors, then llama-quantize --keep-split: both outputs are
    sets under the outputs' shard names, audited as wholes, and llama-server drafts with the quant."""
    r = recipe(tmp_path, pipeline_build, f"""  source: {qwen_hf}
  name: tiny-qwen35
  convert: {{outtype: bf16, mtp: keep, split_max_tensors: 30}}
  quantize: {{types: [Q4_K_M], mtp_type: Q8_0, keep_split: true}}
""")
    out = tmp_path / "out"
    report = harness(pipeline_build, "pipeline", r, "--out", out)
    assert labels(report) == [("convert bf16", False), ("quantize Q4_K_M", False)]
    converted = sorted(out.glob("tiny-qwen35-BF16*.gguf"))
    quants = sorted(out.glob("tiny-qwen35-Q4_K_M*.gguf"))
    assert [p.name for p in converted] == [f"tiny-qwen35-BF16-0000{i}-of-00003.gguf" for i in (1, 2, 3)]
    assert [p.name for p in quants] == [f"tiny-qwen35-Q4_K_M-0000{i}-of-00003.gguf" for i in (1, 2, 3)]
    assert "--split-max-tensors" in report["steps"][0]["sidecar"]["command"]
    assert report["steps"][1]["sidecar"]["command"][-3] == str(converted[0])  # the set, by its first shard
    for shard in (converted[2], quants[1]):
        with open_model(shard) as gf:
            a = audit.audit(gf)
        assert (a.status, a.block_count, a.nextn, len(a.shards)) == ("ok", 5, 1, 3)
    types: dict[str, str] = {}
    for q in quants:
        with open_model(q) as gf:
            types = {t.name: t.type_name for t in gf.tensors}
    assert set(mtp_matrices(types).values()) == {"Q8_0"}
    with server(pipeline_build, quants[0], "--spec-type", "draft-mtp", log=tmp_path / "server.log") as url:
        result = complete(url, "Hello world", n=8)
    assert result["timings"]["draft_n"] > 0
