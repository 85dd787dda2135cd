"""``harness gguf``: look at GGUF files and move MTP heads between them.

harness gguf inspect FILE [--json]             metadata, every tensor, trunk/MTP totals
harness gguf audit FILE [--json]               exit 1 when the MTP heads the metadata promises are not all there
harness gguf extract-mtp SRC -o DONOR [--heads-only] [--json]
                                               the MTP layers as a GGUF (loads with llama-server -md)
harness gguf graft BASE DONOR -o OUT [--json]  put a donor's MTP layers into a base that lacks them
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness import console

if TYPE_CHECKING:
    from rich.table import Table


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser("gguf", help="inspect and audit GGUF files, move MTP heads between them")
    sub = parser.add_subparsers(dest="gguf_command", metavar="SUBCOMMAND", required=True)

    p = sub.add_parser("inspect", help="architecture, MTP layout, every tensor, trunk and MTP totals")
    p.add_argument("file", type=Path)
    p.add_argument("--json", action="store_true", help="machine-readable output on stdout")

    p = sub.add_parser("audit", help="check that the MTP layers the metadata promises are all present")
    p.add_argument("file", type=Path)
    p.add_argument("--json", action="store_true", help="machine-readable output on stdout")

    p = sub.add_parser(
        "extract-mtp", help="write the MTP layers to a donor GGUF (loadable as a draft with -md)"
    )
    p.add_argument("src", type=Path)
    p.add_argument("-o", "--output", type=Path, required=True, help="the donor file to write")
    p.add_argument(
        "--heads-only",
        action="store_true",
        help="leave out token_embd/output_norm/output: a smaller donor for graft, not loadable with -md",
    )
    p.add_argument("--json", action="store_true", help="machine-readable output on stdout")

    p = sub.add_parser("graft", help="put a donor's MTP layers into a base GGUF that lacks them")
    p.add_argument("base", type=Path)
    p.add_argument("donor", type=Path)
    p.add_argument("-o", "--output", type=Path, required=True, help="the grafted file to write")
    p.add_argument("--json", action="store_true", help="machine-readable output on stdout")


def run(args: argparse.Namespace) -> int:
    from harness.gguf_files import surgery

    command: str = args.gguf_command
    if command == "inspect":
        return _inspect(args.file, as_json=args.json)
    if command == "audit":
        return _audit(args.file, as_json=args.json)
    if command == "extract-mtp":
        result = surgery.extract_mtp(args.src, args.output, heads_only=args.heads_only)
    else:
        result = surgery.graft(args.base, args.donor, args.output)
    if args.json:
        console.emit_json(result.to_json())
    else:
        console.out(
            f"wrote {result.output}: {_size(result.size)}, {result.tensors} tensors "
            f"({len(result.mtp_tensors)} MTP), block_count {result.block_count}, "
            f"nextn_predict_layers {result.nextn_predict_layers}"
        )
    return 0


def _inspect(path: Path, *, as_json: bool) -> int:
    from rich.table import Table

    from harness.gguf_files import inspect
    from harness.gguf_files.reader import open_gguf

    with open_gguf(path) as gf:
        info = inspect.inspect(gf)
    if as_json:
        console.emit_json(info.to_json())
        return 0
    lay = info.layout
    table = Table(title=str(path), show_lines=False, highlight=False)
    table.add_column("tensor")
    table.add_column("type")
    table.add_column("shape")
    table.add_column("bytes", justify="right")
    table.add_column("")
    for t in info.tensors:
        mark = "MTP" if t.name in info.mtp_names else ""
        style = "cyan" if mark else None
        table.add_row(t.name, t.type_name, "×".join(map(str, t.shape)), _size(t.nbytes), mark, style=style)
    _print_stdout(table)
    mtp_layers = ", ".join(map(str, lay.mtp_layers)) or "none"
    console.out(
        f"architecture {lay.arch}, block_count {lay.block_count}, nextn_predict_layers {lay.nextn} "
        f"(MTP blocks: {mtp_layers}), hidden {info.embedding_length}, vocab {info.vocab_size}"
    )
    console.out(
        f"trunk: {info.trunk.tensors} tensors, {info.trunk.params:,} params, {_size(info.trunk.bytes)}"
    )
    console.out(f"MTP:   {info.mtp.tensors} tensors, {info.mtp.params:,} params, {_size(info.mtp.bytes)}")
    return 0


def _audit(path: Path, *, as_json: bool) -> int:
    from harness.gguf_files import audit
    from harness.gguf_files.reader import open_gguf

    with open_gguf(path) as gf:
        report = audit.audit(gf)
    if as_json:
        console.emit_json(report.to_json())
    else:
        scope = "llama.cpp's full MTP block" if report.checked == "full" else "the NextN projections only"
        checked = f"; checked against {scope}" if report.nextn else ""
        console.out(
            f"{path}: {report.status} ({report.arch}, block_count {report.block_count}, "
            f"nextn_predict_layers {report.nextn}{checked})"
        )
        for problem in report.problems:
            console.out(f"  problem: {problem}")
        for warning in report.warnings:
            console.warn(warning)
    return 0 if report.ok else 1


def _print_stdout(table: Table) -> None:
    """On stdout (it is the command's result); piped output gets room for long tensor names."""
    from rich.console import Console

    out = Console(highlight=False)
    if not out.is_terminal:
        out = Console(highlight=False, width=160)
    out.print(table)


def _size(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TiB"
