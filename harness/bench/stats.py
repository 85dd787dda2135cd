"""Paired comparisons against the baseline: a median ratio, its bootstrap interval, a verdict.

Every prompt in every round gives one pair: its tokens/s under a mode over its tokens/s under
the baseline (``none``) in the same round.  Rounds are interleaved (each starts every mode's
server afresh), so load that drifts between rounds falls on both sides of a pair.

The interval is a two-level percentile bootstrap of the median ratio: prompts are resampled
with replacement, then each drawn prompt's rounds (Davison & Hinkley's scheme for grouped
data), so a difference carried by one prompt, or by one lucky round, does not make a verdict.
The generator is seeded: the same samples give the same interval.

A mode is ``faster`` or ``slower`` only when its interval excludes 1.0, and only from at least
MIN_PAIRS pairs (with fewer, even every pair on one side is not significant by a sign test at
5 %); otherwise ``no clear difference``.  The baseline's own spread (median over prompts of its
tokens/s's coefficient of variation across rounds) says whether the machine was quiet enough;
above NOISY_CV (pyperf warns at the same 10 %) the report says so.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

FASTER = "faster"
SLOWER = "slower"
UNCLEAR = "no clear difference"
VERDICTS = (FASTER, SLOWER, UNCLEAR)

LEVEL = 0.95
RESAMPLES = 4000
SEED = 20240607
MIN_PAIRS = 6
NOISY_CV = 0.10
NOISE_ADVICE = (
    "fewer threads (llama-server -t N after --, leaving cores for the rest of the machine), "
    "pinning (taskset -c), a quieter machine, or more rounds (--repeat)"
)


@dataclass(frozen=True)
class Comparison:
    """A mode against the baseline over paired samples."""

    ratio: float | None  # the median of the paired ratios (tokens/s of the mode / of the baseline)
    low: float | None  # the bootstrap interval of that median, at LEVEL
    high: float | None
    pairs: int
    verdict: str  # one of VERDICTS
    reason: str | None = None  # why there is no verdict, when there is a reason beyond the interval


def compare(
    ratios: Mapping[str, Sequence[float]], *, seed: int = SEED, resamples: int = RESAMPLES, level: float = LEVEL
) -> Comparison:
    """``ratios``: prompt -> its paired ratios, one per round."""
    import numpy as np

    groups = [np.asarray([r for r in rs if r > 0], dtype=float) for rs in ratios.values()]
    groups = [g for g in groups if g.size]
    pairs = sum(g.size for g in groups)
    if not pairs:
        return Comparison(None, None, None, 0, UNCLEAR, "no pairs")
    median = float(np.median(np.concatenate(groups)))
    rng = np.random.default_rng(seed)
    width = max(g.size for g in groups)
    table = np.full((len(groups), width), np.nan)
    for i, g in enumerate(groups):
        table[i, : g.size] = g
    counts = np.array([g.size for g in groups])
    prompts = rng.integers(0, len(groups), size=(resamples, len(groups)))
    rounds = (rng.random((resamples, len(groups), width)) * counts[prompts][:, :, None]).astype(int)
    drawn = table[prompts[:, :, None], rounds]
    medians = np.nanmedian(drawn.reshape(resamples, -1), axis=1)
    tail = (1.0 - level) / 2
    low, high = (float(x) for x in np.quantile(medians, [tail, 1.0 - tail]))
    verdict, reason = decide(low, high, pairs)
    return Comparison(median, low, high, pairs, verdict, reason)


def decide(low: float, high: float, pairs: int) -> tuple[str, str | None]:
    if pairs < MIN_PAIRS:
        return UNCLEAR, f"{pairs} pairs, a verdict needs {MIN_PAIRS}"
    if low > 1.0:
        return FASTER, None
    if high < 1.0:
        return SLOWER, None
    return UNCLEAR, None


def spread(values: Mapping[str, Sequence[float]]) -> float | None:
    """The median over prompts of the coefficient of variation of ``values`` across rounds (None: one round)."""
    cvs = [
        statistics.stdev(vs) / statistics.fmean(vs)
        for vs in values.values()
        if len(vs) >= 2 and statistics.fmean(vs) > 0
    ]
    return statistics.median(cvs) if cvs else None


def noisy(cv: float | None) -> bool:
    return cv is not None and cv > NOISY_CV
