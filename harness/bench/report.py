"""Aggregate samples per category and mode: tokens/s, draft acceptance, speedup over ``none``.

tokens/s of a (mode, category) is its total generated tokens over its total generation
time, each prompt counted at its fastest round: sampling is deterministic, so rounds
differ only by interference (other processes, which on a shared CPU can slow llama.cpp's
spinning threads tenfold), and interference only ever adds time.  Acceptance is accepted /
drafted tokens over every request.  ``best`` picks, per category, the fastest speculative
mode and depth.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from rich.table import Table

from harness import console
from harness.bench.modes import Mode
from harness.bench.runner import Sample

ALL = "all"


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
    speedup: float | None = None  # over none in the same category
    differs: int = 0  # prompts whose text differs from none's

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / self.seconds if self.seconds > 0 else 0.0

    @property
    def acceptance(self) -> float | None:
        return self.draft_n_accepted / self.draft_n if self.draft_n else None

    def to_json(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "tokens_per_second": round(self.tokens_per_second, 3),
            "acceptance": None if self.acceptance is None else round(self.acceptance, 4),
            "speedup": None if self.speedup is None else round(self.speedup, 4),
        }


@dataclass(frozen=True)
class Best:
    category: str
    mode: Mode
    row: Row

    @property
    def worth_it(self) -> bool:
        return self.row.speedup is not None and self.row.speedup > 1.0

    def to_json(self) -> dict[str, Any]:
        return {
            "category": self.category,
            "mode": self.mode.label,
            "spec": self.mode.name,
            "depth": self.mode.depth,
            "tokens_per_second": round(self.row.tokens_per_second, 3),
            "speedup": None if self.row.speedup is None else round(self.row.speedup, 4),
            "acceptance": None if self.row.acceptance is None else round(self.row.acceptance, 4),
            "worth_it": self.worth_it,
            "serve_flags": self.mode.serve_flags(),
            "llama_server_flags": self.mode.flags(),
        }


def summarise(samples: Sequence[Sample]) -> list[Row]:
    """One row per (mode, category), plus an ``all`` row per mode when there are several
    categories; modes in run order."""
    modes = list(dict.fromkeys(s.mode for s in samples))
    categories = sorted({s.category for s in samples})
    if len(categories) > 1:
        categories.append(ALL)
    rows: list[Row] = []
    for mode in modes:
        mine = [s for s in samples if s.mode == mode]
        for category in categories:
            chosen = [s for s in mine if category in (ALL, s.category)]
            if chosen:
                rows.append(_row(chosen, category))
    baseline = {r.category: r for r in rows if r.spec == "none"}
    outputs = {(s.category, s.prompt): s.output_sha for s in samples if s.spec == "none"}
    result = []
    for r in rows:
        base = baseline.get(r.category)
        speedup = r.tokens_per_second / base.tokens_per_second if base and base.tokens_per_second else None
        texts = {(s.category, s.prompt): s.output_sha for s in samples if s.mode == r.mode}
        differs = sum(
            1 for k, sha in texts.items() if r.category in (ALL, k[0]) and k in outputs and outputs[k] != sha
        )
        result.append(Row(**{**asdict(r), "speedup": speedup, "differs": differs}))
    return result


def best(rows: Sequence[Row], modes: Sequence[Mode]) -> list[Best]:
    """Per category: the speculative mode and depth with the most tokens/s (of those with accepted drafts)."""
    by_label = {m.label: m for m in modes}
    picks = []
    for category in dict.fromkeys(r.category for r in rows):
        candidates = [  # a mode that never got a draft accepted ran as none did: its difference is noise
            r for r in rows if r.category == category and r.draft_n_accepted > 0 and r.mode in by_label
        ]
        if candidates:
            top = max(candidates, key=lambda r: r.tokens_per_second)
            picks.append(Best(category, by_label[top.mode], top))
    return picks


def best_depths(rows: Sequence[Row]) -> dict[str, dict[str, int | None]]:
    """spec -> category -> the depth with the most tokens/s (None: no depth had a draft accepted)."""
    out: dict[str, dict[str, int | None]] = {}
    for spec in dict.fromkeys(r.spec for r in rows if r.spec != "none"):
        for category in dict.fromkeys(r.category for r in rows):
            mine = [r for r in rows if r.spec == spec and r.category == category and r.draft_n_accepted > 0]
            top = max(mine, key=lambda r: r.tokens_per_second) if mine else None
            out.setdefault(spec, {})[category] = top.depth if top else None
    return out


def table(rows: Sequence[Row]) -> Table:
    t = Table(title="llama-server speculative decoding", title_justify="left")
    for name, justify in (("category", "left"), ("mode", "left"), ("tok/s", "right"), ("accept", "right"),
                          ("drafted", "right"), ("speedup", "right"), ("tokens", "right")):  # fmt: skip
        t.add_column(name, justify=justify)  # type: ignore[arg-type]
    categories = list(dict.fromkeys(r.category for r in rows))
    for i, category in enumerate(sorted(categories, key=lambda c: (c == ALL, c))):
        for r in (r for r in rows if r.category == category):
            t.add_row(
                console.literal(category), console.literal(r.mode), f"{r.tokens_per_second:.1f}",
                "-" if r.acceptance is None else f"{r.acceptance:.0%}",
                str(r.draft_n) if r.spec != "none" else "-",
                "-" if r.speedup is None else f"{r.speedup:.2f}x",
                str(r.tokens) + (f" ({r.differs} differ)" if r.differs else ""),
                end_section=False,
            )  # fmt: skip
        if i < len(categories) - 1:
            t.add_section()
    return t


def recommendations(picks: Sequence[Best], *, recipe: str, model: str) -> list[str]:
    if not picks:
        return ["no speculative mode had a draft accepted: serve without one"]
    lines = []
    for b in picks:
        r = b.row
        speed = f"{r.tokens_per_second:.1f} tok/s" + (f", {r.speedup:.2f}x" if r.speedup is not None else "")
        if b.worth_it:
            serve = shlex.join(["harness", "serve", recipe, "--model", model, *b.mode.serve_flags()])
            lines.append(f"{b.category}: {b.mode.label} ({speed})")
            lines.append(f"    {serve}")
            lines.append(f"    llama-server {shlex.join(b.mode.flags())}")
        else:
            lines.append(f"{b.category}: none (best speculative mode {b.mode.label} reached {speed})")
    return lines


def _row(samples: Sequence[Sample], category: str) -> Row:
    per_prompt: dict[tuple[str, str], list[Sample]] = {}
    for s in samples:
        per_prompt.setdefault((s.category, s.prompt), []).append(s)
    fastest = [min(group, key=lambda s: s.predicted_ms) for group in per_prompt.values()]
    tokens = sum(s.predicted_n for s in fastest)
    ms = sum(s.predicted_ms for s in fastest)
    first = samples[0]
    return Row(
        mode=first.mode, spec=first.spec, depth=first.depth, category=category, prompts=len(per_prompt),
        tokens=tokens, seconds=ms / 1000.0,
        draft_n=sum(s.draft_n for s in samples), draft_n_accepted=sum(s.draft_n_accepted for s in samples),
    )  # fmt: skip
