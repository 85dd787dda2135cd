"""``harness gguf``: look at GGUF models (single files or split sets) and move MTP heads between them.

harness gguf inspect FILE [--json]             metadata, every tensor, trunk/MTP totals
harness gguf audit FILE [--target BASE] [--json]
                                               exit 1 when the MTP heads the metadata promises are not all
                                               there, or (--target) a draft does not fit its target
harness gguf extract-mtp SRC -o DONOR [--heads-only] [--json]
                                               the MTP layers as a GGUF (loads with llama-server -md)
harness gguf graft BASE DONOR -o OUT [--json]  put a donor's MTP layers into a base that lacks them

FILE may be any shard of a split model: the whole set is read.  ``--split-max-tensors N`` /
``--split-max-size 2G`` write the output as a split set; ``--build DIR`` reads the weight types
and MTP architectures of a published build's gguf-py (a fork's new types).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness import console

if TYPE_CHECKING:
    from rich.table import Table

    from harness.gguf_files.writer import Split


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser("gguf", help="inspect and audit GGUF files, move MTP heads between them")
    sub = parser.add_subparsers(dest="gguf_command", metavar="SUBCOMMAND", required=True)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--json", action="store_true", help="machine-readable output on stdout")
        p.add_argument(
            "--build",
            type=Path,
            metavar="DIR",
            help="a published build (builds/<recipe>/<backend>) whose gguf-py types and architectures to use",
        )

    def split_options(p: argparse.ArgumentParser) -> None:
        p.add_argument("--split-max-tensors", type=int, default=0, metavar="N", help="write shards of at most N tensors")
        p.add_argument("--split-max-size", metavar="SIZE", help="write shards of at most SIZE (e.g. 500M, 2G)")

    p = sub.add_parser("inspect", help="architecture, MTP layout, every tensor, trunk and MTP totals")
    p.add_argument("file", type=Path)
    common(p)

    p = sub.add_parser("audit", help="check that the MTP layers the metadata promises are all present")
    p.add_argument("file", type=Path)
    p.add_argument(
        "--target", type=Path, metavar="BASE", help="the model a draft/assistant file is for: check that it fits"
    )
    common(p)

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
    split_options(p)
    common(p)

    p = sub.add_parser("graft", help="put a donor's MTP layers into a base GGUF that lacks them")
    p.add_argument("base", type=Path)
    p.add_argument("donor", type=Path)
    p.add_argument("-o", "--output", type=Path, required=True, help="the grafted file to write")
    split_options(p)
    common(p)


def run(args: argparse.Namespace) -> int:
    from harness.gguf_files import gguf_py, surgery  # numpy and gguf: only once a command runs

    if args.build is not None:
        added = gguf_py.use_build(args.build)
        if added:
            console.info(f"types from {args.build}/gguf-py: {', '.join(added)}")
    command: str = args.gguf_command
    if command == "inspect":
        return _inspect(args.file, as_json=args.json)
    if command == "audit":
        return _audit(args.file, args.target, as_json=args.json)
    split = _split(args)
    if command == "extract-mtp":
        result = surgery.extract_mtp(args.src, args.output, heads_only=args.heads_only, split=split)
    else:
        result = surgery.graft(args.base, args.donor, args.output, split=split)
    if args.json:
        console.emit_json(result.to_json())
    else:
        files = f" in {len(result.files)} shards" if len(result.files) > 1 else ""
        console.out(
            console.plain(
                f"wrote {result.output}{files}: {_size(result.size)}, {result.tensors} tensors "
                f"({len(result.mtp_tensors)} MTP), block_count {result.block_count}, "
                f"nextn_predict_layers {result.nextn_predict_layers}"
            )
        )
    return 0


def _split(args: argparse.Namespace) -> Split:
    from harness.errors import InputError
    from harness.gguf_files.writer import Split, parse_size

    if args.split_max_tensors < 0:
        raise InputError(f"--split-max-tensors {args.split_max_tensors}: give a positive number")
    size = parse_size(args.split_max_size) if args.split_max_size else 0
    return Split(max_tensors=args.split_max_tensors, max_bytes=size)


def _inspect(path: Path, *, as_json: bool) -> int:
    from rich.table import Table
    from rich.text import Text

    from harness.gguf_files import inspect
    from harness.gguf_files.split import open_model

    with open_model(path) as gf:
        info = inspect.inspect(gf)
    if as_json:
        console.emit_json(info.to_json())
        return 0
    lay = info.layout
    split = len(info.shards) > 1
    table = Table(title=Text(console.plain(info.path)), show_lines=False, highlight=False)
    table.add_column("tensor")
    table.add_column("type")
    table.add_column("shape")
    table.add_column("bytes", justify="right")
    if split:
        table.add_column("shard", justify="right")
    if info.mtp_names:  # the MTP column only where a tensor is marked in it
        table.add_column("MTP")
    for t in info.tensors:
        mark = "MTP" if t.name in info.mtp_names else ""
        cells: list[Text | str] = [Text(console.plain(t.name)), t.type_name, "×".join(map(str, t.shape)), _size(t.nbytes)]
        if split:
            cells.append(str(t.shard + 1))
        if info.mtp_names:
            cells.append(mark)
        table.add_row(*cells, style="cyan" if mark else None)
    _print_stdout(table)
    if split:
        console.out(f"split model: {len(info.shards)} shards")
        for i, (p, size, n) in enumerate(info.shards, 1):
            console.out(console.plain(f"  {i}: {p} ({_size(size)}, {n} tensors)"))
    mtp_layers = ", ".join(map(str, lay.mtp_layers)) or "none"
    draft = ", an MTP draft file (load with -md)" if info.draft else ""
    console.out(
        console.plain(
            f"architecture {lay.arch}, block_count {lay.block_count}, nextn_predict_layers {lay.nextn} "
            f"(MTP blocks: {mtp_layers}), hidden {info.embedding_length}, vocab {info.vocab_size}{draft}"
        )
    )
    console.out(
        f"trunk: {info.trunk.tensors} tensors, {info.trunk.params:,} params, {_size(info.trunk.bytes)}"
    )
    console.out(f"MTP:   {info.mtp.tensors} tensors, {info.mtp.params:,} params, {_size(info.mtp.bytes)}")
    return 0


def _audit(path: Path, target_path: Path | None, *, as_json: bool) -> int:
    from harness.gguf_files import audit

    report = audit.audit_path(path, target_path)
    if as_json:
        console.emit_json(report.to_json())
    else:
        scope = "llama.cpp's full MTP block" if report.checked == "full" else "the NextN projections only"
        checked = f"; checked against {scope}" if report.nextn else ""
        shards = f" ({len(report.shards)} shards)" if len(report.shards) > 1 else ""
        kind = ", an MTP draft file" if report.kind == "draft" else ""
        fits = f"; target {report.target}" if report.target else ""
        console.out(
            console.plain(
                f"{report.path}{shards}: {report.status} ({report.arch}, block_count {report.block_count}, "
                f"nextn_predict_layers {report.nextn}{kind}{checked}{fits})"
            )
        )
        for problem in report.problems:
            console.out(console.plain(f"  problem: {problem}"))
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
