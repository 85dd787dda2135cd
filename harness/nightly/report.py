"""The nightly report: report.json for scripts, report.md for people, history.jsonl and a chart.

What crosses modules is typed and versioned: one recipe's night (:class:`Entry`, harness/nightly/entry.py,
filled in by harness/nightly/run.py), the night's :class:`Report` (report.json) and one :class:`HistoryLine` per
recipe and night (history.jsonl, appended to every night and read back for the charts).  A history
line this harness cannot read (cut short, another tool's, a newer schema) is skipped with one note
naming the file and lines; a line of the first format (no schema, the same keys) is read as it is.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from harness import atomic, console
from harness.nightly.entry import Built, Entry

SCHEMA: Final = 1  # report.json and history.jsonl (before: free dicts, no schema)
STATUS_MARK = {"passed": "PASS", "degraded": "DEGRADED", "failed": "FAIL"}
STATUS_COLOR = {"passed": "tab:green", "degraded": "tab:orange", "failed": "tab:red"}


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class Report(_Model):
    """report.json: the night's entries, and whether the night counts as a success."""

    schema_: Literal[1] = Field(default=SCHEMA, alias="schema")
    date: str
    ok: bool | None = None
    allow_degraded: bool | None = None
    recipes: list[Entry]

    def to_json(self) -> dict[str, Any]:
        return {"schema": SCHEMA, **self.model_dump(mode="json", by_alias=True, exclude_unset=True)}


class HistoryLine(_Model):
    """One line of history.jsonl: a recipe's night in a few figures (the charts' data)."""

    schema_: Literal[1] = Field(default=SCHEMA, alias="schema")
    date: str
    recipe: str
    status: str
    failed_step: str | None = None
    build_s: float = 0.0
    seconds: float = 0.0
    base: str | None = None
    missing: list[str] = Field(default_factory=list)
    gates: dict[str, float | None] | None = None

    @classmethod
    def of(cls, date: str, r: Entry) -> HistoryLine:
        build_s = sum(b.timings.get("build_s", 0) for b in r.builds.values() if isinstance(b, Built))
        return cls(date=date, recipe=r.recipe, status=r.status, failed_step=r.failed_step, build_s=round(build_s, 1),
                   seconds=r.seconds, base=r.new_base, missing=[m.item for m in r.missing],
                   gates=dict(r.gates.metrics) if r.gates else None)


def read_history(path: Path) -> list[HistoryLine]:
    """The lines of ``path`` this harness reads; the others are skipped with one note naming them."""
    rows, skipped = [], []
    for n, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            data = json.loads(line)
            rows.append(HistoryLine.model_validate({"schema": SCHEMA, **data} if isinstance(data, dict)
                                                   and "schema" not in data else data))  # fmt: skip
        except (json.JSONDecodeError, ValidationError):
            skipped.append(n)
    if skipped:
        shown = ", ".join(map(str, skipped[:10])) + (f" and {len(skipped) - 10} more" if len(skipped) > 10 else "")
        console.warn(f"{path}: skipped {len(skipped)} line(s) this harness cannot read (line {shown}): "
                     f"cut short, another tool's, or a newer schema than {SCHEMA}")
    return rows


def write(directory: Path, report: Report | dict[str, Any]) -> dict[str, Path]:
    night = report if isinstance(report, Report) else Report.model_validate(report)
    directory.mkdir(parents=True, exist_ok=True)
    files = {"json": directory / "report.json", "md": directory / "report.md",
             "history": directory / "history.jsonl", "chart": directory / "history.png"}
    data = night.to_json()
    atomic.write_json(files["json"], data)
    atomic.write_text(files["md"], markdown(data))
    with open(files["history"], "a", encoding="utf-8") as f:
        for r in night.recipes:
            f.write(HistoryLine.of(night.date, r).model_dump_json(by_alias=True) + "\n")
    rows = read_history(files["history"])
    chart(rows, files["chart"])
    for recipe in sorted({r.recipe for r in night.recipes if r.gates}):
        files[f"gates:{recipe}"] = directory / f"gates-{recipe}.png"
        gates_chart(rows, recipe, files[f"gates:{recipe}"])
    return files


def markdown(report: dict[str, Any]) -> str:
    statuses = {r["status"] for r in report["recipes"]}
    verdict = "all passed" if statuses <= {"passed"} else "FAILED" if "failed" in statuses else "DEGRADED"
    lines = [f"# Nightly {report['date']}: {verdict}", ""]
    for r in report["recipes"]:
        lines.append(f"## {r['recipe']}: {STATUS_MARK.get(r['status'], r['status'])}"
                     + (f" (failed at {r['failed_step']})" if r["failed_step"] else "")
                     + (" - lock and builds adopted" if r["adopted"] else " - previous lock and builds kept"))
        lines.append("")
        if r.get("old_base") or r.get("new_base"):
            old, new = (r.get("old_base") or "(none)")[:12], (r.get("new_base") or "?")[:12]
            lines.append(f"upstream: {old} -> {new}" if old != new else f"upstream: {new} (unchanged)")
            lines.append("")
        if r["items"]:
            lines += ["| item | status | detail |", "| --- | --- | --- |"]
            for item in r["items"]:
                detail = item.get("detail", "")
                if item.get("moved"):
                    detail = (detail + "; " if detail else "") + "moved " + item["moved"]["detail"]
                if item.get("retired"):
                    detail += " (retired from the lock)"
                lines.append(f"| {item['item']} | {item['status']} | {detail.replace('|', '/')} |")
            lines.append("")
        if r.get("missing"):
            published = "The published build" if r["adopted"] else "The build"
            lines.append(f"**{published} lacks {len(r['missing'])} item(s) of the recipe** (nightly.skip_conflicts); "
                         "it is not what the recipe names:")
            lines += [f"- {m['item']}: {m['detail']}".replace("|", "/") for m in r["missing"]]
            lines.append("")
        for backend, b in r["builds"].items():
            if b.get("ok"):
                took = "no-op" if b["noop"] else f"{b['timings']['total_s']:.0f}s, {b['ninja_steps']} ninja steps"
                lines.append(f"- build {backend}: {b['stamp']['commit']}, {took}")
            else:
                log = f" (log: {b['log']})" if b.get("log") else ""
                what = f"built; smoke check {b['smoke_failed']} FAILED" if b.get("smoke_failed") else "FAILED"
                lines.append(f"- build {backend}: {what}{log}")
        for name, s in r["smoke"].items():
            lines.append(f"- smoke {name}: {'ok' if s.get('ok') else 'FAILED'}" + (f" ({s['seconds']}s)" if "seconds" in s else ""))
        if r.get("gates"):
            g = r["gates"]
            lines.append("")
            lines += ["| gate metric | last good | this night |", "| --- | --- | --- |"]
            for metric, value in g["metrics"].items():
                before = (g.get("last_good") or {}).get(metric)
                lines.append(f"| {metric} | {'-' if before is None else f'{before:.6f}'} | {value:.6f} |")
            lines.append("")
            speed = g.get("tokens_per_s")
            if speed and speed.get("ratio") is not None:
                lines.append(f"- tokens/s against the last good build: {speed['candidate_tokens_per_s']:.1f} vs "
                             f"{speed['last_good_tokens_per_s']:.1f}, ratio {speed['ratio']:.3f} "
                             f"(95% interval {speed['low']:.3f}-{speed['high']:.3f}, {speed['pairs']} pairs over "
                             f"{speed['rounds']} rounds, spread {_pct(speed.get('spread'))}): **{speed['verdict']}**"
                             + (" (noisy machine)" if speed.get("noisy") else ""))
            for refusal in g.get("refused", []):
                lines.append(f"- **refused**: {refusal['text']}" if "text" in refusal else
                             f"- **refused**: {refusal['metric']} {refusal['candidate']:.6f} vs last good "
                             f"{refusal['last_good']:.6f}, allowed increase {refusal['threshold']:g}")
        if r.get("bisect"):
            lines += culprit(r["bisect"])
        if r["error"]:
            lines += ["", "```", r["error"], "```"]
        lines.append("")
    return "\n".join(lines)


def culprit(b: dict[str, Any]) -> list[str]:
    """What the night's bisection found (harness/bisect/report.py: ``Result``), in a few lines."""
    if "error" in b:
        return ["", f"- bisection of the upstream range failed: {b['error']}"]
    if b.get("culprit") == "stack":
        return ["", f"**Culprit: the moved stack item(s) {', '.join(b['moved'])}**, not upstream",
                f"- {b['detail']}"]

    def name(c: dict[str, Any]) -> str:
        return f"{c['sha'][:12]} {c['subject']}" + (f" (PR #{c['pr']})" if c.get("pr") else "") + f", {c['date']}"

    steps = f"{len(b['steps'])} bisect step(s) over {b['range_size']} upstream commit(s), check {b['check']}"
    if b.get("first_bad"):
        lines = ["", f"**Culprit: upstream {name(b['first_bad'])}** ({steps})"]
        if b.get("detail"):
            lines.append(f"- {b['detail'].splitlines()[0]}")
    else:
        why = "only skipped commits left" if b["why"] == "skipped" else "the step budget ran out"
        lines = ["", f"**The culprit is one of {len(b['candidates'])} upstream commits** ({why}; {steps}):"]
        lines += [f"- {name(c)}" for c in b["candidates"][:20]]
    lines.append(f"- last good: {name(b['last_good'])}")
    if b.get("moved"):
        lines.append(f"- {', '.join(b['moved'])} moved too, but the last good stack fails at the new base as well")
    return [line.replace("|", "/") for line in lines]


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def chart(rows: list[HistoryLine], png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3), dpi=100)
    for recipe in sorted({r.recipe for r in rows}):
        mine = [r for r in rows if r.recipe == recipe]
        xs = list(range(len(mine)))
        ax.plot(xs, [r.build_s for r in mine], label=recipe, marker="o")
        for x, r in zip(xs, mine, strict=True):
            ax.scatter([x], [r.build_s], color=STATUS_COLOR.get(r.status, "tab:red"), zorder=3)
    ax.set_xlabel("night")
    ax.set_ylabel("build seconds")
    ax.set_title("nightly builds (green: passed, orange: degraded, red: failed)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    with atomic.temp_file_beside(png) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)


def gates_chart(rows: list[HistoryLine], recipe: str, png: Path) -> None:
    """Each gate metric of ``recipe`` over the nights that measured it: the trend a maintainer looks at first."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    mine = [(r, r.gates) for r in rows if r.recipe == recipe and r.gates is not None]
    panels = [(label, sorted({m for _, g in mine for m in g if pick(m)})) for label, pick in GATE_PANELS]
    panels = [p for p in panels if p[1]] or [(GATE_PANELS[0][0], [])]
    fig, axes = plt.subplots(len(panels), 1, figsize=(7, 2.6 * len(panels)), dpi=100, sharex=True, squeeze=False)
    for ax, (label, metrics) in zip(axes[:, 0], panels, strict=True):
        for metric in metrics:
            pts = [(i, g[metric]) for i, (_, g) in enumerate(mine) if metric in g]
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=metric)
        for i, (r, _) in enumerate(mine):
            if r.status == "failed":
                ax.axvline(i, color="tab:red", alpha=0.3)
        ax.set_ylabel(label, fontsize=8)
        if metrics:
            ax.legend(fontsize=7)
    axes[-1, 0].set_xticks(range(len(mine)), [r.date for r, _ in mine], fontsize=6, rotation=30)
    axes[0, 0].set_title(f"{recipe}: gate model quality per night (red: refused or failed)", fontsize=9)
    fig.tight_layout()
    with atomic.temp_file_beside(png) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)


# the gates chart's panels, one per scale: (y label, which metrics)
GATE_PANELS: list[tuple[str, Any]] = [
    ("KL divergence (nats)", lambda m: m.endswith("_kld")),
    ("MTP acceptance", lambda m: ".mtp_acceptance@" in m),
    ("tokens/s vs last good", lambda m: m == "tokens_per_s.ratio"),
]
