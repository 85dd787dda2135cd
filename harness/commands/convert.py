"""harness convert RECIPE [--model SRC] ...: the model as GGUF (downloaded first when it is a Hub repo id)."""

from __future__ import annotations

import argparse
from typing import Any

from harness.pipeline import command


def add_parser(sub: Any) -> None:
    p = sub.add_parser("convert", help="download (Hub repo ids) and convert the recipe's model to GGUF, MTP-aware")
    command.add_arguments(p, types=False)


def run(args: argparse.Namespace) -> int:
    return command.run(args, until="convert")
