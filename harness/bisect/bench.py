"""``harness bisect --check 'bench:METRIC<VALUE'``: a measured figure crossing a threshold, decided so
noise does not steer the bisection.

The expression names the bad side: ``bench:tokens_per_second<40`` is bad where the recipe's
llama-server decodes below 40 tokens/s, ``>VALUE`` bad above it.  Each step measures the
candidate's llama-server (built as the ``smoke`` check builds it) with the bench's runner: the
built-in prompt suite, ``Settings.repeat`` interleaved rounds, deterministic sampling.  Every
prompt in every round gives one value; the bench's statistics (harness/bench/stats.py: the
two-level bootstrap interval of the median, the same MIN_PAIRS) decide against the threshold,
each value taken as a ratio to it: bad only when the whole interval lies beyond the threshold,
good when it lies on the good side, and skip (``git bisect skip``) when it straddles it.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from harness.bench import stats
from harness.errors import InputError
from harness.recipe.load import Recipe

# metric -> its unit in the answer; aliases below
METRICS = {"tokens_per_second": "tokens/s"}
ALIASES = {"tps": "tokens_per_second", "tokens/s": "tokens_per_second", "tok/s": "tokens_per_second"}
_EXPR = re.compile(r"^\s*([A-Za-z_/.]+)\s*([<>])\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*$")


@dataclass(frozen=True)
class Threshold:
    metric: str  # a key of METRICS
    op: Literal["<", ">"]  # the bad side
    value: float

    def __str__(self) -> str:
        return f"{self.metric} {self.op} {self.value:g} {METRICS[self.metric]}"


def parse(text: str) -> Threshold:
    """``METRIC<VALUE`` or ``METRIC>VALUE`` (what follows ``bench:``); InputError for anything else."""
    m = _EXPR.match(text)
    if m is None:
        raise InputError(f"--check bench:{text!r}: expected METRIC<VALUE or METRIC>VALUE, e.g. "
                         "bench:tokens_per_second<40 (bad below 40 tokens/s)", key="--check")
    name, op, value = m.group(1), m.group(2), float(m.group(3))
    metric = ALIASES.get(name, name)
    if metric not in METRICS:
        close = difflib.get_close_matches(name, [*METRICS, *ALIASES], n=1)
        raise InputError(f"--check bench:{text!r}: no metric {name!r} (one of {', '.join(METRICS)})", key="--check",
                         hint=f"did you mean {close[0]!r}?" if close else None)
    if not value > 0:
        raise InputError(f"--check bench:{text!r}: the threshold must be above 0", key="--check")
    return Threshold(metric, "<" if op == "<" else ">", value)


def decide(values: Mapping[str, Sequence[float]], threshold: Threshold) -> tuple[Literal["good", "bad", "skip"], str]:
    """prompt -> its values (one per round) -> good, bad or skip, and the figure with its interval."""
    c = stats.compare({k: [v / threshold.value for v in vs] for k, vs in values.items()})
    unit = METRICS[threshold.metric]
    if c.ratio is None or c.low is None or c.high is None:
        return "skip", f"no {threshold.metric} measured ({c.reason})"
    t = threshold.value
    figure = (f"{threshold.metric} {c.ratio * t:.2f} {unit} (95% interval {c.low * t:.2f}-{c.high * t:.2f}, "
              f"{c.pairs} samples)")
    if c.verdict == stats.UNCLEAR:
        why = c.reason or f"the interval straddles {t:g}"
        return "skip", f"{figure}: no clear difference from {t:g} ({why})"
    below = c.verdict == stats.SLOWER
    bad = below if threshold.op == "<" else not below
    return ("bad" if bad else "good"), f"{figure} {'<' if below else '>'} {t:g}"


def measure(binary: Path, recipe: Recipe, backend: str, model: Path, work: Path, *, n_predict: int = 32,
            repeat: int = 3) -> dict[str, list[float]]:
    """The candidate's llama-server, with the command line ``harness serve --spec none`` runs, on
    the built-in prompt suite: prompt -> tokens/s of each round."""
    from harness.bench import modes, prompts, runner
    from harness.serve import plan as serve_plan

    suite = prompts.load_suite()
    plan = [modes.Mode("none", ())]
    commands = {"none": serve_plan.plan(recipe, binary, backend, model, spec=[], draft=None, depth=None, extra=[]).args}
    settings = runner.Settings(n_predict=n_predict, repeat=repeat)
    _, samples = runner.run_plan(binary, model, commands, plan, suite, settings, log_dir=work / "logs")
    values: dict[str, list[float]] = {}
    for s in samples:
        values.setdefault(f"{s.category}/{s.prompt}", []).append(s.tokens_per_second)
    return values
