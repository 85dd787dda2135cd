"""harness gguf inspect / audit / extract-mtp / graft on real GGUF files written with gguf-py.

The models come from tests/models.py (a tiny qwen35 with llama.cpp's exact MTP tensor set),
the malformed files from tests/data/bad_gguf (see tests/bad_gguf.py).  Everything runs
in-process through ``harness.cli.main``, as the CLI does.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import tracemalloc
from pathlib import Path
from typing import Any

import gguf
import pytest

from harness.cli import main
from harness.errors import StepError
from harness.gguf_files.split import GGUFModel, open_model
from harness.gguf_files.writer import TensorSource, write_gguf
from tests import bad_gguf, models

Q4_0 = gguf.GGMLQuantizationType.Q4_0
MTP_BLOCK = 4
MTP_TENSORS = 14  # blk.4: 8 attention tensors, 3 FFN matrices, nextn.eh_proj/enorm/hnorm


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("models")
    return {
        "full": models.write_qwen35(d / "full.gguf"),
        "none": models.write_qwen35(d / "none.gguf", mtp="none"),
        "dropped": models.write_qwen35(d / "dropped.gguf", mtp="dropped"),
        "partial": models.write_qwen35(
            d / "partial.gguf", omit={"blk.4.attn_k.weight", "blk.4.nextn.hnorm.weight"}
        ),
        "low_mtp": models.write_qwen35(d / "low_mtp.gguf", mtp_type=Q4_0),
        "llama": _write(d / "llama.gguf", bad_gguf.valid()),
    }


def cli(capsys: pytest.CaptureFixture[str], *argv: str | Path) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def tensors_of(gf: GGUFModel) -> dict[str, tuple[str, tuple[int, ...], bytes]]:
    return {t.name: (t.type_name, t.shape, gf.data(t).tobytes()) for t in gf.tensors}


def kvs_of(gf: GGUFModel) -> dict[str, tuple[Any, Any, Any]]:
    return {k: (kv.type, kv.sub_type, kv.value) for k, kv in gf.kv.items() if not k.startswith("harness.")}


# -- inspect -------------------------------------------------------------------------------


def test_inspect_json_lists_every_tensor_and_marks_the_mtp_block(files, capsys):
    code, out, _ = cli(capsys, "gguf", "inspect", files["full"], "--json")
    assert code == 0
    info = json.loads(out)
    assert (info["architecture"], info["block_count"], info["nextn_predict_layers"]) == ("qwen35", 5, 1)
    assert info["trunk_layers"] == 4 and info["mtp_layers"] == [MTP_BLOCK]
    assert (info["embedding_length"], info["vocab_size"]) == (256, 260)
    by_name = {t["name"]: t for t in info["tensors"]}
    mtp = {name for name, t in by_name.items() if t["mtp"]}
    assert mtp == {name for name in by_name if name.startswith("blk.4.")}
    assert len(mtp) == MTP_TENSORS
    assert by_name["blk.4.nextn.eh_proj.weight"] | {"mtp": True} == {
        "name": "blk.4.nextn.eh_proj.weight",
        "type": "F16",
        "shape": [512, 256],
        "params": 512 * 256,
        "bytes": 512 * 256 * 2,
        "mtp": True,
    }
    assert by_name["blk.0.ssm_conv1d.weight"]["type"] == "F32"
    totals = info["totals"]
    assert totals["mtp"]["bytes"] == sum(t["bytes"] for t in info["tensors"] if t["mtp"])
    assert (
        totals["trunk"]["tensors"] + totals["mtp"]["tensors"]
        == len(info["tensors"])
        == totals["all"]["tensors"]
    )


def test_inspect_prints_a_table_and_totals_for_people(files, capsys):
    code, out, _ = cli(capsys, "gguf", "inspect", files["full"])
    assert code == 0
    assert "blk.4.nextn.eh_proj.weight" in out and "MTP" in out
    assert "nextn_predict_layers 1 (MTP blocks: 4)" in out
    assert "MTP:   14 tensors" in out


# -- audit ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("variant", "code", "status", "fragment"),
    [
        ("full", 0, "ok", None),
        ("llama", 0, "not-applicable", None),
        ("none", 1, "no-mtp-heads", "qwen35.nextn_predict_layers is absent"),
        ("dropped", 1, "heads-dropped", "'blk.4.attn_norm.weight' not found"),
        ("partial", 1, "incomplete", "blk.4.attn_k.weight, blk.4.nextn.hnorm.weight"),
    ],
)
def test_audit_statuses(files, capsys, variant, code, status, fragment):
    got, out, _ = cli(capsys, "gguf", "audit", files[variant], "--json")
    report = json.loads(out)
    assert (got, report["status"], report["ok"]) == (code, status, code == 0)
    if fragment:
        assert any(fragment in p for p in report["problems"]), report["problems"]
    else:
        assert report["problems"] == []
    got, out, _ = cli(capsys, "gguf", "audit", files[variant])
    assert got == code and status in out


def test_audit_warns_when_mtp_heads_are_quantized_below_q8_0(files, capsys):
    code, out, err = cli(capsys, "gguf", "audit", files["low_mtp"], "--json")
    assert code == 0
    (warning,) = json.loads(out)["warnings"]
    assert "below Q8_0 (Q4_0)" in warning and "blk.4.ffn_up.weight" in warning and "F16 (16.0 bits" in warning
    code, out, err = cli(capsys, "gguf", "audit", files["low_mtp"])
    assert code == 0 and "below Q8_0" in err
    assert json.loads(cli(capsys, "gguf", "audit", files["full"], "--json")[1])["warnings"] == []


# -- extract-mtp and graft -----------------------------------------------------------------


def test_extract_then_graft_restores_the_original_byte_for_byte(files, capsys, tmp_path):
    before = {name: sha256(path) for name, path in files.items()}
    donor, grafted = tmp_path / "donor.gguf", tmp_path / "grafted.gguf"

    code, out, _ = cli(capsys, "gguf", "extract-mtp", files["full"], "-o", donor, "--json")
    assert code == 0 and json.loads(out)["output"] == str(donor)
    with open_model(files["full"]) as full, open_model(donor) as d:
        # the llama.cpp MTP-only layout: globals + the MTP block, no trunk block, all metadata
        assert set(tensors_of(d)) == {"token_embd.weight", "output_norm.weight"} | {
            n for n in tensors_of(full) if n.startswith("blk.4.")
        }
        assert kvs_of(d) == kvs_of(full)
        assert d.value("harness.mtp_donor.source_sha256") == before["full"]
        expected_tensors, expected_kvs = tensors_of(full), kvs_of(full)
    assert cli(capsys, "gguf", "audit", donor)[0] == 0

    small = tmp_path / "heads-only.gguf"
    assert cli(capsys, "gguf", "extract-mtp", files["full"], "-o", small, "--heads-only")[0] == 0
    with open_model(small) as h:
        assert set(tensors_of(h)) == {n for n in expected_tensors if n.startswith("blk.4.")}
    assert small.stat().st_size < donor.stat().st_size

    for base, source in (("none", donor), ("dropped", donor), ("none", small)):
        code, out, _ = cli(capsys, "gguf", "graft", files[base], source, "-o", grafted, "--json")
        assert code == 0, out
        assert json.loads(out)["mtp_tensors"] == [n for n in expected_tensors if n.startswith("blk.4.")]
        with open_model(grafted) as g:
            assert tensors_of(g) == expected_tensors  # names, types, shapes and data bytes
            assert kvs_of(g) == expected_kvs  # block_count 5, nextn 1, recurrent_layers extended
            assert g.value("harness.mtp_graft.donor_source_sha256") == before["full"]
        assert cli(capsys, "gguf", "audit", grafted)[0] == 0

    assert {name: sha256(path) for name, path in files.items()} == before  # inputs untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["donor.gguf", "grafted.gguf", "heads-only.gguf"]


@pytest.fixture(scope="module")
def donor(files: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("donor") / "donor.gguf"
    assert main(["gguf", "extract-mtp", str(files["full"]), "-o", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def mismatched(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("mismatched")
    spec = models.Qwen35Spec
    return {
        "hidden": models.write_qwen35(d / "hidden.gguf", mtp="none", spec=spec(n_embd=128, n_ff=256)),
        "vocab": models.write_qwen35(d / "vocab.gguf", mtp="none", n_vocab=320),
        "trunk": models.write_qwen35(d / "trunk.gguf", mtp="none", spec=spec(trunk_layers=8)),
        "heads": models.write_qwen35(
            d / "heads.gguf",
            mtp="none",
            spec=spec(n_head=8, head_dim=32, rope_dims=8, rope_sections=(2, 1, 1, 0)),
        ),
        "arch": _write(d / "llama.gguf", bad_gguf.valid()),
    }


@pytest.mark.parametrize(
    ("base", "donor_name", "fragment"),
    [
        ("arch", "donor", "architecture mismatch: llama.gguf is llama, donor.gguf is qwen35"),
        (
            "hidden",
            "donor",
            "hidden size mismatch (qwen35.embedding_length): hidden.gguf has 128, donor.gguf has 256",
        ),
        ("vocab", "donor", "vocabulary size mismatch: vocab.gguf has 320 tokens, donor.gguf has 260"),
        ("trunk", "donor", "trunk layer count mismatch: trunk.gguf has 8 trunk layers"),
        ("heads", "donor", "qwen35.attention.head_count (8 vs 4)"),
        ("full", "donor", "already has complete MTP layers"),
        ("none", "none", "not an MTP donor"),
        ("none", "partial", "the donor's MTP layers are not complete"),
    ],
)
def test_graft_refuses_mismatches(files, donor, mismatched, capsys, tmp_path, base, donor_name, fragment):
    paths = files | mismatched | {"donor": donor}
    out = tmp_path / "out.gguf"
    code, _, err = cli(capsys, "gguf", "graft", paths[base], paths[donor_name], "-o", out)
    assert code == 2
    assert fragment in " ".join(err.split()), err
    assert "Traceback" not in err
    assert not out.exists() and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("variant", "fragment"), [("none", "has no MTP layers to extract"), ("dropped", "MTP heads dropped")]
)
def test_extract_refuses_files_without_complete_heads(files, capsys, tmp_path, variant, fragment):
    code, _, err = cli(capsys, "gguf", "extract-mtp", files[variant], "-o", tmp_path / "d.gguf")
    assert code == 2 and fragment in " ".join(err.split())
    assert list(tmp_path.iterdir()) == []


def test_outputs_never_overwrite_inputs_or_leave_half_files(files, donor, capsys, tmp_path):
    base = tmp_path / "base.gguf"
    base.write_bytes(files["none"].read_bytes())
    digest = sha256(base)
    code, _, err = cli(capsys, "gguf", "graft", base, donor, "-o", base)
    assert code == 2 and "refusing to overwrite an input file" in err
    assert sha256(base) == digest

    # a write that fails at the last moment leaves the previous output intact and no temp file
    target = tmp_path / "out.gguf"
    target.write_bytes(b"previous result")

    def refuse(_: GGUFModel) -> None:
        raise StepError("verification failed")

    with open_model(files["full"]) as src, pytest.raises(StepError):
        write_gguf(
            target,
            arch="qwen35",
            kvs=src.kv.values(),
            tensors=[TensorSource(t, src) for t in src.tensors],
            alignment=src.alignment,
            inputs=[src.path],
            verify=refuse,
        )
    assert target.read_bytes() == b"previous result"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["base.gguf", "out.gguf"]


def test_reader_agrees_with_gguf_py(files):
    """Our bounded reader sees exactly what the reference GGUFReader sees."""
    ref = gguf.GGUFReader(files["low_mtp"])
    with open_model(files["low_mtp"]) as ours:
        ref_kvs = {k: f.contents() for k, f in ref.fields.items() if not k.startswith("GGUF.")}
        assert list(ours.kv) == list(ref_kvs)
        for key, value in ref_kvs.items():
            assert ours.kv[key].value == (pytest.approx(value) if isinstance(value, float) else value), key
            assert ours.kv[key].type == ref.fields[key].types[0]
        assert [t.name for t in ours.tensors] == [t.name for t in ref.tensors]
        for mine, theirs in zip(ours.tensors, ref.tensors, strict=True):
            assert mine.shape == tuple(int(d) for d in theirs.shape)
            assert mine.type == int(theirs.tensor_type) and mine.nbytes == int(theirs.n_bytes)
            assert ours.data(mine).tobytes() == theirs.data.tobytes()


# -- malformed files -----------------------------------------------------------------------


def test_bad_gguf_corpus_is_generated_by_tests_bad_gguf():
    on_disk = {p.name: p.read_bytes() for p in bad_gguf.DIR.glob("*.gguf")}
    assert on_disk == {name: make() for name, (make, _) in bad_gguf.CASES.items()}


def test_the_corpus_base_file_is_valid(files, capsys):
    assert cli(capsys, "gguf", "inspect", files["llama"])[0] == 0


@pytest.mark.parametrize("name", sorted(bad_gguf.CASES))
def test_malformed_files_are_rejected_cleanly(files, capsys, tmp_path, name):
    """Every subcommand: exit 2, one line naming the file and the problem, little memory, no output."""
    path = bad_gguf.DIR / name
    out = tmp_path / "out.gguf"
    for argv in (
        ["inspect", path],
        ["audit", path, "--json"],
        ["extract-mtp", path, "-o", out],
        ["graft", path, files["full"], "-o", out],
    ):
        tracemalloc.start()
        try:
            code, stdout, err = cli(capsys, "gguf", *argv)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        message = " ".join(err.split())
        assert code == 2, (argv, message)
        assert message.startswith(f"error: {path}:"), message
        assert bad_gguf.CASES[name][1] in message
        assert "Traceback" not in err
        if "--json" in argv:  # one failure object on stdout, nothing else
            assert json.loads(stdout)["error"]["exit_code"] == 2
        else:
            assert stdout == ""
        assert peak < 16 << 20, f"{peak / 2**20:.1f} MiB allocated while rejecting {name}"
        assert not out.exists() and not os.listdir(tmp_path)


# VmHWM, not ru_maxrss: Linux folds the pre-exec address space into ru_maxrss, so a child of a big
# pytest process (late in a full run) reported the parent's ~900 MiB.
BOUNDS_SCRIPT = """
import json, resource, sys, time
from pathlib import Path
from harness.cli import main
files, out, good = [Path(p) for p in sys.argv[1:-2]], Path(sys.argv[-2]), sys.argv[-1]
slowest = 0.0
for path in files:
    for argv in (["inspect", path], ["audit", path], ["extract-mtp", path, "-o", out], ["graft", path, good, "-o", out]):
        t0 = time.monotonic()
        code = main(["gguf", *map(str, argv)])
        slowest = max(slowest, time.monotonic() - t0)
        assert code == 2, (argv, code)
print(json.dumps({"slowest": slowest, "maxrss_mib": int(next(l.split()[1] for l in open("/proc/self/status") if l.startswith("VmHWM:"))) / 1024}))
"""


def test_hostile_files_cost_little_time_and_memory(files, tmp_path):
    """In a real process: every command on every malformed file (each under 1 MB) takes under 5 s,
    and the process never holds 256 MB (numbers a 10^8 block_count once turned into 3.9 GB)."""
    bad = sorted(bad_gguf.DIR.glob("*.gguf"))
    assert all(p.stat().st_size < 1 << 20 for p in bad)
    res = subprocess.run(
        [sys.executable, "-c", BOUNDS_SCRIPT, *map(str, bad), str(tmp_path / "out.gguf"), str(files["full"])],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr[-3000:]
    measured = json.loads(res.stdout.strip().splitlines()[-1])
    assert measured["slowest"] < 5, measured
    assert measured["maxrss_mib"] < 256, measured


# -- importance matrices: both formats, told apart by content --------------------------------------


def write_legacy_imatrix(path: Path, entries: dict[str, list[float]], chunks: int = 3, dataset: str = "cal.txt") -> Path:
    """The .dat layout of IMatrixCollector::save_imatrix_legacy (tools/imatrix/imatrix.cpp)."""
    import struct

    raw = struct.pack("<i", len(entries))
    for name, values in entries.items():
        raw += struct.pack("<i", len(name)) + name.encode() + struct.pack("<ii", chunks, len(values))
        raw += struct.pack(f"<{len(values)}f", *values)
    raw += struct.pack("<i", chunks) + struct.pack("<i", len(dataset)) + dataset.encode()
    path.write_bytes(raw)
    return path


def write_gguf_imatrix(path: Path, names: list[str], *, metadata: bool = True) -> Path:
    import numpy as np

    w = gguf.GGUFWriter(path, "imatrix")
    if metadata:
        w.add_array("imatrix.datasets", ["cal.txt"])
        w.add_uint32("imatrix.chunk_count", 3)
        w.add_uint32("imatrix.chunk_size", 512)
    for name in names:
        w.add_tensor(f"{name}.in_sum2", np.ones(8, dtype=np.float32))
        w.add_tensor(f"{name}.counts", np.ones(1, dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def test_both_imatrix_formats_are_read_whatever_the_file_is_called(tmp_path):
    from harness.gguf_files import imatrix

    dat = write_legacy_imatrix(tmp_path / "m.imatrix.gguf", {"blk.0.ffn_up.weight": [1.0] * 8, "output.weight": [2.0] * 4})
    got = imatrix.read(dat)  # legacy content under a .gguf name: what an older pin writes
    assert (got.format, got.entries, got.chunks, got.datasets) == ("dat", 2, 3, ["cal.txt"])
    g = imatrix.read(write_gguf_imatrix(tmp_path / "m.dat", ["blk.0.ffn_up.weight"]))
    assert (g.format, g.entries, g.chunks) == ("gguf", 1, 3)


@pytest.mark.parametrize(
    ("make", "fragment"),
    [
        (lambda p: p.write_bytes(b"\x05\x00\x00\x00" + b"\x00" * 7), "5 entries in 11 bytes"),
        (lambda p: p.write_bytes(b"\x01\x00\x00\x00\xff\xff\xff\x7f" + bytes(12)), "a name of 2147483647 bytes"),
        (lambda p: p.write_bytes(b"\x01\x00\x00\x00\x01\x00\x00\x00x\x01\x00\x00\x00\x00\x00\x00\x40"), "claims 1073741824 values"),
        (lambda p: p.write_bytes(b"ab"), "2 bytes"),
        (lambda p: write_gguf_imatrix(p, ["a"], metadata=False), "missing imatrix metadata"),
        (lambda p: write_gguf_imatrix(p, []), "without importance data"),
    ],
)  # fmt: skip
def test_bad_imatrix_files_are_named_with_the_problem(tmp_path, make, fragment):
    from harness.errors import InputError
    from harness.gguf_files import imatrix

    path = tmp_path / "bad.imatrix"
    make(path)
    with pytest.raises(InputError, match=re.escape(fragment)):
        imatrix.read(path)


def test_a_20_mb_file_of_metadata_costs_little(tmp_path):
    """Big metadata arrays (a vocabulary's worth of strings, millions of numbers) in a real process:
    inspect and audit stay under 256 MB (such a file once cost 448 MB) and well under a minute."""
    big = tmp_path / "big.gguf"
    n_str, n_int = 800_000, 2_500_000
    strings = (bad_gguf.s("llama.strs") + bad_gguf.u32(bad_gguf.ARR) + bad_gguf.u32(bad_gguf.STR) + bad_gguf.u64(n_str)
               + (bad_gguf.u64(2) + b"ab") * n_str)  # fmt: skip
    ints = bad_gguf.s("llama.ints") + bad_gguf.u32(bad_gguf.ARR) + bad_gguf.u32(bad_gguf.I32) + bad_gguf.u64(n_int) + bytes(4 * n_int)
    big.write_bytes(bad_gguf.gguf(kvs=[*bad_gguf.BASE_KVS, strings, ints]))
    assert 18e6 < big.stat().st_size < 22e6
    script = (
        "import json, resource, sys, time; from harness.cli import main; t0 = time.monotonic(); "
        f"codes = [main(['gguf', c, {str(big)!r}, '--json']) for c in ('inspect', 'audit')]; "
        "print(json.dumps({'codes': codes, 'seconds': time.monotonic() - t0, "
        "'maxrss_mib': int(next(l.split()[1] for l in open('/proc/self/status') if l.startswith('VmHWM:'))) / 1024}))"
    )
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600)
    measured = json.loads(res.stdout.strip().splitlines()[-1])
    assert measured["codes"] == [0, 0], res.stderr[-2000:]
    assert measured["maxrss_mib"] < 256 and measured["seconds"] < 60, measured
