"""Output for people (stderr, via rich) and for scripts (``--json`` on stdout)."""

from __future__ import annotations

import json
import os
import re
import shlex
import sys
from typing import Any

from rich.console import Console
from rich.markup import escape as markup_escape

_err = Console(stderr=True, highlight=False, soft_wrap=True)
_state = {"verbose": False, "quiet": False}


def configure(*, verbose: bool = False, quiet: bool = False) -> None:
    _state["verbose"] = verbose or os.environ.get("HARNESS_VERBOSE", "") not in ("", "0")
    _state["quiet"] = quiet


def verbose() -> bool:
    return _state["verbose"]


def err_console() -> Console:
    return _err


def echo_command(argv: list[str]) -> None:
    if not _state["quiet"]:
        _err.print(f"[dim]+ {_escape(shlex.join(argv))}[/dim]")


def info(message: str) -> None:
    if not _state["quiet"]:
        _err.print(_escape(message))


def step(message: str) -> None:
    if not _state["quiet"]:
        _err.print(f"[bold]==>[/bold] {_escape(message)}")


def warn(message: str) -> None:
    _err.print(f"[yellow]warning:[/yellow] {_escape(message)}")


def error(message: str) -> None:
    _err.print(f"[red]error:[/red] {_escape(message)}")


def emit_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")
    sys.stdout.flush()


def out(message: str = "") -> None:
    """A line of the command's result for people, on stdout."""
    sys.stdout.write(message + "\n")


# C0 and C1 control characters (ANSI escape sequences start with ESC), except tab and newline
_CONTROL = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def plain(text: str) -> str:
    """Text from files, recipes or paths made safe for a terminal: control characters and ANSI codes removed."""
    return _CONTROL.sub("", text)


def _escape(text: str) -> str:
    """``plain`` text that rich prints literally: ``[/bold]`` or ``[link=...]`` in a name are not markup."""
    return markup_escape(plain(text))
