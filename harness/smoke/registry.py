"""The smoke checks by name: the one list the recipe schema (``build.smoke``, ``nightly.smoke``),
the CLI (``harness build --smoke``) and the runner (harness/smoke/__init__.py) read.

A check is ``harness/smoke/<name>.py`` with ``run(ctx)`` returning its model (harness/smoke/results.py)
and one line in ``CHECKS``.
This module imports nothing of the harness, so the recipe (below the build layer) can read it;
the runner imports each check's module by its name.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SmokeCheck:
    name: str  # harness/smoke/<name>.py runs it
    build: bool  # in build.smoke's default (harness build)
    nightly: bool  # in nightly.smoke's default (harness nightly)
    command_line: bool = True  # may be asked for with harness build --smoke


CHECKS: tuple[SmokeCheck, ...] = (
    SmokeCheck("version", build=True, nightly=True),
    SmokeCheck("decode", build=True, nightly=True),
    SmokeCheck("quantize", build=False, nightly=True),
    SmokeCheck("serve", build=False, nightly=True),
    SmokeCheck("rpc", build=False, nightly=False, command_line=False),  # added by build.rpc wherever decode runs
)

NAMES = tuple(c.name for c in CHECKS)
BUILD_DEFAULT = tuple(c.name for c in CHECKS if c.build)
NIGHTLY_DEFAULT = tuple(c.name for c in CHECKS if c.nightly)
COMMAND_LINE = tuple(c.name for c in CHECKS if c.command_line)
