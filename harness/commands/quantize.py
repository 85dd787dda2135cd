"""harness quantize RECIPE [--model SRC] [--type T]... ...: the quants, MTP layers kept at mtp_type."""

from __future__ import annotations

import argparse
from typing import Any

from harness.pipeline import command


def add_parser(sub: Any) -> None:
    p = sub.add_parser("quantize", help="convert, imatrix (when used) and quantize each type, MTP layers kept at mtp_type")
    command.add_arguments(p, types=True)


def run(args: argparse.Namespace) -> int:
    return command.run(args, until="quantize")
