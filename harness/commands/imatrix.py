"""harness imatrix RECIPE [--model SRC] ...: the importance matrix of the converted model."""

from __future__ import annotations

import argparse
from typing import Any

from harness.pipeline import command


def add_parser(sub: Any) -> None:
    p = sub.add_parser("imatrix", help="convert, then compute the importance matrix over the calibration text")
    command.add_arguments(p, types=False)


def run(args: argparse.Namespace) -> int:
    return command.run(args, until="imatrix")
