"""The buffer types ``-ot PATTERN=TYPE`` may name, as the binary that will run knows them.

common/arg.cpp's ``parse_tensor_buffer_overrides`` accepts only the buffer types of the
devices the build's backends see (``CPU``; ``CUDA0``... with a CUDA build and a GPU); on an
unknown one it prints "Available buffer types:" and exits.  The harness asks the binary the
same way (an ``-ot`` naming no type it could have, no model, nothing loaded) and checks the
``-ot``/``-otd`` values of a command line against its answer before anything starts.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Sequence
from pathlib import Path

from harness.errors import InputError

FLAGS = ("-ot", "--override-tensor", "-otd", "--override-tensor-draft")
_PROBE = "harness-probe=?"


def available(binary: Path) -> tuple[str, ...]:
    """The buffer types ``binary`` accepts in ``-ot`` on this machine."""
    return _available(binary, binary.stat().st_mtime_ns)


@functools.cache
def _available(binary: Path, mtime_ns: int) -> tuple[str, ...]:
    from harness import runner

    try:  # --help after it: a binary that does not fail on the probe prints its help and exits
        res = runner.run([binary, "-ot", _PROBE, "--help"], check=False, timeout=20)
    except runner.TimeoutExpired:
        return ()  # it neither refused the probe nor printed help: nothing to check against
    lines = (res.stdout + "\n" + res.stderr).splitlines()
    if "Available buffer types:" not in [line.strip() for line in lines]:
        return ()  # an older build that does not list them: nothing to check against
    start = [line.strip() for line in lines].index("Available buffer types:") + 1
    found = []
    for line in lines[start:]:
        if not line.startswith("  ") or not line.strip():
            break
        found.append(line.strip())
    return tuple(found)


def problems(args: Sequence[str], offered: Sequence[str]) -> list[str]:
    """The ``-ot`` values of ``args`` whose buffer type is not in ``offered``."""
    found = []
    for flag, value in itertools.pairwise(args):
        if flag not in FLAGS:
            continue
        for override in value.split(","):
            pattern, _, buft = override.rpartition("=")
            if pattern and buft not in offered:
                found.append(f"{flag} {override}: this build has no buffer type {buft!r} here "
                             f"(it has {', '.join(offered)})")
    return found


def check(args: Sequence[str], binary: Path, *, backend: str, origin: str) -> None:
    if not any(flag in FLAGS for flag in args[:-1]):
        return  # nothing to ask the binary about
    offered = available(binary)
    found = problems(args, offered) if offered else []
    if found:
        raise InputError(
            f"{origin}: llama-server would refuse " + ("this" if len(found) == 1 else "these") + ":\n  " + "\n  ".join(found),
            hint=f"a {backend} build offers the buffer types of its own devices; "
            f"use CPU (or a build with the backend the override names)",
        )
