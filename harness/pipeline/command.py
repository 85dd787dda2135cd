"""What ``harness convert|imatrix|quantize|pipeline`` share: their arguments and their output."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness import console

if TYPE_CHECKING:
    from harness.pipeline.run import Report


def add_arguments(p: argparse.ArgumentParser, *, types: bool) -> None:
    p.add_argument("recipe", metavar="RECIPE")
    p.add_argument("--model", metavar="SRC", help="a checkpoint directory, a GGUF (any shard of a split set) or a Hugging Face repo id (instead of model.source)")
    p.add_argument("--revision", metavar="REV", help="branch, tag or commit of a Hub repo (instead of model.revision)")
    p.add_argument("--out", type=Path, metavar="DIR", help="where outputs go (default: models/<name>)")
    p.add_argument("--backend", metavar="B", help="use this backend's build (default: the first with llama-quantize)")
    p.add_argument("--builds-dir", type=Path, metavar="D", help="where builds/<recipe>/<backend> are (default: ./builds)")
    p.add_argument("--python", metavar="PY", help="interpreter for convert_hf_to_gguf.py (needs torch, transformers)")
    if types:
        p.add_argument("--type", action="append", dest="types", metavar="T",
                       help="quantization type, repeatable (instead of model.quantize.types)")  # fmt: skip
    p.add_argument("--force", action="store_true", help="redo every step even when its inputs are unchanged")
    p.add_argument("--json", action="store_true", help="machine-readable report on stdout")


def run(args: argparse.Namespace, until: str) -> int:
    from harness.pipeline import progress
    from harness.pipeline.plan import Options
    from harness.pipeline.run import pipeline

    options = Options(
        recipe=Path(args.recipe),
        until=until,
        model=args.model,
        revision=args.revision,
        out=args.out,
        backend=args.backend,
        builds_dir=args.builds_dir,
        python=args.python,
        types=tuple(getattr(args, "types", None) or ()),
        force=args.force,
    )
    progress.configure(enabled=not (getattr(args, "quiet", False) or args.json))
    report = pipeline(options)
    if args.json:
        console.emit_json(report.to_json())
    else:
        print_report(report)
    return 0


def print_report(report: Report) -> None:
    from rich.console import Console

    from harness.pipeline import summary

    out = Console(highlight=False, soft_wrap=True)
    summary.render(report.outcomes, out)
    skipped = sum(o.skipped for o in report.outcomes)
    what: dict[str, Any] = {"done": len(report.outcomes) - skipped, "up to date": skipped}
    console.out(f"{report.name}: " + ", ".join(f"{n} {k}" for k, n in what.items()) + f" -> {report.out}")
