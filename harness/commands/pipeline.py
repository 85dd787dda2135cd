"""harness pipeline RECIPE ...: the whole model pipeline (download, convert, imatrix, quantize), each step cached."""

from __future__ import annotations

import argparse
from typing import Any

from harness.pipeline import command


def add_parser(sub: Any) -> None:
    p = sub.add_parser("pipeline", help="the whole model pipeline: download, convert, imatrix, quantize (each step cached)")
    command.add_arguments(p, types=True)


def run(args: argparse.Namespace) -> int:
    return command.run(args, until="quantize")
