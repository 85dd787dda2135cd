"""bench.png: speedup over none per category and mode (bars with their 95 % interval as error bars),
or per depth when a sweep ran (lines with error bars); a row without a verdict is drawn hollow."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from harness.atomic import temp_file_beside
from harness.bench import stats
from harness.bench.report import ALL, Row


def _errors(rows: Sequence[Row]) -> list[list[float]]:
    return [[max(0.0, (r.speedup or 0) - (r.low if r.low is not None else r.speedup or 0)) for r in rows],
            [max(0.0, (r.high if r.high is not None else r.speedup or 0) - (r.speedup or 0)) for r in rows]]


def write_png(rows: Sequence[Row], path: Path, *, title: str = "") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    categories = sorted(dict.fromkeys(r.category for r in rows), key=lambda c: (c == ALL, c))
    measured = [r for r in rows if r.spec != "none"]
    swept = any(len({r.depth for r in measured if r.spec == spec}) > 1 for spec in {r.spec for r in measured})
    if swept:
        fig, axes = plt.subplots(1, len(categories), figsize=(3.2 * len(categories) + 1, 4), squeeze=False)
        for ax, category in zip(axes[0], categories, strict=True):
            mine = [r for r in measured if r.category == category]
            for spec in dict.fromkeys(r.spec for r in mine):
                points = sorted((r for r in mine if r.spec == spec and r.speedup is not None), key=lambda r: r.depth or 0)
                ax.errorbar([r.depth or 0 for r in points], [r.speedup or 0 for r in points], yerr=_errors(points),
                            marker="o", capsize=3, label=spec)  # fmt: skip
            ax.axhline(1.0, color="grey", linestyle="--", linewidth=1)
            ax.set_title(category)
            ax.set_xlabel("draft depth")
            ax.xaxis.get_major_locator().set_params(integer=True)
        axes[0][0].set_ylabel("speedup over none (95 % interval)")
        axes[0][0].legend(fontsize="small")
    else:
        modes = list(dict.fromkeys(r.mode for r in measured))
        fig, ax = plt.subplots(figsize=(max(6.0, 1.2 * len(categories) * max(1, len(modes)) / 2 + 2), 4.5))
        width = 0.8 / max(1, len(modes))
        for i, mode in enumerate(modes):
            values = {r.category: r for r in measured if r.mode == mode}
            shown = [values[c] for c in categories if c in values]
            xs = [categories.index(r.category) + (i - (len(modes) - 1) / 2) * width for r in shown]
            bars = ax.bar(xs, [r.speedup or 0 for r in shown], width, yerr=_errors(shown), capsize=3, label=mode)
            for bar, r in zip(bars, shown, strict=True):
                if r.verdict != stats.FASTER and r.verdict != stats.SLOWER:
                    bar.set_fill(False)
                    bar.set_hatch("//")
                note = "drafted nothing" if r.speedup is None else r.verdict or ""
                if r.acceptance is not None:
                    note = f"{r.acceptance:.0%} acc\n{note}"
                ax.annotate(note, (bar.get_x() + bar.get_width() / 2, max(bar.get_height(), r.high or 0)),
                            ha="center", va="bottom", fontsize="x-small")  # fmt: skip
        ax.axhline(1.0, color="grey", linestyle="--", linewidth=1)
        ax.set_xticks(range(len(categories)), categories)
        ax.set_ylabel("speedup over none, 95 % interval")
        ax.set_title("hatched: no clear difference", fontsize="small")
        if modes:
            ax.legend(fontsize="small")
    fig.suptitle(title or "llama-server speculative decoding")
    fig.tight_layout()
    with temp_file_beside(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
