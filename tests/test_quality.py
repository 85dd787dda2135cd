"""KL divergence per quant with the real llama-perplexity on real small models (SmolLM2-135M, Gemma 3 270M).

Each model goes through the pipeline as a GGUF source with three types whose quality is known to be
ordered in KL divergence (Q8_0 < Q4_K_M < IQ2_M; for Gemma 3, whose only small GGUF is itself Q4_K_M,
Q8_0 < Q3_K_M < IQ2_M: its Q4_K_M requantizes to the same blocks, KLD 0); the quality step measures
them against the source over two chunks of 128 tokens of data/evaluation.txt, seconds per quant.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from harness.errors import InputError
from harness.quality import measure as quality
from tests.conftest import run_harness
from tests.test_gguf_server import qwen35_vocab  # noqa: F401  (a fixture)
from tests.test_pipeline import Build, harness, labels, pipeline_build, qwen_hf, recipe  # noqa: F401  (fixtures)

pytestmark = pytest.mark.slow
TYPES = {"smollm2": ["Q8_0", "Q4_K_M", "IQ2_M"], "gemma3": ["Q8_0", "Q3_K_M", "IQ2_M"]}  # best to worst
SETTINGS = quality.Settings(ctx=128, chunks=2)
VOCAB = {"smollm2": 49152, "gemma3": 262144}


def model_text(source: Path, name: str) -> str:
    return f"""  source: {source}
  name: {name}
  imatrix: {{chunks: 2, ctx: 128}}
  quantize: {{types: [{", ".join(TYPES[name])}]}}
  quality: {{chunks: {SETTINGS.chunks}, ctx: {SETTINGS.ctx}}}
"""


@pytest.fixture(scope="module", params=["smollm2", "gemma3"])
def measured(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
             pipeline_build: Build) -> dict[str, Any]:  # noqa: F811
    name = request.param
    source: Path = request.getfixturevalue(f"{name}_gguf")
    tmp = tmp_path_factory.mktemp(name)
    r = recipe(tmp, pipeline_build, model_text(source, name))
    out = tmp / "models" / name
    return {"name": name, "source": source, "recipe": r, "out": out,
            "report": harness(pipeline_build, "pipeline", r, "--out", out)}  # fmt: skip


def kld(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """type -> the quality record, from the summary rows of the quants."""
    return {str(r["type"]): r["quality"] for r in report["summary"] if r["step"] == "quantize"}


def test_kl_divergence_orders_the_quants(measured: dict[str, Any]) -> None:
    q = kld(measured["report"])
    best, middle, worst = TYPES[measured["name"]]
    assert set(q) == {best, middle, worst} and all(q.values()), q
    assert 0 < q[best]["mean_kld"] < q[middle]["mean_kld"] < q[worst]["mean_kld"], q
    assert q[best]["same_top_p"] > q[worst]["same_top_p"]
    for rec in q.values():
        assert rec["p99_kld"] >= rec["mean_kld"] and 0 < rec["same_top_p"] <= 1 and rec["ppl_ratio"] > 0
    assert q[worst]["ppl_ratio"] > q[best]["ppl_ratio"]


def test_the_reference_logits_have_the_size_bound_and_the_png_is_drawn(measured: dict[str, Any]) -> None:
    out, name = measured["out"], measured["name"]
    base = out / f"{name}.kld-base.bin"
    assert quality.chunks_in(base) == SETTINGS.chunks
    assert base.stat().st_size == quality.base_bytes(ctx=SETTINGS.ctx, chunks=SETTINGS.chunks, vocab=VOCAB[name])
    steps = [s for s in measured["report"]["steps"] if s["step"] == "quality"]
    assert [s["label"] for s in steps] == ["quality: reference logits", *(f"quality {t}" for t in TYPES[name])]
    assert steps[0]["sidecar"]["kld_base"]["reference"] == str(measured["source"])
    assert (out / f"{name}.quality.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for t in TYPES[name]:  # each quant's figures are a file of their own, and its sidecar names the quant
        saved = json.loads((out / f"{name}-{t}.kld.json").read_text())
        assert saved == quality.Measure.model_validate(saved).model_dump(mode="json")
        assert saved["file"] == str(out / f"{name}-{t}.gguf")


def test_a_second_run_measures_nothing_again(measured: dict[str, Any], pipeline_build: Build) -> None:  # noqa: F811
    again = harness(pipeline_build, "pipeline", measured["recipe"], "--out", measured["out"])
    assert again["did_nothing"] and all(skipped for _, skipped in labels(again))
    assert kld(again) == kld(measured["report"])


def test_harness_quality_on_files_the_pipeline_did_not_make(measured: dict[str, Any], pipeline_build: Build,  # noqa: F811
                                                            tmp_path: Path) -> None:
    out, name = measured["out"], measured["name"]
    files = [out / f"{name}-{t}.gguf" for t in ("IQ2_M", "Q8_0")]
    png = tmp_path / "q.png"
    res = run_harness("quality", *files, "--reference", measured["source"], "--bin", pipeline_build.bin,
                      "--ctx", SETTINGS.ctx, "--chunks", SETTINGS.chunks, "--work", tmp_path / "work",
                      "--png", png, "--json", timeout=900)  # fmt: skip
    assert res.returncode == 0, res.stderr[-3000:]
    printed = json.loads(res.stdout)
    assert printed.pop("ok") is True  # every --json result says ok (console.emit_json); the rest is the report
    report = quality.Report.model_validate(printed)
    assert [Path(m.file).name for m in report.results] == [f.name for f in files]
    iq2, q8 = report.results
    assert q8.mean_kld < iq2.mean_kld and q8.size > iq2.size and q8.bits_per_weight > iq2.bits_per_weight  # type: ignore[operator]
    pipeline_figures = kld(measured["report"])
    assert iq2.mean_kld == pytest.approx(pipeline_figures["IQ2_M"]["mean_kld"], rel=0.05, abs=1e-4)
    assert report.base.size == (tmp_path / "work" / f"{measured['source'].stem}.kld-base.bin").stat().st_size
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_the_disk_preflight_counts_the_reference_logits(measured: dict[str, Any], pipeline_build: Build,  # noqa: F811
                                                         tmp_path: Path) -> None:
    from harness.pipeline.plan import Options
    from harness.pipeline.run import pipeline

    options = Options(recipe=measured["recipe"], out=tmp_path / "fresh", builds_dir=pipeline_build.builds_dir)
    with pytest.raises(InputError) as err:
        pipeline(options, free_space=lambda _p: 1 << 20)
    assert f"{measured['name']}.kld-base.bin" in err.value.message


def test_mtp_acceptance_per_quant_for_a_model_with_mtp_layers(qwen_hf: Path, pipeline_build: Build,  # noqa: F811
                                                               tmp_path: Path) -> None:
    r = recipe(tmp_path, pipeline_build, f"""  source: {qwen_hf}
  name: tiny-qwen35
  convert: {{outtype: bf16, mtp: keep}}
  quantize: {{types: [Q8_0, Q4_K_M], mtp_type: Q8_0}}
  quality: {{chunks: 2, ctx: 128}}
""")
    out = tmp_path / "out"
    report = harness(pipeline_build, "pipeline", r, "--out", out)
    steps = {s["label"]: s for s in report["steps"] if s["step"] == "quality"}
    assert list(steps) == ["quality: reference logits", "quality: reference MTP acceptance",
                           "quality Q8_0", "quality Q4_K_M"]  # fmt: skip
    reference = steps["quality: reference MTP acceptance"]["sidecar"]["quality"]["mtp"]
    assert set(reference) == {"1", "3"}
    drafted = [json.loads((out / f"tiny-qwen35-{t}.kld.json").read_text()) for t in ("Q8_0", "Q4_K_M")]
    for figures in drafted:  # llama-server drafted with the quant's own heads at both depths
        assert set(figures["mtp"]) == {"1", "3"}
        assert all(v is not None and 0 <= v <= 1 for v in figures["mtp"].values()), figures["mtp"]
        assert isinstance(figures["mtp_flags"], list)
    rows = {str(row["type"]): row["quality"] for row in report["summary"] if row["step"] == "quantize"}
    assert rows["Q8_0"]["mtp"] == drafted[0]["mtp"]
