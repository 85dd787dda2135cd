"""Is the candidate build slower than the last good one?  Tokens/s of both, paired, with the bench's statistics.

Both builds' llama-server serve the same quant of the gate model, one after the other, in alternating
order round by round (old, new; new, old; ...), each started afresh with an unmeasured warm-up, over the
bench's built-in prompts with deterministic sampling.  Every prompt in every round gives one pair: its
tokens/s under the candidate over its tokens/s under the last good build in the same round, so load that
drifts between rounds falls on both sides.  :func:`harness.bench.stats.compare` gives the median ratio,
its bootstrap interval and a verdict (faster, slower, no clear difference); the gate refuses only when
the whole interval lies below the recipe's ``min_tokens_per_s_ratio`` (:func:`below`): noise never
refuses a bump.  The last good build's own spread across rounds says whether the machine was quiet.
"""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

from harness import console
from harness.bench import prompts, runner, stats
from harness.bench.modes import Mode
from harness.serve import server

CATEGORIES = ("code", "quote")  # 6 prompts: with 3 rounds, 18 pairs (a verdict needs stats.MIN_PAIRS)
N_PREDICT = 48
SERVER_ARGS = ("-c", "2048", "-np", "1")


def measure(old_bin: Path, new_bin: Path, model: Path, *, rounds: int, log_dir: Path,
            n_predict: int = N_PREDICT) -> dict[str, Any]:  # fmt: skip
    """The paired comparison of ``new_bin``'s llama-server against ``old_bin``'s on ``model``."""
    suite = prompts.load_suite(categories=list(CATEGORIES))
    settings = runner.Settings(n_predict=n_predict, repeat=rounds)
    mode = Mode("none", ())
    speeds: dict[str, dict[str, list[float]]] = {"old": {}, "new": {}}
    log_dir.mkdir(parents=True, exist_ok=True)
    for round_ in range(rounds):
        order = ("old", "new") if round_ % 2 == 0 else ("new", "old")
        for which in order:
            binary = (old_bin if which == "old" else new_bin) / "llama-server"
            log = log_dir / f"{which}.round{round_ + 1}.log"
            with server.running_server(binary, model, SERVER_ARGS, log_path=log) as srv:
                runner.complete(srv, suite[0].text, settings, n_predict=8)  # warm-up, not measured
                for p in suite:
                    sample = runner.sample_from(mode, p, round_, runner.complete(srv, p.text, settings))
                    speeds[which].setdefault(f"{p.category}/{p.name}", []).append(sample.tokens_per_second)
    return summarize(speeds["old"], speeds["new"], rounds=rounds)


def summarize(old: dict[str, list[float]], new: dict[str, list[float]], *, rounds: int) -> dict[str, Any]:
    """The report's figures from tokens/s per prompt and round of each build (the same rounds in the same order)."""
    ratios = {k: [n / o for o, n in zip(old[k], new.get(k, []), strict=False) if o > 0 and n > 0] for k in old}
    c = stats.compare(ratios)
    spread = stats.spread(old)
    result = {"ratio": c.ratio, "low": c.low, "high": c.high, "pairs": c.pairs, "verdict": c.verdict,
              "reason": c.reason, "rounds": rounds, "spread": None if spread is None else round(spread, 4),
              "noisy": stats.noisy(spread),
              "last_good_tokens_per_s": _median(old), "candidate_tokens_per_s": _median(new)}  # fmt: skip
    if result["noisy"]:
        console.warn(f"gate tokens/s: the last good build's tokens/s vary by {spread:.0%} between rounds: "
                     f"the machine is noisy; try {stats.NOISE_ADVICE}")  # fmt: skip
    return result


def below(result: dict[str, Any], min_ratio: float) -> bool:
    """Whether the interval says the candidate is slower than ``min_ratio`` x the last good build (never on noise)."""
    high = result.get("high")
    return result.get("verdict") == stats.SLOWER and isinstance(high, int | float) and high < min_ratio


def describe(result: dict[str, Any]) -> str:
    if result.get("ratio") is None:
        return f"tokens/s: no pairs ({result.get('reason')})"
    return (f"tokens/s {result['candidate_tokens_per_s']:.1f} vs {result['last_good_tokens_per_s']:.1f}: "
            f"ratio {result['ratio']:.3f} [{result['low']:.3f}, {result['high']:.3f}] over {result['pairs']} pairs, "
            f"{result['verdict']}")  # fmt: skip


def _median(values: dict[str, list[float]]) -> float | None:
    flat = [v for vs in values.values() for v in vs]
    return round(statistics.median(flat), 3) if flat else None
