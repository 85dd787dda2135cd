"""bench.png: tokens/s per category and mode (bars), or per depth when a sweep ran (lines)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from harness.atomic import temp_file_beside
from harness.bench.report import ALL, Row


def write_png(rows: Sequence[Row], path: Path, *, title: str = "") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    categories = sorted(dict.fromkeys(r.category for r in rows), key=lambda c: (c == ALL, c))
    swept = any(len({r.depth for r in rows if r.spec == spec}) > 1 for spec in {r.spec for r in rows})
    if swept:
        fig, axes = plt.subplots(1, len(categories), figsize=(3.2 * len(categories) + 1, 4), squeeze=False)
        for ax, category in zip(axes[0], categories, strict=True):
            mine = [r for r in rows if r.category == category]
            for spec in dict.fromkeys(r.spec for r in mine if r.spec != "none"):
                points = sorted((r.depth or 0, r.tokens_per_second) for r in mine if r.spec == spec)
                ax.plot([d for d, _ in points], [v for _, v in points], marker="o", label=spec)
            for r in mine:
                if r.spec == "none":
                    ax.axhline(r.tokens_per_second, color="grey", linestyle="--", label="none")
            ax.set_title(category)
            ax.set_xlabel("draft depth")
            ax.xaxis.get_major_locator().set_params(integer=True)
            ax.set_ylim(bottom=0)
        axes[0][0].set_ylabel("tokens/s")
        axes[0][0].legend(fontsize="small")
    else:
        modes = list(dict.fromkeys(r.mode for r in rows))
        fig, ax = plt.subplots(figsize=(max(6.0, 1.2 * len(categories) * max(1, len(modes)) / 2 + 2), 4.5))
        width = 0.8 / max(1, len(modes))
        for i, mode in enumerate(modes):
            values = {r.category: r for r in rows if r.mode == mode}
            xs = [c + (i - (len(modes) - 1) / 2) * width for c in range(len(categories))]
            heights = [values[c].tokens_per_second if c in values else 0.0 for c in categories]
            bars = ax.bar(xs, heights, width, label=mode)
            for bar, c in zip(bars, categories, strict=True):
                acc = values[c].acceptance if c in values else None
                if acc is not None:
                    ax.annotate(f"{acc:.0%}", (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                                ha="center", va="bottom", fontsize="x-small")  # fmt: skip
        ax.set_xticks(range(len(categories)), categories)
        ax.set_ylabel("tokens/s (label: draft acceptance)")
        ax.legend(fontsize="small")
    fig.suptitle(title or "llama-server speculative decoding")
    fig.tight_layout()
    with temp_file_beside(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
