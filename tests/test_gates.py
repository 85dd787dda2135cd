"""nightly.gates: the gate model measured with a build's real tools, compared with the last good night."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from harness import gates, nightly_report
from harness.recipe import NightlyGates, load_recipe
from tests.conftest import write_recipe


def gate_recipe(tmp_path: Path, model: Path) -> Path:
    repo = tmp_path / "repo"
    (repo / "models").mkdir(parents=True, exist_ok=True)
    shutil.copyfile(model, repo / "models" / "gate.gguf")  # inside the recipe's repository, as a recipe needs it
    return write_recipe(repo, "gated", """name: gated
nightly:
  gates: {model: models/gate.gguf, types: [Q4_K_M, Q2_K], ctx: 128, chunks: 2, max_kld_increase: 0.002}
""")


@pytest.mark.slow
def test_a_gate_refuses_a_worse_candidate_and_names_the_figures(tmp_path: Path, smollm2_gguf: Path,
                                                                 llama_bin: Path) -> None:
    recipe = load_recipe(gate_recipe(tmp_path, smollm2_gguf))
    spec = recipe.spec.nightly.gates
    assert spec is not None
    metrics = gates.measure(recipe, spec, llama_bin, tmp_path / "work")
    assert 0 < metrics["Q4_K_M.mean_kld"] < metrics["Q2_K.mean_kld"]
    assert gates.compare(metrics, None, spec) == []  # a first night: nothing to compare with
    assert gates.compare(metrics, dict(metrics), spec) == []  # the same build: every gate holds
    better = {**metrics, "Q2_K.mean_kld": metrics["Q2_K.mean_kld"] - 0.01}  # the last good night quantized better
    (refusal,) = gates.compare(metrics, better, spec)
    assert (refusal.metric, refusal.last_good, refusal.candidate, refusal.threshold) == (
        "Q2_K.mean_kld", better["Q2_K.mean_kld"], metrics["Q2_K.mean_kld"], 0.002)
    assert f"{metrics['Q2_K.mean_kld']:.6f}" in str(refusal) and "0.002" in str(refusal)


def test_the_report_keeps_each_gate_metric_and_draws_its_history(tmp_path: Path) -> None:
    def night(date: str, q4: float, refused: bool) -> dict[str, object]:
        g = {"metrics": {"Q4_K_M.mean_kld": q4}, "last_good": {"Q4_K_M.mean_kld": 0.05}, "max_kld_increase": 0.005,
             "refused": [{"metric": "Q4_K_M.mean_kld", "last_good": 0.05, "candidate": q4, "threshold": 0.005}]
             if refused else []}  # fmt: skip
        return {"date": date, "recipes": [{"recipe": "gated", "status": "failed" if refused else "passed",
                                           "failed_step": "gates" if refused else None, "error": None,
                                           "adopted": not refused, "items": [], "builds": {}, "smoke": {},
                                           "seconds": 1.0, "gates": g}]}  # fmt: skip

    nightly_report.write(tmp_path, night("2026-12-01", 0.05, False))
    files = nightly_report.write(tmp_path, night("2026-12-02", 0.09, True))
    history = [json.loads(line) for line in (tmp_path / "history.jsonl").read_text().splitlines()]
    assert [h["gates"]["Q4_K_M.mean_kld"] for h in history] == [0.05, 0.09]
    assert files["gates:gated"].read_bytes()[:4] == b"\x89PNG"
    md = files["md"].read_text()
    assert "**refused**: Q4_K_M.mean_kld 0.090000 vs last good 0.050000, allowed increase 0.005" in md


def test_gate_settings_are_validated() -> None:
    with pytest.raises(ValueError):
        NightlyGates(model="m.gguf", types=[])
    with pytest.raises(ValueError):
        NightlyGates(model="m.gguf", max_kld_increase=-1)


def test_too_few_scored_tokens_are_refused_before_anything_runs(tmp_path: Path) -> None:
    """llama-perplexity prints no KL divergence statistics under 100 scored tokens (it exits 0 all the same)."""
    from harness.recipe import ModelQuality
    from tests.conftest import run_harness

    with pytest.raises(ValueError, match="score 31 tokens"):
        ModelQuality(chunks=1, ctx=64)
    with pytest.raises(ValueError, match="score 63 tokens"):
        NightlyGates(model="m.gguf", chunks=1, ctx=128)
    assert ModelQuality(chunks=2, ctx=128).chunks == 2  # 126 tokens
    model = tmp_path / "m.gguf"
    model.write_bytes(b"GGUF")
    res = run_harness("quality", model, "--reference", model, "--bin", tmp_path, "--ctx", "64", "--chunks", "1")
    assert res.returncode == 2 and "score 31 tokens" in res.stderr, res.stderr


def test_a_quant_whose_heads_accept_far_less_than_the_references_is_flagged() -> None:
    from harness.mtp_acceptance import flags

    reference = {"1": 0.62, "3": 0.41}
    assert flags({"1": 0.60, "3": 0.38}, reference, 0.5) == []
    assert flags({"1": 0.60, "3": 0.15}, reference, 0.5) == ["depth 3: 15% vs 41% for the reference"]
    assert flags({"1": None, "3": 0.3}, reference, 0.5) == ["depth 1: 0% vs 62% for the reference"]  # nothing drafted
    assert flags({"1": 0.0, "3": 0.0}, {"1": 0.0, "3": None}, 0.5) == []  # heads that never drafted: nothing to lose
