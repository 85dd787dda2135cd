"""Output for people (stderr, via rich) and for scripts (``--json`` on stdout)."""

from __future__ import annotations

import json
import os
import shlex
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console

_state = {"verbose": False, "quiet": False}
_consoles: dict[str, Console] = {}


def configure(*, verbose: bool = False, quiet: bool = False) -> None:
    _state["verbose"] = verbose or os.environ.get("HARNESS_VERBOSE", "") not in ("", "0")
    _state["quiet"] = quiet


def verbose() -> bool:
    return _state["verbose"]


def err_console() -> Console:
    """The stderr console; rich is imported on first use (a no-op build or --help never pays for it)."""
    if "err" not in _consoles:
        from rich.console import Console

        _consoles["err"] = Console(stderr=True, highlight=False, soft_wrap=True)
    return _consoles["err"]


def echo_command(argv: list[str]) -> None:
    if not _state["quiet"]:
        err_console().print(f"[dim]+ {_escape(shlex.join(argv))}[/dim]")


def info(message: str) -> None:
    if not _state["quiet"]:
        err_console().print(_escape(message))


def step(message: str) -> None:
    if not _state["quiet"]:
        err_console().print(f"[bold]==>[/bold] {_escape(message)}")


def warn(message: str) -> None:
    err_console().print(f"[yellow]warning:[/yellow] {_escape(message)}")


def error(message: str) -> None:
    err_console().print(f"[red]error:[/red] {_escape(message)}")


def emit_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")
    sys.stdout.flush()


def out(message: str = "") -> None:
    """A line of the command's result for people, on stdout."""
    sys.stdout.write(message + "\n")


def _escape(text: str) -> str:
    return text.replace("[", "\\[")
