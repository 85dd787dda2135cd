"""Quality gates on an upstream bump: the recipe's gate model, quantized and measured with the candidate build.

``measure`` quantizes ``nightly.gates.model`` to each type with the candidate's llama-quantize and measures
the quants' mean KL divergence against the gate model with the candidate's llama-perplexity
(:mod:`harness.quality`).  ``compare`` holds the figures against the last good night's (``last-good.json``
beside the builds): a type whose mean KLD rose by more than ``max_kld_increase`` refuses the bump, and the
refusal names the metric, both values and the threshold.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness import console, quality, runner
from harness.errors import StepError
from harness.recipe import NightlyGates, Recipe


@dataclass(frozen=True)
class Refusal:
    metric: str
    last_good: float
    candidate: float
    threshold: float

    def __str__(self) -> str:
        return (f"{self.metric} {self.candidate:.6f} vs {self.last_good:.6f} on the last good night: "
                f"+{self.candidate - self.last_good:.6f}, above the allowed +{self.threshold:g}")  # fmt: skip


def _local_file(recipe: Recipe, key: str, value: str) -> Path:
    from harness.pipeline.plan import local_file

    return local_file(recipe, value, f"{recipe.path}: nightly.gates.{key}")


def model_of(recipe: Recipe, gates: NightlyGates) -> Path:
    return _local_file(recipe, "model", gates.model)


def text_of(recipe: Recipe, gates: NightlyGates) -> Path:
    return quality.default_text() if gates.text is None else _local_file(recipe, "text", gates.text)


def measure(recipe: Recipe, gates: NightlyGates, bin_dir: Path, work: Path) -> dict[str, float]:
    """metric -> value for the candidate build in ``bin_dir`` (``<TYPE>.mean_kld``, ``<TYPE>.p99_kld``)."""
    model, text = model_of(recipe, gates), text_of(recipe, gates)
    quantize, perplexity = bin_dir / "llama-quantize", bin_dir / quality.PERPLEXITY
    for tool in (quantize, perplexity):
        if not tool.is_file():
            raise StepError(f"nightly.gates: the candidate build has no {tool.name}",
                            hint="add llama-quantize and llama-perplexity to build.targets")  # fmt: skip
    work.mkdir(parents=True, exist_ok=True)
    quants = []
    for qtype in gates.types:
        out = work / f"gate-{qtype}.gguf"
        runner.stream([quantize, "--allow-requantize", model, out, qtype], log_path=work / f"gate-{qtype}.quantize.log")
        quants.append(out)
    settings = quality.Settings(ctx=gates.ctx, chunks=gates.chunks)
    report = quality.run(perplexity, quants, model, text, settings, work=work)
    metrics: dict[str, float] = {}
    for qtype, m in zip(gates.types, report.results, strict=True):
        metrics[f"{qtype}.mean_kld"] = m.mean_kld
        metrics[f"{qtype}.p99_kld"] = m.p99_kld
        metrics[f"{qtype}.same_top_p"] = m.same_top_p
        console.info(f"gate {qtype}: mean KLD {m.mean_kld:.6f}, 99% {m.p99_kld:.5f}, same top {100 * m.same_top_p:.2f}%")
    return metrics


def compare(candidate: dict[str, float], last_good: dict[str, Any] | None, gates: NightlyGates) -> list[Refusal]:
    """The gates the candidate breaks (none on a first night: nothing to compare with)."""
    if not last_good:
        return []
    refused = []
    for qtype in gates.types:
        metric = f"{qtype}.mean_kld"
        old, new = last_good.get(metric), candidate.get(metric)
        if isinstance(old, int | float) and new is not None and new - old > gates.max_kld_increase:
            refused.append(Refusal(metric, float(old), new, gates.max_kld_increase))
    return refused


def last_good(pointer: Path) -> dict[str, Any] | None:
    """The gate figures the last adopted build recorded in ``last-good.json`` (None: none yet)."""
    import json

    try:
        data = json.loads(pointer.read_text())
    except (OSError, ValueError):
        return None
    gates = data.get("gates") if isinstance(data, dict) else None
    metrics = gates.get("metrics") if isinstance(gates, dict) else None
    return metrics if isinstance(metrics, dict) else None
