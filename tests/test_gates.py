"""nightly.gates: the gate model measured with a build's real tools, compared with the last good night."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from harness.errors import InputError
from harness.nightly import gates
from harness.nightly import report as nightly_report
from harness.recipe.load import load_recipe
from harness.recipe.schema import NightlyGates
from tests.conftest import write_recipe
from tests.test_gguf_server import qwen35_vocab  # noqa: F401  (a fixture)


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


@pytest.mark.slow
def test_the_mtp_gate_measures_the_candidates_heads_and_refuses_a_drop(tmp_path: Path, llama_bin: Path,
                                                                       qwen35_vocab: Path) -> None:  # noqa: F811
    """The tiny Qwen3.5 with MTP layers (tests/models.py, the real Qwen3.5 vocabulary), quantized by the
    build's llama-quantize, drafting with its own heads in the build's llama-server.  Rigged, its next
    token (and so its heads' draft) is always the same token: every draft is accepted."""
    from tests import models

    repo = tmp_path / "repo"
    (repo / "models").mkdir(parents=True)
    models.write_qwen35(repo / "models" / "gate.gguf", vocab=qwen35_vocab, mtp="full", rigged=True)
    recipe = load_recipe(write_recipe(repo, "mtpgate", """name: mtpgate
nightly:
  gates: {model: models/gate.gguf, types: [Q8_0], ctx: 128, chunks: 2, max_mtp_acceptance_drop: 0.05}
"""))
    spec = recipe.spec.nightly.gates
    assert spec is not None
    metrics = gates.measure(recipe, spec, llama_bin, tmp_path / "work")
    accepted = {k: v for k, v in metrics.items() if ".mtp_acceptance@" in k}
    print("tiny qwen35 Q8_0 MTP acceptance:", accepted, "mean KLD:", metrics["Q8_0.mean_kld"])
    assert set(accepted) == {"Q8_0.mtp_acceptance@1", "Q8_0.mtp_acceptance@3"}
    assert accepted == {"Q8_0.mtp_acceptance@1": 1.0, "Q8_0.mtp_acceptance@3": 1.0}  # rigged: every draft holds
    assert gates.compare(metrics, dict(metrics), spec) == []
    (refusal,) = gates.compare({**metrics, "Q8_0.mtp_acceptance@3": 0.9}, metrics, spec)
    assert refusal.metric == "Q8_0.mtp_acceptance@3" and refusal.kind == gates.DROP

    no_heads = repo / "models" / "plain.gguf"
    models.write_qwen35(no_heads, vocab=qwen35_vocab, mtp="none")
    plain = NightlyGates(model="models/plain.gguf", max_mtp_acceptance_drop=0.05)
    with pytest.raises(InputError, match="has no MTP layers"):  # said before anything is quantized
        gates.measure(recipe, plain, llama_bin, tmp_path / "plain")
    assert not (tmp_path / "plain").exists()


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
    from harness.recipe.schema import ModelQuality
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
    from harness.quality.mtp_acceptance import flags

    reference = {"1": 0.62, "3": 0.41}
    assert flags({"1": 0.60, "3": 0.38}, reference, 0.5) == []
    assert flags({"1": 0.60, "3": 0.15}, reference, 0.5) == ["depth 3: 15% vs 41% for the reference"]
    assert flags({"1": None, "3": 0.3}, reference, 0.5) == ["depth 1: 0% vs 62% for the reference"]  # nothing drafted
    assert flags({"1": 0.0, "3": 0.0}, {"1": 0.0, "3": None}, 0.5) == []  # heads that never drafted: nothing to lose


def test_an_mtp_acceptance_drop_beyond_the_threshold_refuses() -> None:
    spec = NightlyGates(model="m.gguf", max_mtp_acceptance_drop=0.05)
    before = {"Q4_K_M.mean_kld": 0.05, "Q4_K_M.mtp_acceptance@1": 0.70, "Q4_K_M.mtp_acceptance@3": 0.45}
    assert gates.compare({**before, "Q4_K_M.mtp_acceptance@3": 0.41}, before, spec) == []  # within 0.05
    (refusal,) = gates.compare({**before, "Q4_K_M.mtp_acceptance@3": 0.30}, before, spec)
    assert (refusal.metric, refusal.last_good, refusal.candidate, refusal.threshold) == (
        "Q4_K_M.mtp_acceptance@3", 0.45, 0.30, 0.05)
    assert str(refusal) == ("Q4_K_M.mtp_acceptance@3 0.3000 vs 0.4500 on the last good night: -0.1500, "
                            "more than the allowed drop of 0.05")  # fmt: skip
    # without the key the heads are not gated
    assert gates.compare({**before, "Q4_K_M.mtp_acceptance@3": 0.0}, before, NightlyGates(model="m.gguf")) == []


# tokens/s per prompt and round of the last good build (old) and the candidate (new), recorded shapes
OLD = {"code/fix": [50.0, 52.0, 49.0], "code/write": [48.0, 47.0, 50.0], "quote/email": [51.0, 50.0, 52.0]}


def _scaled(factors: dict[str, list[float]]) -> dict[str, list[float]]:
    return {k: [o * f for o, f in zip(OLD[k], factors[k], strict=True)] for k in OLD}


def test_the_tokens_per_s_gate_refuses_only_a_clear_slowdown_beyond_the_threshold() -> None:
    from harness.bench import stats
    from harness.nightly import gate_speed

    spec = NightlyGates(model="m.gguf", min_tokens_per_s_ratio=0.9)
    noisy = gate_speed.summarize(OLD, _scaled({"code/fix": [0.6, 1.3, 0.9], "code/write": [1.2, 0.7, 0.95],
                                               "quote/email": [0.8, 1.25, 0.7]}), rounds=3)  # fmt: skip
    assert noisy["verdict"] == stats.UNCLEAR and noisy["low"] < 0.9 < noisy["high"]
    assert gates.compare({}, None, spec, noisy) == []  # noise never refuses, even when the median is low
    slower = gate_speed.summarize(OLD, _scaled({k: [0.95, 0.96, 0.94] for k in OLD}), rounds=3)
    assert slower["verdict"] == stats.SLOWER and slower["high"] < 1.0
    assert gates.compare({}, None, spec, slower) == []  # slower, but within the allowed 0.9
    much = gate_speed.summarize(OLD, _scaled({k: [0.70, 0.72, 0.69] for k in OLD}), rounds=3)
    (refusal,) = gates.compare({}, None, spec, much)
    assert refusal.metric == "tokens_per_s.ratio" and refusal.candidate == much["high"] < 0.9
    assert "below the allowed 0.9x" in str(refusal)
    assert gate_speed.describe(much).startswith("tokens/s 35.") and "slower" in gate_speed.describe(much)
    few = gate_speed.summarize({"code/fix": [50.0, 50.0]}, {"code/fix": [20.0, 20.0]}, rounds=2)
    assert few["verdict"] == stats.UNCLEAR and gates.compare({}, None, spec, few) == []  # 2 pairs decide nothing


def test_the_report_says_the_tokens_per_s_figure_its_spread_and_verdict(tmp_path: Path) -> None:
    from harness.nightly import gate_speed

    spec = NightlyGates(model="m.gguf", min_tokens_per_s_ratio=0.9)
    much = gate_speed.summarize(OLD, _scaled({k: [0.70, 0.72, 0.69] for k in OLD}), rounds=3)
    refused = [r.record() for r in gates.compare({}, None, spec, much)]
    metrics = {"Q4_K_M.mean_kld": 0.05, "Q4_K_M.mtp_acceptance@1": 0.7, "tokens_per_s.ratio": much["ratio"]}
    g = {"metrics": metrics, "last_good": None, "tokens_per_s": much, "refused": refused}
    night = {"date": "2026-12-03", "recipes": [{"recipe": "gated", "status": "failed", "failed_step": "gates",
                                                "error": None, "adopted": False, "items": [], "builds": {},
                                                "smoke": {}, "seconds": 1.0, "gates": g}]}  # fmt: skip
    files = nightly_report.write(tmp_path, night)
    md = files["md"].read_text()
    assert f"ratio {much['ratio']:.3f} (95% interval {much['low']:.3f}-{much['high']:.3f}, 9 pairs over 3 rounds" in md
    assert "**slower**" in md and f"- **refused**: {refused[0]['text']}" in md
    assert files["gates:gated"].read_bytes()[:4] == b"\x89PNG"


def hub_gate_recipe(directory: Path, sha256: str, revision: str) -> Path:
    return write_recipe(directory, "hubgate", f"""name: hubgate
upstream: {{repo: https://github.com/ggml-org/llama.cpp, ref: 0c1e57098bba43ac29e6e3b677cdceebdd22334f}}
build: {{backends: [cpu]}}
nightly:
  gates:
    model: {{source: example/gate-GGUF, file: gate-F16.gguf, revision: '{revision}', sha256: '{sha256}'}}
""")


def test_the_gate_model_is_a_pinned_hub_file_and_a_mismatch_is_exit_2(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    import hashlib
    import os

    from harness.nightly import gate_model
    from tests import hf_hub
    from tests.conftest import run_harness

    data = b"GGUF" + bytes(range(256)) * 64
    digest = hashlib.sha256(data).hexdigest()
    with hf_hub.serve() as served:
        sha = served.add("example/gate-GGUF", {"gate-F16.gguf": data})
        env = {**{k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "HF_TOKEN")},
               **served.env(tmp_path / "hf-home")}  # fmt: skip
        good_recipe = hub_gate_recipe(tmp_path / "good", digest, sha)
        good = load_recipe(good_recipe)
        assert good.spec.nightly.gates is not None
        # in a process of its own: huggingface_hub reads HF_ENDPOINT and HF_HOME when it is first imported
        fetched = subprocess.run(
            [sys.executable, "-c", "import sys; from harness.nightly import gate_model; from harness.recipe import load; r = load.load_recipe(sys.argv[1]); "
             "print(gate_model.path(r, r.spec.nightly.gates))", str(good_recipe)],
            env=env, capture_output=True, text=True, timeout=120, check=False)
        assert fetched.returncode == 0, fetched.stderr
        path = Path(fetched.stdout.strip().splitlines()[-1])
        assert path.read_bytes() == data and f"GET /example/gate-GGUF/resolve/{sha}/gate-F16.gguf" in served.requests
        assert gate_model.describe(good.spec.nightly.gates.model) == f"example/gate-GGUF/gate-F16.gguf@{sha[:12]}"

        wrong = hub_gate_recipe(tmp_path / "wrong", "0" * 64, sha)  # the file is in the cache now: checked all the same
        res = run_harness("nightly", wrong, "--report", tmp_path / "report", env=env)
        assert res.returncode == 2, res.stderr
        assert f"has sha256 {digest}, the recipe pins {'0' * 64}" in res.stderr
        assert not (tmp_path / "report").exists()  # refused before any work
        gone = hub_gate_recipe(tmp_path / "gone", digest, "1" * 40)  # a commit the Hub does not have
        res = run_harness("nightly", gone, "--report", tmp_path / "report", env=env)
        assert res.returncode == 2 and "the Hub has no example/gate-GGUF/gate-F16.gguf@111111111111" in res.stderr, res.stderr
    with pytest.raises(ValueError, match="revision"):
        NightlyGates.model_validate({"model": {"source": "a/b", "file": "x.gguf", "revision": "main", "sha256": digest}})
