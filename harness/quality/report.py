"""How quality figures are shown: a table for people, and size against mean KLD as a PNG.

The picture is the one quantizers compare: one point per quant, file size on x, mean KL
divergence on y (log scale, since Q8_0 sits orders of magnitude below a 2-bit type).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from harness import atomic
from harness.quality.measure import Report


@dataclass(frozen=True)
class Point:
    label: str
    size: int
    mean_kld: float


def points(report: Report) -> list[Point]:
    return [Point(Path(m.file).name, m.size, m.mean_kld) for m in report.results]


def render(report: Report) -> None:
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    from harness.console import plain

    b = report.base
    table = Table(title=f"KL divergence against {plain(Path(b.reference).name)} "
                        f"({b.chunks} chunk(s) of {b.ctx} tokens)", title_justify="left")  # fmt: skip
    for col in ("file", "size", "bits/weight", "mean KLD", "99% KLD", "same top", "PPL ratio", "time"):
        table.add_column(col, justify="left" if col == "file" else "right")
    for m in report.results:
        table.add_row(Text(plain(Path(m.file).name)), f"{m.size / 2**20:.1f} MiB",
                      f"{m.bits_per_weight:.2f}" if m.bits_per_weight else "-", f"{m.mean_kld:.6f}",
                      f"{m.p99_kld:.5f}", f"{100 * m.same_top_p:.2f}%", f"{m.ppl_ratio:.4f}", f"{m.seconds:.1f}s")  # fmt: skip
    Console(highlight=False, soft_wrap=True).print(table)


def chart(report: Report, png: Path, *, title: str | None = None) -> None:
    draw(points(report), png, title=title or f"size against KL divergence ({Path(report.base.reference).name})")


def draw(pts: list[Point], png: Path, *, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    xs = [p.size / 2**20 for p in pts]
    ys = [max(p.mean_kld, 1e-6) for p in pts]  # a log axis has no 0
    ax.scatter(xs, ys, zorder=3)
    for x, y, p in zip(xs, ys, pts, strict=True):
        ax.annotate(p.label, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7)
    ax.set_yscale("log")
    ax.set_xlabel("file size (MiB)")
    ax.set_ylabel("mean KL divergence (nats)")
    ax.set_title(title, fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    with atomic.temp_file_beside(png) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
