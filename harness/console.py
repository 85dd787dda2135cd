"""Output for people (stderr, via rich) and for scripts (``--json`` on stdout)."""

from __future__ import annotations

import json
import os
import re
import shlex
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console

_state = {"verbose": False, "quiet": False}
_consoles: dict[str, Console] = {}


class _OnFirstUse:
    """Stands in for the stderr console: rich is imported when something is first printed
    (``--help`` and a no-op build never pay for it)."""

    def __getattr__(self, name: str) -> Any:
        return getattr(err_console(), name)


_err: Any = _OnFirstUse()


def configure(*, verbose: bool = False, quiet: bool = False) -> None:
    _state["verbose"] = verbose or os.environ.get("HARNESS_VERBOSE", "") not in ("", "0")
    _state["quiet"] = quiet


def verbose() -> bool:
    return _state["verbose"]


def err_console() -> Console:
    """The stderr console (made, and rich imported, on first use)."""
    if "err" not in _consoles:
        from rich.console import Console

        _consoles["err"] = Console(stderr=True, highlight=False, soft_wrap=True)
    return _consoles["err"]


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


def literal(text: str) -> str:
    """Data (a name, a path, a tool's output) to put in rich markup, a table cell or a progress
    description: printed as is, control characters and ANSI codes removed."""
    return _escape(text)


def emit_json(data: Any) -> None:
    """A command's ``--json`` result on stdout.  Every result says ``ok``: an object that does not set it
    (or each object of a list) gets ``"ok": true`` first, as a result printed on success; a command whose
    result can fail sets it itself, and a failure is the CLI's ``{"ok": false, "error": ...}``."""
    sys.stdout.write(json.dumps(with_ok(data), indent=2, sort_keys=False, default=str) + "\n")
    sys.stdout.flush()


def with_ok(data: Any) -> Any:
    """``data`` with ``"ok": true`` where an object (or an object of a list) does not say ``ok``."""
    if isinstance(data, dict):
        return data if "ok" in data else {"ok": True, **data}
    if isinstance(data, list):
        return [with_ok(d) if isinstance(d, dict) else d for d in data]
    return data


def out(message: str = "") -> None:
    """A line of the command's result for people, on stdout (control characters and ANSI codes removed)."""
    sys.stdout.write(plain(message) + "\n")


# C0 and C1 control characters (ANSI escape sequences start with ESC), except tab and newline
_CONTROL = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def plain(text: str) -> str:
    """Text from files, recipes or paths made safe for a terminal: control characters and ANSI codes removed."""
    return _CONTROL.sub("", text)


def _escape(text: str) -> str:
    """``plain`` text that rich prints literally: ``[/bold]`` or ``[link=...]`` in a name are not markup."""
    from rich.markup import escape as markup_escape

    return markup_escape(plain(text))
