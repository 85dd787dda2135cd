"""Markdown tables for benchmarks/RESULTS.md from ``harness bench`` outputs, and the pick check.

One table per speculative type (``mtp``, ``ngram-mod``): a row per file and category,
``none``'s tok/s, then ``acceptance / tok/s`` per draft depth.  With ``--repeat 2`` benches, the pick
check: per category, the configuration ``--sweep`` picks from round 1 alone (the fastest
speculative mode with accepted drafts, or ``none`` when none beats it, as ``harness bench``
recommends) measured again in round 2, against the fastest configuration of round 2.

Usage: ``python table.py LABEL=BENCH_JSON...``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from harness.bench.report import ALL, summarise
from harness.bench.runner import Sample

CATEGORIES = ["code", "json", "quote", "creative"]


def samples_of(data: dict[str, Any], round_: int | None = None) -> list[Sample]:
    fields = Sample.__dataclass_fields__
    out = []
    for s in data["samples"]:
        if round_ is None or s["repeat"] == round_:
            out.append(Sample(**{k: v for k, v in s.items() if k in fields}))
    return out


def cell(row: Any) -> str:
    speed = f"{row.tokens_per_second:.1f}"
    return speed if row.acceptance is None else f"{row.acceptance:.0%} / {speed}"


def table(benches: list[tuple[str, dict[str, Any]]], spec: str) -> list[str]:
    """One row per (file, category): ``none`` tok/s, then ``acceptance / tok/s`` per depth of ``spec``."""
    depths = sorted({s["depth"] for _, d in benches for s in d["samples"] if s["spec"] == spec})
    if not depths:
        return []
    lines = [
        "| file | category | none tok/s | " + " | ".join(f"{spec}@{k}" for k in depths) + " |",
        "| --- | --- | --- |" + " --- |" * len(depths),
    ]
    for label, data in benches:
        rows = summarise(samples_of(data))
        by = {(r.mode, r.category): r for r in rows}
        if not any(r.spec == spec for r in rows):
            continue
        for c in [*CATEGORIES, ALL]:
            if ("none", c) not in by:
                continue
            cells = [cell(by[(f"{spec}@{k}", c)]) if (f"{spec}@{k}", c) in by else "-" for k in depths]
            lines.append(
                f"| {label} | {c} | {by[('none', c)].tokens_per_second:.1f} | " + " | ".join(cells) + " |"
            )
    return lines


def pick(rows: list[Any], category: str) -> Any:
    """What ``harness bench`` recommends: the fastest speculative mode with accepted drafts
    when it beats ``none``, else ``none``."""
    mine = [r for r in rows if r.category == category]
    none = next(r for r in mine if r.spec == "none")
    spec = [r for r in mine if r.spec != "none" and r.draft_n_accepted > 0]
    best = max(spec, key=lambda r: r.tokens_per_second, default=None)
    return best if best is not None and best.tokens_per_second > none.tokens_per_second else none


def pick_check(label: str, data: dict[str, Any]) -> list[str]:
    rounds = sorted({s["repeat"] for s in data["samples"]})
    if len(rounds) < 2:
        return []
    first, second = summarise(samples_of(data, rounds[0])), summarise(samples_of(data, rounds[1]))
    lines = [f"pick check, {label}: round 1's pick measured in round 2, against round 2's fastest", "",
             "| category | pick (round 1) | its tok/s in round 2 | fastest in round 2 | ratio |",
             "| --- | --- | --- | --- | --- |"]  # fmt: skip
    for c in CATEGORIES:
        if not any(r.category == c for r in first):
            continue
        chosen = pick(first, c)
        again = next(r for r in second if r.category == c and r.mode == chosen.mode)
        fastest = max((r for r in second if r.category == c), key=lambda r: r.tokens_per_second)
        ratio = again.tokens_per_second / fastest.tokens_per_second
        lines.append(f"| {c} | {chosen.mode} | {again.tokens_per_second:.1f} | {fastest.mode} "
                     f"{fastest.tokens_per_second:.1f} | {ratio:.2f}{'' if ratio >= 0.95 else ' (over 5 % off)'} |")  # fmt: skip
    return lines


def main() -> int:
    benches = []
    for arg in sys.argv[1:]:
        label, _, path = arg.partition("=")
        benches.append((label, json.loads(Path(path).read_text())))
    for spec in ("mtp", "ngram-mod"):
        lines = table(benches, spec)
        if lines:
            print("\n".join(lines), end="\n\n")
    for label, data in benches:
        check = pick_check(label, data)
        if check:
            print("\n".join(check), end="\n\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
