"""harness quality A.gguf [B.gguf ...] --reference R.gguf: KL divergence of each file against R.

For files the pipeline did not make (community quants).  llama-perplexity comes from ``--bin DIR`` or the
published build of ``--recipe R``; the reference's logits go to ``--work DIR`` (default: a temp dir,
removed afterwards).  Prints a table, ``--json`` the report, ``--png`` the size-against-KLD picture.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def add_parser(sub: Any) -> None:
    p = sub.add_parser("quality", help="KL divergence, top-token agreement and PPL ratio of GGUFs against a reference")
    p.add_argument("models", nargs="+", type=Path, metavar="GGUF")
    p.add_argument("--reference", required=True, type=Path, metavar="GGUF", help="the full-precision (or best) file")
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--bin", type=Path, metavar="DIR", help="a directory holding llama-perplexity")
    where.add_argument("--recipe", type=Path, metavar="RECIPE", help="use this recipe's published build")
    p.add_argument("--backend", metavar="B", help="with --recipe: this backend's build")
    p.add_argument("--builds-dir", type=Path, metavar="D", help="with --recipe: where builds/<recipe> are")
    p.add_argument("--text", type=Path, metavar="FILE", help="evaluation text (default: data/evaluation.txt)")
    p.add_argument("--ctx", type=int, default=512, metavar="N", help="tokens per chunk (default 512)")
    p.add_argument("--chunks", type=int, default=4, metavar="N", help="most chunks of the text to score (default 4)")
    p.add_argument("--work", type=Path, metavar="DIR", help="keep the reference logits and logs here")
    p.add_argument("--png", type=Path, metavar="FILE", help="draw size against mean KLD")
    p.add_argument("--json", action="store_true", help="the report on stdout")


def run(args: argparse.Namespace) -> int:
    import tempfile

    from harness import console
    from harness.errors import InputError
    from harness.quality import measure as quality
    from harness.quality import report as quality_report

    for path in [args.reference, *args.models]:
        if not path.is_file():
            raise InputError(f"no such file: {path}")
    if args.ctx < 8 or args.chunks < 1:
        raise InputError("--ctx must be at least 8 and --chunks at least 1")
    short = quality.too_few(ctx=args.ctx, chunks=args.chunks)
    if short:
        raise InputError(f"--ctx {args.ctx} --chunks {args.chunks}: {short}")
    tool = _tool(args)
    text = args.text or quality.default_text()
    settings = quality.Settings(ctx=args.ctx, chunks=args.chunks)
    with tempfile.TemporaryDirectory(prefix="harness-quality-") as tmp:
        report = quality.run(tool, list(args.models), args.reference, text, settings, work=args.work or Path(tmp))
    if args.png:
        quality_report.chart(report, args.png)
    if args.json:
        console.emit_json(report.model_dump(mode="json"))
    else:
        quality_report.render(report)
    return 0


def _tool(args: argparse.Namespace) -> Path:
    from harness.build import published
    from harness.errors import InputError
    from harness.quality import measure as quality
    from harness.recipe.load import load_recipe

    if args.bin is not None:
        tool: Path = args.bin / quality.PERPLEXITY
        if not tool.is_file():
            raise InputError(f"no {quality.PERPLEXITY} in {args.bin}",
                             hint="add llama-perplexity to build.targets and rebuild")  # fmt: skip
        return tool
    return published.find_tool(load_recipe(args.recipe), quality.PERPLEXITY, backend=args.backend,
                            builds_dir=args.builds_dir)  # fmt: skip
