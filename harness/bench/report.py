"""Aggregate samples per category and mode: tokens/s, speculation metrics, a paired verdict over ``none``.

tokens/s of a (mode, category) is its generated tokens over its generation time, each prompt
counted at its median round.  The speedup is not the ratio of those: it is the median of the
paired ratios (each prompt in each round against the baseline's same prompt in the same round)
with a bootstrap interval and a verdict (:mod:`harness.bench.stats`).  A speculative mode that
drafted nothing ran as ``none`` did: it gets no speedup, whatever the clock said.

The speculation metrics do not depend on the machine's load: acceptance (accepted / drafted
tokens), accepted tokens per drafting step (llama-server's verification steps, from its log),
and target forward passes per generated token ((generated - accepted) / generated).
``best`` picks, per category, the mode and depth with the highest median ratio among those
called faster.
"""

from __future__ import annotations

import shlex
import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

from rich.table import Table

from harness import console
from harness.bench import stats
from harness.bench.modes import Mode
from harness.bench.runner import Sample

ALL = "all"
NOTHING_DRAFTED = "drafted nothing"


@dataclass(frozen=True)
class Row:
    mode: str
    spec: str
    depth: int | None
    category: str
    prompts: int
    tokens: int
    seconds: float
    draft_n: int
    draft_n_accepted: int
    generated: int = 0  # tokens over every round (what the speculation metrics count)
    draft_steps: int = 0  # verification steps, from llama-server's log, of the requests whose line gives them
    steps_accepted: int = 0  # the tokens those requests accepted
    speedup: float | None = None  # the median paired ratio over none
    low: float | None = None  # its interval
    high: float | None = None
    pairs: int = 0
    verdict: str | None = None  # stats.VERDICTS; None for the baseline itself
    reason: str | None = None
    spread: float | None = None  # the baseline's own spread across rounds (none's rows)
    differs: int = 0  # prompts whose text differs from none's

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / self.seconds if self.seconds > 0 else 0.0

    @property
    def acceptance(self) -> float | None:
        return self.draft_n_accepted / self.draft_n if self.draft_n else None

    @property
    def accepted_per_step(self) -> float | None:
        return self.steps_accepted / self.draft_steps if self.draft_steps else None

    @property
    def passes_per_token(self) -> float | None:
        """Target forward passes per generated token: every pass yields one token plus the drafts it accepts."""
        if not self.generated or self.spec == "none":
            return None
        return (self.generated - self.draft_n_accepted) / self.generated

    def to_json(self) -> dict[str, Any]:
        def r(x: float | None, n: int = 4) -> float | None:
            return None if x is None else round(x, n)

        return {
            **asdict(self),
            "tokens_per_second": round(self.tokens_per_second, 3),
            "acceptance": r(self.acceptance),
            "accepted_per_step": r(self.accepted_per_step),
            "passes_per_token": r(self.passes_per_token),
            "speedup": r(self.speedup), "low": r(self.low), "high": r(self.high), "spread": r(self.spread),
        }  # fmt: skip


@dataclass(frozen=True)
class Best:
    """Per category: the mode to serve (None: no speculative mode was clearly faster) and the closest one."""

    category: str
    mode: Mode | None
    row: Row | None  # the pick's row, else the speculative row with the highest median ratio

    @property
    def worth_it(self) -> bool:
        return self.mode is not None

    def to_json(self) -> dict[str, Any]:
        r = self.row
        return {
            "category": self.category,
            "mode": self.mode.label if self.mode else "none",
            "spec": self.mode.name if self.mode else "none",
            "depth": self.mode.depth if self.mode else None,
            "closest": r.mode if r else None,
            "tokens_per_second": round(r.tokens_per_second, 3) if r else None,
            "speedup": r.to_json()["speedup"] if r else None,
            "low": r.to_json()["low"] if r else None,
            "high": r.to_json()["high"] if r else None,
            "verdict": r.verdict if r else None,
            "acceptance": r.to_json()["acceptance"] if r else None,
            "worth_it": self.worth_it,
            "serve_flags": self.mode.serve_flags() if self.mode else ["--spec", "none"],
            "llama_server_flags": self.mode.flags() if self.mode else [],
        }


def summarise(samples: Sequence[Sample]) -> list[Row]:
    """One row per (mode, category), plus an ``all`` row per mode when there are several
    categories; modes in run order."""
    modes = list(dict.fromkeys(s.mode for s in samples))
    categories = sorted({s.category for s in samples})
    if len(categories) > 1:
        categories.append(ALL)
    base = {(s.category, s.prompt, s.repeat): s for s in samples if s.spec == "none"}
    outputs = {(s.category, s.prompt): s.output_sha for s in samples if s.spec == "none"}
    rows: list[Row] = []
    for mode in modes:
        mine = [s for s in samples if s.mode == mode]
        for category in categories:
            chosen = [s for s in mine if category in (ALL, s.category)]
            if not chosen:
                continue
            row = _row(chosen, category)
            texts = {(s.category, s.prompt): s.output_sha for s in chosen}
            differs = sum(1 for k, sha in texts.items() if k in outputs and outputs[k] != sha)
            if row.spec == "none":
                by_prompt: dict[str, list[float]] = {}
                for s in chosen:
                    by_prompt.setdefault(f"{s.category}/{s.prompt}", []).append(s.tokens_per_second)
                rows.append(replace(row, spread=stats.spread(by_prompt)))
                continue
            if row.draft_n == 0:
                rows.append(replace(row, verdict=stats.UNCLEAR, reason=NOTHING_DRAFTED, differs=differs))
                continue
            ratios: dict[str, list[float]] = {}
            for s in chosen:
                b = base.get((s.category, s.prompt, s.repeat))
                if b is not None and b.tokens_per_second > 0:
                    # a request that drafted nothing did none's work: whatever the clock said, its ratio is 1
                    ratio = s.tokens_per_second / b.tokens_per_second if s.draft_n else 1.0
                    ratios.setdefault(f"{s.category}/{s.prompt}", []).append(ratio)
            c = stats.compare(ratios)
            rows.append(replace(row, speedup=c.ratio, low=c.low, high=c.high, pairs=c.pairs, verdict=c.verdict,
                                reason=c.reason, differs=differs))  # fmt: skip
    return rows


def baseline_spread(rows: Sequence[Row]) -> float | None:
    """The baseline's spread over every prompt (its ``all`` row, or its only row)."""
    mine = [r for r in rows if r.spec == "none"]
    top = next((r for r in mine if r.category == ALL), mine[0] if len(mine) == 1 else None)
    if top is not None:
        return top.spread
    spreads = [r.spread for r in mine if r.spread is not None]
    return statistics.median(spreads) if spreads else None


def idle_drift(samples: Sequence[Sample]) -> float | None:
    """The median ratio over none of the speculative requests that drafted nothing: identical work, so
    anything but 1.0 is the machine's load shifting between servers (an A/A check); None: no such request."""
    base = {(s.category, s.prompt, s.repeat): s.tokens_per_second for s in samples if s.spec == "none"}
    ratios = [
        s.tokens_per_second / base[s.category, s.prompt, s.repeat]
        for s in samples
        if s.spec != "none" and not s.draft_n and base.get((s.category, s.prompt, s.repeat))
    ]
    return statistics.median(ratios) if ratios else None


def noise_lines(rows: Sequence[Row], repeat: int, drift: float | None = None) -> list[str]:
    """What the reader must know about the machine's noise before trusting a verdict."""
    cv = baseline_spread(rows)
    lines = []
    if repeat < 2 or cv is None:
        lines.append("one round: the baseline's spread was not measured (--repeat 3 measures it)")
    elif stats.noisy(cv):
        lines.append(f"the machine is too noisy to decide: none's tokens/s varies {cv:.0%} between rounds "
                     f"(over {stats.NOISY_CV:.0%}); try {stats.NOISE_ADVICE}")  # fmt: skip
    else:
        lines.append(f"baseline spread between rounds: {cv:.1%}")
    if drift is not None and abs(drift - 1.0) > stats.NOISY_CV:
        lines.append(f"the machine is too noisy to decide: requests that drafted nothing (none's work) ran at "
                     f"{drift:.2f}x none's speed, so load shifted between servers; try {stats.NOISE_ADVICE}")  # fmt: skip
    return lines


def per_slot(samples: Sequence[Sample]) -> dict[str, dict[str, dict[str, Any]]]:
    """mode -> slot -> drafted, accepted, acceptance (slots as llama-server's log names them)."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for s in samples:
        if s.slot is None or not s.draft_n:
            continue
        d = out.setdefault(s.mode, {}).setdefault(str(s.slot), {"drafted": 0, "accepted": 0})
        d["drafted"] += s.draft_n
        d["accepted"] += s.draft_n_accepted
    for slots in out.values():
        for d in slots.values():
            d["acceptance"] = round(d["accepted"] / d["drafted"], 4)
    return out


def best(rows: Sequence[Row], modes: Sequence[Mode]) -> list[Best]:
    """Per category: among the modes called faster, the one with the highest median ratio."""
    by_label = {m.label: m for m in modes}
    picks = []
    for category in dict.fromkeys(r.category for r in rows):
        tried = [r for r in rows if r.category == category and r.spec != "none" and r.mode in by_label]
        if not tried:
            continue
        faster = [r for r in tried if r.verdict == stats.FASTER]
        if faster:
            top = max(faster, key=lambda r: r.speedup or 0.0)
            picks.append(Best(category, by_label[top.mode], top))
        else:
            measured = [r for r in tried if r.speedup is not None]
            closest = max(measured, key=lambda r: r.speedup or 0.0) if measured else None
            picks.append(Best(category, None, closest))
    return picks


def best_depths(rows: Sequence[Row]) -> dict[str, dict[str, int | None]]:
    """spec -> category -> the depth with the highest median ratio among those called faster (None: none was)."""
    out: dict[str, dict[str, int | None]] = {}
    for spec in dict.fromkeys(r.spec for r in rows if r.spec != "none"):
        for category in dict.fromkeys(r.category for r in rows):
            mine = [r for r in rows if r.spec == spec and r.category == category and r.verdict == stats.FASTER]
            top = max(mine, key=lambda r: r.speedup or 0.0) if mine else None
            out.setdefault(spec, {})[category] = top.depth if top else None
    return out


def table(rows: Sequence[Row]) -> Table:
    t = Table(title="llama-server speculative decoding (speedup: median paired ratio over none, 95 % interval)",
              title_justify="left")  # fmt: skip
    for name, justify in (("category", "left"), ("mode", "left"), ("tok/s", "right"), ("accept", "right"),
                          ("acc/step", "right"), ("passes/tok", "right"), ("drafted", "right"),
                          ("speedup", "right"), ("verdict", "left"), ("tokens", "right")):  # fmt: skip
        t.add_column(name, justify=justify)  # type: ignore[arg-type]
    categories = list(dict.fromkeys(r.category for r in rows))
    for i, category in enumerate(sorted(categories, key=lambda c: (c == ALL, c))):
        for r in (r for r in rows if r.category == category):
            t.add_row(
                console.literal(category), console.literal(r.mode), f"{r.tokens_per_second:.1f}",
                _fmt(r.acceptance, "{:.0%}"), _fmt(r.accepted_per_step, "{:.2f}"), _fmt(r.passes_per_token, "{:.2f}"),
                str(r.draft_n) if r.spec != "none" else "-", speedup_text(r),
                "-" if r.verdict is None else r.verdict + (f" ({r.reason})" if r.reason else ""),
                str(r.tokens) + (f" ({r.differs} differ)" if r.differs else ""),
                end_section=False,
            )  # fmt: skip
        if i < len(categories) - 1:
            t.add_section()
    return t


def speedup_text(r: Row) -> str:
    if r.speedup is None:
        return "-"
    return f"{r.speedup:.2f}x" + (f" [{r.low:.2f}, {r.high:.2f}]" if r.low is not None and r.high is not None else "")


def _fmt(value: float | None, form: str) -> str:
    return "-" if value is None else form.format(value)


def recommendations(picks: Sequence[Best], *, recipe: str, model: str) -> list[str]:
    if not picks:
        return ["no speculative mode ran: serve without one"]
    lines = []
    for b in picks:
        r = b.row
        if b.mode is not None and r is not None:
            serve = shlex.join(["harness", "serve", recipe, "--model", model, *b.mode.serve_flags()])
            lines.append(f"{b.category}: {b.mode.label} ({r.tokens_per_second:.1f} tok/s, {speedup_text(r)}, faster)")
            lines.append(f"    {serve}")
            lines.append(f"    llama-server {shlex.join(b.mode.flags())}")
        elif r is not None:
            lines.append(f"{b.category}: none (no mode was clearly faster; closest {r.mode}: {speedup_text(r)}, "
                         f"{r.verdict})")  # fmt: skip
        else:
            lines.append(f"{b.category}: none (no speculative mode drafted anything)")
    return lines


def _row(samples: Sequence[Sample], category: str) -> Row:
    per_prompt: dict[tuple[str, str], list[Sample]] = {}
    for s in samples:
        per_prompt.setdefault((s.category, s.prompt), []).append(s)
    typical = [sorted(group, key=lambda s: s.predicted_ms)[(len(group) - 1) // 2] for group in per_prompt.values()]
    logged = [s for s in samples if s.draft_steps]
    first = samples[0]
    return Row(
        mode=first.mode, spec=first.spec, depth=first.depth, category=category, prompts=len(per_prompt),
        tokens=sum(s.predicted_n for s in typical), seconds=sum(s.predicted_ms for s in typical) / 1000.0,
        generated=sum(s.predicted_n for s in samples),
        draft_n=sum(s.draft_n for s in samples), draft_n_accepted=sum(s.draft_n_accepted for s in samples),
        draft_steps=sum(s.draft_steps or 0 for s in logged), steps_accepted=sum(s.draft_n_accepted for s in logged),
    )  # fmt: skip
