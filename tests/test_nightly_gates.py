"""Nightly quality gates on the session's real build: a stack patch that makes llama-quantize worse is refused.

Night 1 builds the session's base with its patch, quantizes the gate model (SmolLM2-135M) with the
candidate's llama-quantize, measures the quant's KL divergence with its llama-perplexity and adopts it;
night 2 stacks tests/quantize_patches.py's patch on top: the candidate builds and passes its smoke
checks, its quant is measurably worse, and the KLD gate refuses the bump with both figures.
Nothing is faked: the numbers are llama-perplexity's, on files the patched llama-quantize wrote.
"""

from __future__ import annotations

import fcntl
import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import session_build
from tests.conftest import REPO
from tests.quantize_patches import WORSE_QUANTIZE

pytestmark = pytest.mark.slow

BASE = "0c1e57098bba43ac29e6e3b677cdceebdd22334f"


def recipe_text(*, worse: bool) -> str:
    return f"""name: session
upstream:
  repo: https://github.com/ggml-org/llama.cpp
  ref: {BASE}
stack:
  - patch: patches/quantize-print-harness.patch
{"  - patch: patches/quantize-worse.patch" if worse else ""}
build:
  backends: [cpu]
  targets: [{", ".join(session_build.TARGETS)}]
nightly:
  smoke: [version, quantize]
  gates:
    model: models/gate.gguf
    types: [Q4_K_M]
    ctx: 128
    chunks: 2
    max_kld_increase: 0.005
    min_tokens_per_s_ratio: 0.5
    speed_rounds: 3
"""


@pytest.fixture
def gated(llama_build: Path, test_cache: Path, smollm2_gguf: Path) -> Iterator[dict[str, Path]]:
    """The session recipe (its path keys the shared source and build trees), temporarily gated; restored after.
    A lock file keeps two sessions that borrow the recipe this way from writing it at once."""
    paths = session_build.layout(test_cache)
    recipe, lock_path = paths["recipe"], paths["recipe"].with_suffix(".lock")
    with open(paths["root"] / "borrowed-recipe.lock", "w") as guard:
        fcntl.flock(guard, fcntl.LOCK_EX)
        saved = {p: p.read_bytes() for p in (recipe, lock_path) if p.exists()}
        model = paths["repo"] / "models" / "gate.gguf"
        worse = paths["repo"] / "patches" / "quantize-worse.patch"
        model.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(smollm2_gguf, model)
        worse.write_text(WORSE_QUANTIZE)
        try:
            yield paths
        finally:
            for p in (recipe, lock_path):
                if p in saved:
                    p.write_bytes(saved[p])
                else:
                    p.unlink(missing_ok=True)
            model.unlink(missing_ok=True)
            worse.unlink(missing_ok=True)


def _nightly(paths: dict[str, Path], builds: Path, report: Path, smoke_model: Path) -> subprocess.CompletedProcess[str]:
    env = session_build.env(paths["root"].parent)
    return subprocess.run([sys.executable, "-m", "harness", "nightly", str(paths["recipe"]), "--report", str(report),
                           "--builds-dir", str(builds), "--smoke-model", str(smoke_model)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=5400)  # fmt: skip


def test_a_bump_whose_quantizer_got_worse_is_refused(gated: dict[str, Path], smollm2_gguf: Path, tmp_path: Path) -> None:
    paths, builds, report = gated, tmp_path / "builds", tmp_path / "report"
    paths["recipe"].write_text(recipe_text(worse=False))
    paths["recipe"].with_suffix(".lock").unlink(missing_ok=True)
    res = _nightly(paths, builds, report, smollm2_gguf)
    assert res.returncode == 0, res.stderr[-4000:]
    first = json.loads((report / "report.json").read_text())["recipes"][0]
    good = first["gates"]["metrics"]["Q4_K_M.mean_kld"]
    assert first["status"] == "passed" and 0 < good < 0.5, first["gates"]
    assert first["gates"]["tokens_per_s"] is None  # a first night: no last good build to race against
    pointer = builds / "session" / "last-good.json"
    adopted = pointer.read_bytes()
    assert json.loads(adopted)["gates"]["metrics"]["Q4_K_M.mean_kld"] == good
    manifest = (builds / "session" / "cpu" / "manifest.json").read_bytes()

    paths["recipe"].write_text(recipe_text(worse=True))
    res = _nightly(paths, builds, report, smollm2_gguf)
    assert res.returncode == 1, res.stderr[-4000:]
    entry = json.loads((report / "report.json").read_text())["recipes"][0]
    worse = entry["gates"]["metrics"]["Q4_K_M.mean_kld"]
    print(f"gate model Q4_K_M mean KLD: {good:.6f} adopted, {worse:.6f} with the worsened llama-quantize")
    print("tokens/s against the last good build:", json.dumps(entry["gates"].get("tokens_per_s")))
    assert entry["status"] == "failed" and entry["failed_step"] == "gates" and entry["adopted"] is False
    assert worse - good > 0.005, (good, worse)
    assert [r["metric"] for r in entry["gates"]["refused"]] == ["Q4_K_M.mean_kld"]
    assert f"{worse:.6f}" in entry["error"] and f"{good:.6f}" in entry["error"] and "0.005" in entry["error"]
    speed = entry["gates"]["tokens_per_s"]  # the serving code did not change: measured, and no refusal from it
    assert speed["verdict"] in ("faster", "slower", "no clear difference") and speed["pairs"] >= 6
    assert speed["low"] <= speed["ratio"] <= speed["high"]
    # the last good build, its lock and its figures stay
    assert pointer.read_bytes() == adopted
    assert (builds / "session" / "cpu" / "manifest.json").read_bytes() == manifest
    md = (report / "report.md").read_text()
    assert "**refused**: Q4_K_M.mean_kld" in md and "tokens/s" in md
    assert (report / "gates-session.png").read_bytes()[:4] == b"\x89PNG"
