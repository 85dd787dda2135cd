"""MTP architectures from the pinned tree, draft/assistant files, split sets, escaping: fast, in-process.

- the table of what each architecture's loader requires (harness/data/mtp_archs.json) is
  regenerated from the pinned llama.cpp tree (the session's sdist) and must match;
- tiny deepseek4 (MTP blocks built by the trunk's loop: the audit mirrors the trunk) and
  gemma4-assistant (a file of MTP blocks only) files (tests/mtp_models.py) and the tiny qwen35;
- split sets written by the harness itself (llama-gguf-split and the converter's are in the
  slow tests): every tool on the first shard, a later shard, a set with a shard missing.
"""

from __future__ import annotations

import json
import tarfile
from pathlib import Path
from typing import Any

import pytest

from harness.cli import main
from harness.gguf_files import mtp_table
from harness.gguf_files.split import open_model
from harness.source import sdist_upstream as offline
from tests import models, mtp_models

# the model files of the pinned tree that load NextN/MTP tensors (issue 13), by architecture name
PINNED_MTP_ARCHS = {
    "qwen35", "qwen35moe", "qwen3next", "glm4moe", "deepseek2", "deepseek32", "deepseek4", "glm-dsa", "glm5-next",
    "mimo2", "step35", "bailingmoe2", "bailingmoe3", "cohere2moe", "exaone4", "exaone-moe", "nemotron_h",
    "nemotron_h_moe", "hy_v3", "dots3note", "gemma4-assistant", "glm4",
    "mistral4",  # inherits deepseek2's loader (src/models/models.h)
}  # fmt: skip
# granite-switch repurposes n_layer_nextn for a router layer and creates no NextN tensor


def cli(capsys: pytest.CaptureFixture[str], *argv: str | Path) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def audit_json(capsys: pytest.CaptureFixture[str], *argv: str | Path) -> tuple[int, dict[str, Any]]:
    code, out, err = cli(capsys, "gguf", "audit", *argv, "--json")
    assert "Traceback" not in err
    return code, json.loads(out)


# --- the table ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pinned_tree(test_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """src/llama-arch.cpp, src/llama-model.cpp and src/models/ of the pinned tree, from the sdist."""
    out = tmp_path_factory.mktemp("llama.cpp")
    with tarfile.open(offline.sdist(test_cache / "sdist")) as tar:
        for member in tar:
            rel = member.name.split("/vendor/llama.cpp/", 1)[-1] if "/vendor/llama.cpp/" in member.name else None
            if member.isfile() and rel and (rel in ("src/llama-arch.cpp", "src/llama-model.cpp") or rel.startswith("src/models/")):
                target = out / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                source = tar.extractfile(member)
                assert source is not None
                target.write_bytes(source.read())
    return out


def test_the_mtp_table_is_what_the_pinned_tree_says(pinned_tree: Path) -> None:
    assert mtp_table.generate(pinned_tree) == mtp_table.load()["architectures"]


def test_the_table_knows_every_mtp_architecture_of_the_pinned_tree() -> None:
    table = mtp_table.load()["architectures"]
    assert set(table) == PINNED_MTP_ARCHS
    assert table["qwen35"]["blocks"] == "separate" and table["deepseek4"]["blocks"] == "trunk"
    assert table["gemma4-assistant"]["blocks"] == "assistant"
    assert table["gemma4-assistant"]["global_required"] == ["nextn.post_projection.weight", "nextn.pre_projection.weight"]
    assert (table["qwen35"]["loads_without_heads"], table["deepseek4"]["loads_without_heads"]) == (False, True)
    assert {"nextn.eh_proj.weight", "nextn.enorm.weight", "nextn.hnorm.weight"} <= set(table["nemotron_h_moe"]["required"])
    graphs = {a for a, s in table.items() if s["graph"]}
    assert "bailingmoe2" not in graphs and "glm4" not in graphs  # MTP tensors kept, no MTP graph yet
    assert {"qwen35", "deepseek4", "glm4moe", "step35", "gemma4-assistant"} <= graphs


# --- deepseek4: MTP blocks mirror the trunk ------------------------------------------------------


@pytest.fixture(scope="module")
def ds4(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("deepseek4")
    return {
        "full": mtp_models.write_deepseek4(d / "full.gguf"),
        "dropped": mtp_models.write_deepseek4(d / "dropped.gguf", mtp="dropped"),
        "partial": mtp_models.write_deepseek4(d / "partial.gguf", omit={"blk.3.ffn_gate_exps.weight", "blk.3.hc_attn_fn.weight"}),
    }  # fmt: skip


def test_deepseek4_mtp_block_is_checked_in_full(ds4: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    code, report = audit_json(capsys, ds4["full"])
    assert (code, report["status"], report["checked"]) == (0, "ok", "full")
    [layer] = report["layers"]
    assert layer["basis"].startswith("mirror of trunk block(s) 0-2") and "src/models/deepseek4.cpp" in layer["basis"]

    code, report = audit_json(capsys, ds4["partial"])  # the NextN projections are all there
    assert (code, report["status"]) == (1, "incomplete")
    assert report["problems"] == ["MTP block 3 is missing blk.3.ffn_gate_exps.weight, blk.3.hc_attn_fn.weight"]

    code, report = audit_json(capsys, ds4["dropped"])
    assert (code, report["status"]) == (1, "heads-dropped")
    assert report["problems"][0].endswith("llama.cpp loads it, without MTP")


def test_layer_to_layer_differences_are_not_required_of_the_mtp_block(ds4: dict[str, Path]) -> None:
    """Block 0 is hash-routed, blocks 1-2 have compressors: none of that is asked of the MTP block."""
    from harness.gguf_files import mtp

    with open_model(ds4["full"]) as gf:
        rule = mtp.block_rule(gf, mtp.layout(gf), 3)
    names = {n for r in rule.requirements for alt in r.alternatives for n in alt}
    assert "ffn_gate_exps.weight" in names and "nextn.eh_proj.weight" in names
    assert not names & {"ffn_gate_tid2eid.weight", "exp_probs_b.bias", "attn_compressor_kv.weight", "indexer.proj.weight"}


# --- drafts and assistants ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def drafts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("drafts")
    f = {
        "assistant": mtp_models.write_gemma4_assistant(d / "assistant.gguf"),
        "assistant-partial": mtp_models.write_gemma4_assistant(
            d / "assistant-partial.gguf", omit={"nextn.post_projection.weight", "blk.1.ffn_up.weight"}),
        "gemma4": mtp_models.write_gemma4_target(d / "gemma4.gguf"),
        "gemma4-narrow": mtp_models.write_gemma4_target(d / "gemma4-narrow.gguf", width=96),
        "gemma4-other-vocab": mtp_models.write_gemma4_target(d / "gemma4-other-vocab.gguf", n_vocab=400),
        "qwen-full": models.write_qwen35(d / "qwen-full.gguf"),
        "qwen-none": models.write_qwen35(d / "qwen-none.gguf", mtp="none"),
        "qwen-hidden": models.write_qwen35(d / "qwen-hidden.gguf", mtp="none", spec=models.Qwen35Spec(n_embd=128, n_ff=256)),
    }  # fmt: skip
    f["donor"] = d / "donor.gguf"
    assert main(["gguf", "extract-mtp", str(f["qwen-full"]), "-o", str(f["donor"])]) == 0
    return f


def test_an_assistant_is_a_draft_not_an_incomplete_model(drafts: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    code, report = audit_json(capsys, drafts["assistant"])
    assert (code, report["status"], report["kind"], report["checked"]) == (0, "draft", "draft", "full")
    assert report["problems"] == []
    code, out, _ = cli(capsys, "gguf", "audit", drafts["assistant"])
    assert code == 0 and "draft (gemma4-assistant, block_count 2, nextn_predict_layers 2, an MTP draft file" in out

    code, report = audit_json(capsys, drafts["assistant-partial"])
    assert (code, report["status"]) == (1, "incomplete")
    assert report["problems"] == [
        "MTP block 1 is missing blk.1.ffn_up.weight",
        "the draft lacks nextn.post_projection.weight, which llama.cpp's loader requires",
    ]


@pytest.mark.parametrize(
    ("draft", "target", "code", "fragment"),
    [
        ("assistant", "gemma4", 0, None),
        ("assistant", "gemma4-narrow", 1, "reads rows of 128 (gemma4-assistant.embedding_length_out or embedding_length), the target gemma4-narrow.gguf gives 96"),
        ("assistant", "gemma4-other-vocab", 1, "vocabulary size: assistant.gguf has 160 tokens, the target gemma4-other-vocab.gguf 400"),
        ("donor", "qwen-none", 0, None),
        ("donor", "qwen-hidden", 1, "blk.4.attn_q.weight has shape [256, 512], but blk.3 of the target has [128, 512]"),
        ("donor", "gemma4", 1, "architecture: donor.gguf is qwen35, the target gemma4.gguf is gemma4"),
    ],
)  # fmt: skip
def test_audit_target_checks_that_a_draft_fits(drafts, capsys, draft, target, code, fragment):
    got, report = audit_json(capsys, drafts[draft], "--target", drafts[target])
    assert got == code, report["problems"]
    assert report["target"] == str(drafts[target])
    if fragment is None:
        assert report["status"] == "draft" and report["problems"] == []
    else:
        assert report["status"] == "wrong-target"
        assert any(fragment in p for p in report["problems"]), report["problems"]


def test_an_mtp_only_donor_is_checked_against_its_targets_trunk(drafts, capsys) -> None:
    """Without a trunk of its own, a donor's MTP block is checked in full against the target's."""
    _, alone = audit_json(capsys, drafts["donor"])
    assert (alone["status"], alone["checked"]) == ("draft", "full")  # qwen35: the tree lists the whole block
    _, fitted = audit_json(capsys, drafts["donor"], "--target", drafts["qwen-none"])
    assert fitted["status"] == "draft"


# --- split sets ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def split(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    d = tmp_path_factory.mktemp("split")
    full = models.write_qwen35(d / "full.gguf")
    none = models.write_qwen35(d / "none.gguf", mtp="none")
    donor = d / "donor.gguf"
    assert main(["gguf", "extract-mtp", str(full), "-o", str(donor)]) == 0
    # the MTP model as a set of 3 (the harness's writer: the same split keys as llama-gguf-split)
    assert main(["gguf", "graft", str(none), str(donor), "-o", str(d / "mtp.gguf"), "--split-max-tensors", "30"]) == 0
    return {"dir": d, "full": full, "none": none, "donor": donor,
            "shards": sorted(d.glob("mtp-0000*-of-00003.gguf"))}  # fmt: skip


def test_the_harness_writes_a_consistent_split_set(split: dict[str, Any]) -> None:
    shards = split["shards"]
    assert [p.name for p in shards] == [f"mtp-0000{i}-of-00003.gguf" for i in (1, 2, 3)]
    assert not (split["dir"] / "mtp.gguf").exists()
    from harness.gguf_files.reader import open_gguf

    for i, path in enumerate(shards):
        with open_gguf(path) as shard:
            assert (shard.value("split.no"), shard.value("split.count"), shard.value("split.tensors.count")) == (i, 3, 69)
            assert ("qwen35.block_count" in shard.kv) == (i == 0)  # metadata in the first shard only
    with open_model(shards[1]) as whole, open_model(split["full"]) as full:
        assert whole.paths == shards
        assert {t.name: whole.data(t).tobytes() for t in whole.tensors} == {t.name: full.data(t).tobytes() for t in full.tensors}


@pytest.mark.parametrize("shard", [0, 2])
def test_every_tool_reads_the_whole_set_from_any_shard(split, capsys, tmp_path, shard) -> None:
    path = split["shards"][shard]
    code, out, err = cli(capsys, "gguf", "inspect", path, "--json")
    info = json.loads(out)
    assert code == 0 and len(info["shards"]) == 3 and len(info["tensors"]) == 69
    assert sum(t["mtp"] for t in info["tensors"]) == 14
    if shard:
        assert "mtp-00003-of-00003.gguf is shard 3 of 3: reading the set from mtp-00001-of-00003.gguf" in " ".join(err.split())
    code, report = audit_json(capsys, path)
    assert (code, report["status"], len(report["shards"])) == (0, "ok", 3)

    donor = tmp_path / "donor.gguf"
    assert cli(capsys, "gguf", "extract-mtp", path, "-o", donor)[0] == 0
    with open_model(donor) as d, open_model(split["donor"]) as expected:
        assert {t.name for t in d.tensors} == {t.name for t in expected.tensors}


def test_graft_into_a_split_base_writes_the_whole_model(split, capsys, tmp_path) -> None:
    """The base is a split set of the model without MTP: every shard's tensors reach the output."""
    with open_model(split["none"]) as none:
        n_base = len(none.tensors)
    set_dir = tmp_path / "none-set"
    set_dir.mkdir()
    from harness.gguf_files import writer
    from harness.gguf_files.split import model_kvs

    with open_model(split["none"]) as none:
        writer.write_gguf(set_dir / "none.gguf", arch="qwen35", kvs=model_kvs(none),
                          tensors=[writer.TensorSource(t, none) for t in none.tensors], alignment=none.alignment,
                          inputs=none.paths, split=writer.Split(max_tensors=25))  # fmt: skip
    first = set_dir / "none-00001-of-00003.gguf"
    code, out, _ = cli(capsys, "gguf", "graft", first, split["donor"], "-o", tmp_path / "grafted.gguf", "--json")
    result = json.loads(out)
    assert code == 0 and result["tensors"] == n_base + 14 and result["files"] == [str(tmp_path / "grafted.gguf")]
    with open_model(tmp_path / "grafted.gguf") as g, open_model(split["full"]) as full:
        assert {t.name: g.data(t).tobytes() for t in g.tensors} == {t.name: full.data(t).tobytes() for t in full.tensors}
        assert not any(k.startswith("split.") for k in g.kv)
    code, out, _ = cli(capsys, "gguf", "graft", first, split["donor"], "-o", tmp_path / "gs.gguf", "--split-max-tensors", "40", "--json")
    assert code == 0 and [Path(p).name for p in json.loads(out)["files"]] == ["gs-00001-of-00002.gguf", "gs-00002-of-00002.gguf"]
    assert audit_json(capsys, tmp_path / "gs-00002-of-00002.gguf")[1]["status"] == "ok"


def test_a_set_with_a_missing_shard_is_refused_by_every_tool(split, capsys, tmp_path) -> None:
    for p in split["shards"]:
        (tmp_path / p.name).write_bytes(p.read_bytes())
    (tmp_path / "mtp-00002-of-00003.gguf").unlink()
    for argv in (["inspect"], ["audit"], ["extract-mtp", "-o", tmp_path / "d.gguf"],
                 ["graft", split["donor"], "-o", tmp_path / "g.gguf"]):  # fmt: skip
        for shard in ("mtp-00001-of-00003.gguf", "mtp-00003-of-00003.gguf"):
            code, out, err = cli(capsys, "gguf", argv[0], tmp_path / shard, *argv[1:])
            message = " ".join(err.split())
            assert code == 2 and out == "" and "Traceback" not in err, message
            assert f"shard 2 of 3 is missing: {tmp_path / 'mtp-00002-of-00003.gguf'}" in message
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mtp-00001-of-00003.gguf", "mtp-00003-of-00003.gguf"]


def test_a_shard_of_another_set_is_refused(split, capsys, tmp_path) -> None:
    for p in split["shards"]:
        (tmp_path / p.name).write_bytes(p.read_bytes())
    (tmp_path / "mtp-00003-of-00003.gguf").write_bytes(split["shards"][1].read_bytes())  # shard 2 in shard 3's place
    code, _, err = cli(capsys, "gguf", "audit", tmp_path / "mtp-00001-of-00003.gguf")
    assert code == 2 and "mtp-00003-of-00003.gguf: split.no is 1, expected 2: a shard of another set?" in " ".join(err.split())


# --- names from files are data -------------------------------------------------------------------

HOSTILE_NAMES = ["blk.0.[/bold]x", "blk.0.[link=https://example.org]y", "blk.0.\x1b[31mred\x1b[0m", "[/x]"]


def test_names_from_files_print_literally(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """rich markup and ANSI codes in tensor names and paths reach the terminal as text (issue 11.6)."""
    import numpy as np
    from gguf import GGUFWriter

    d = tmp_path / "[/x] [link=file:///etc]dir"  # directories "[", "x] [link=file:", "etc]dir"
    d.mkdir(parents=True)
    path = d / "odd.gguf"
    w = GGUFWriter(path, "llama")
    w.add_uint32("llama.block_count", 1)
    for name in HOSTILE_NAMES:
        w.add_tensor(name, np.zeros(8, dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    code, out, err = cli(capsys, "gguf", "inspect", path)
    assert code == 0, err
    flat = "".join(out.split())
    for name in ("blk.0.[/bold]x", "blk.0.[link=https://example.org]y", "blk.0.red", "[/x]"):  # ANSI codes removed
        assert name in flat, name
    assert "\x1b" not in out and "\x1b" not in err
    assert "".join(str(path).split()) in flat  # the table's title: the path, markup and all

    bad = d / "bad.gguf"
    bad.write_bytes(b"GGUF\x03\x00\x00\x00")
    code, out, err = cli(capsys, "gguf", "audit", bad)
    assert code == 2 and f"error: {bad}: malformed GGUF" in " ".join(err.split())
