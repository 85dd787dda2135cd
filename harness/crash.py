"""The crash log: what a bug report needs, written where the user can find it (pre-commit's pre-commit.log).

The CLI writes it for an exception no harness code expected (exit 3); ``harness nightly`` writes it for
a recipe that ended that way and goes on to the next recipe.
"""

from __future__ import annotations

import platform
import shlex
import sys
import time
import traceback

from harness import __version__, atomic, paths


def write_log(exc: BaseException, argv: list[str]) -> str:
    """Write what a bug report needs (version, platform, command line, traceback) to
    ``<cache>/crash.log``, as pre-commit writes pre-commit.log; returns its path (or where it
    could not be written, and why)."""
    text = "\n".join([
        "### llama-harness crash log",
        f"version:  llama-harness {__version__}",
        f"python:   {sys.version.split()[0]} ({sys.executable})",
        f"platform: {platform.platform()}",
        f"time:     {time.strftime('%Y-%m-%d %H:%M:%S %z')}",
        f"command:  {shlex.join(['harness', *argv])}",
        "",
        "".join(traceback.format_exception(exc)),
    ])
    try:
        path = paths.cache_root() / "crash.log"
        atomic.write_text(path, text)
    except Exception as log_exc:  # no second crash while reporting the first
        sys.stderr.write(text)
        return f"(not written: {type(log_exc).__name__}: {log_exc}; the traceback is above)"
    return str(path)
