"""Quality gates on an upstream bump: the recipe's gate model, quantized and measured with the candidate build.

``measure`` quantizes ``nightly.gates.model`` (a local GGUF or a pinned Hub file: :mod:`harness.nightly.gate_model`)
to each type with the candidate's llama-quantize and measures the quants' mean KL divergence against the gate
model with the candidate's llama-perplexity (:mod:`harness.quality.measure`); with ``max_mtp_acceptance_drop`` also
the quants' MTP draft acceptance at depth 1 and 3 with the candidate's llama-server
(:mod:`harness.quality.mtp_acceptance`).  ``speed`` races the candidate's llama-server against the last good build's
on the first quant (:mod:`harness.nightly.gate_speed`: paired rounds, a bootstrap interval).

``compare`` holds the figures against the last good night's (``last-good.json`` beside the builds): a type
whose mean KLD rose by more than ``max_kld_increase``, whose acceptance fell by more than
``max_mtp_acceptance_drop``, or a candidate whose tokens/s interval lies wholly below ``min_tokens_per_s_ratio``
of the last good build's refuses the bump; the refusal names the metric, both values and the threshold.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness import console, runner
from harness.errors import InputError, StepError
from harness.quality import measure as quality
from harness.recipe.load import Recipe
from harness.recipe.schema import NightlyGates

INCREASE, DROP, RATIO = "increase", "drop", "ratio"
SPEED_METRIC = "tokens_per_s.ratio"


@dataclass(frozen=True)
class Refusal:
    metric: str
    last_good: float
    candidate: float
    threshold: float
    kind: str = INCREASE  # INCREASE: candidate - last_good > threshold; DROP: last_good - candidate > threshold;
    # RATIO: the interval of candidate / last_good lies below threshold (``candidate`` is the interval's top)

    def __str__(self) -> str:
        if self.kind == RATIO:
            return (f"tokens/s {self.candidate:.3f}x the last good build's at best (the top of the interval), "
                    f"below the allowed {self.threshold:g}x")  # fmt: skip
        if self.kind == DROP:
            return (f"{self.metric} {self.candidate:.4f} vs {self.last_good:.4f} on the last good night: "
                    f"-{self.last_good - self.candidate:.4f}, more than the allowed drop of {self.threshold:g}")
        return (f"{self.metric} {self.candidate:.6f} vs {self.last_good:.6f} on the last good night: "
                f"+{self.candidate - self.last_good:.6f}, above the allowed +{self.threshold:g}")  # fmt: skip

    def record(self) -> dict[str, Any]:
        return {**vars(self), "text": str(self)}


def model_of(recipe: Recipe, gates: NightlyGates) -> Path:
    from harness.nightly import gate_model

    return gate_model.path(recipe, gates)


def describe_model(gates: NightlyGates) -> str:
    from harness.nightly import gate_model

    return gate_model.describe(gates.model)


def text_of(recipe: Recipe, gates: NightlyGates) -> Path:
    from harness.pipeline.plan import local_file

    if gates.text is None:
        return quality.default_text()
    return local_file(recipe, gates.text, f"{recipe.path}: nightly.gates.text")


def measure(recipe: Recipe, gates: NightlyGates, bin_dir: Path, work: Path) -> dict[str, float]:
    """metric -> value for the candidate build in ``bin_dir`` (``<TYPE>.mean_kld``, ``<TYPE>.p99_kld``,
    ``<TYPE>.same_top_p``; with the MTP gate ``<TYPE>.mtp_acceptance@1`` and ``@3``)."""
    model, text = model_of(recipe, gates), text_of(recipe, gates)
    quantize, perplexity = bin_dir / "llama-quantize", bin_dir / quality.PERPLEXITY
    for tool in (quantize, perplexity):
        if not tool.is_file():
            raise StepError(f"nightly.gates: the candidate build has no {tool.name}",
                            hint="add llama-quantize and llama-perplexity to build.targets")  # fmt: skip
    if gates.max_mtp_acceptance_drop is not None:
        mtp_heads(model)  # before anything runs
    work.mkdir(parents=True, exist_ok=True)
    quants = []
    for qtype in gates.types:
        out = quant_path(work, qtype)
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
    if gates.max_mtp_acceptance_drop is not None:
        metrics.update(_mtp(model, dict(zip(gates.types, quants, strict=True)), bin_dir, work))
    return metrics


def quant_path(work: Path, qtype: str) -> Path:
    return work / f"gate-{qtype}.gguf"


def _mtp(model: Path, quants: dict[str, Path], bin_dir: Path, work: Path) -> dict[str, float]:
    """Draft acceptance of each quant's MTP heads with the candidate's llama-server (0.0: nothing drafted)."""
    from harness.gguf_files import mtp
    from harness.gguf_files.split import open_model
    from harness.quality import mtp_acceptance

    heads = mtp_heads(model)
    server = bin_dir / "llama-server"
    if not server.is_file():
        raise StepError("nightly.gates: the candidate build has no llama-server (the MTP gate drafts with it)",
                        hint="add llama-server to build.targets")  # fmt: skip
    found: dict[str, float] = {}
    for qtype, quant in quants.items():
        with open_model(quant) as gf:
            kept = mtp.layout(gf).nextn
        if kept < heads:
            console.warn(f"gate {qtype}: the quant kept {kept} of the gate model's {heads} MTP layers")
        accepted = mtp_acceptance.measure(server, quant, log_dir=work / f"gate-{qtype}.mtp")
        for depth, value in accepted.items():
            found[f"{qtype}.mtp_acceptance@{depth}"] = 0.0 if value is None else value
        console.info(f"gate {qtype}: MTP acceptance " + ", ".join(f"depth {d} {v if v is not None else 0:.2%}"
                                                                  for d, v in accepted.items()))  # fmt: skip
    return found


def mtp_heads(model: Path) -> int:
    """The gate model's MTP layers; InputError when it has none (the MTP gate has nothing to measure)."""
    from harness.gguf_files import mtp
    from harness.gguf_files.split import open_model

    with open_model(model) as gf:
        heads = mtp.layout(gf).nextn
    if not heads:
        raise InputError(f"nightly.gates.max_mtp_acceptance_drop: the gate model {model.name} has no MTP layers "
                         "(nextn_predict_layers is 0)", hint="name a gate model with MTP heads, or drop the key")
    return heads


def speed(recipe: Recipe, gates: NightlyGates, bin_dir: Path, last_good_bin: Path | None, work: Path) -> dict[str, Any] | None:
    """The candidate's tokens/s against the last good build's on the first gate quant (None: no last good build)."""
    from harness.nightly import gate_speed

    if gates.min_tokens_per_s_ratio is None or last_good_bin is None or not (last_good_bin / "llama-server").is_file():
        return None
    if not (bin_dir / "llama-server").is_file():
        raise StepError("nightly.gates: the candidate build has no llama-server (the tokens/s gate serves with it)",
                        hint="add llama-server to build.targets")  # fmt: skip
    quant = quant_path(work, gates.types[0])
    result = gate_speed.measure(last_good_bin, bin_dir, quant, rounds=gates.speed_rounds, log_dir=work / "speed")
    result["model"] = quant.name
    console.info(f"gate {gate_speed.describe(result)}")
    return result


def compare(candidate: dict[str, float], last_good: dict[str, Any] | None, gates: NightlyGates,
            speed: dict[str, Any] | None = None) -> list[Refusal]:
    """The gates the candidate breaks (none on a first night: nothing to compare with)."""
    from harness.nightly import gate_speed

    refused = []
    if speed is not None and gates.min_tokens_per_s_ratio is not None and gate_speed.below(speed, gates.min_tokens_per_s_ratio):
        refused.append(Refusal(SPEED_METRIC, 1.0, float(speed["high"]), gates.min_tokens_per_s_ratio, RATIO))
    if not last_good:
        return refused
    for qtype in gates.types:
        metric = f"{qtype}.mean_kld"
        old, new = last_good.get(metric), candidate.get(metric)
        if isinstance(old, int | float) and new is not None and new - old > gates.max_kld_increase:
            refused.append(Refusal(metric, float(old), new, gates.max_kld_increase))
    if gates.max_mtp_acceptance_drop is not None:
        for metric, new in candidate.items():
            old = last_good.get(metric)
            if ".mtp_acceptance@" in metric and isinstance(old, int | float) and old - new > gates.max_mtp_acceptance_drop:
                refused.append(Refusal(metric, float(old), new, gates.max_mtp_acceptance_drop, DROP))
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
