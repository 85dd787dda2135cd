"""One family of errors, each with the exit code the CLI returns for it.

Exit codes: 2 bad input (recipe, arguments, malformed files), 1 a failed step
(git, cmake, a tool), 3 an internal error (a bug: the CLI writes its traceback to a crash log),
130 interrupted.  Messages are written for people: the CLI
prints ``str(error)`` and nothing else unless ``--debug`` is given.  With ``--json``
it prints ``{"ok": false, "error": error.to_json()}`` on stdout as well: the kind,
message, file, line and key path (recipe and lock problems carry them as fields,
never parsed back out of the message), and the exit code.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any, NamedTuple


class Problem(NamedTuple):
    """One problem in an input file: ``FILE:LINE: key.path: message`` (line 1-based, key a dotted path).

    (A NamedTuple, not a dataclass: this module is imported on every start, and dataclasses
    pulls in ``inspect``.)
    """

    file: str
    line: int | None
    key: str | None
    message: str

    def __str__(self) -> str:
        where = self.file + (f":{self.line}" if self.line is not None else "")
        return f"{where}: {self.key}: {self.message}" if self.key else f"{where}: {self.message}"


class HarnessError(Exception):
    exit_code = 1
    kind = "error"

    def __init__(
        self,
        message: str,
        *,
        hint: str | None = None,
        file: str | None = None,
        line: int | None = None,
        key: str | None = None,
        details: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.file = file
        self.line = line
        self.key = key
        self.details = details or {}

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message}\n{self.hint}"

    def to_json(self) -> dict[str, Any]:
        """The ``error`` object of a failed command's ``--json`` output."""
        return {
            "kind": self.kind,
            "message": self.message,
            "file": self.file,
            "line": self.line,
            "key": self.key,
            "exit_code": self.exit_code,
            **({"hint": self.hint} if self.hint else {}),
            **self.details,
        }


class InputError(HarnessError):
    """Bad input: a recipe, an argument, a malformed file.  Exit code 2."""

    exit_code = 2
    kind = "input"

    @classmethod
    def of(cls, problems: list[Problem]) -> InputError:
        """Every problem of one input at once; file, line and key are the first problem's."""
        first = problems[0]
        return cls(
            "\n".join(map(str, problems)),
            file=first.file,
            line=first.line,
            key=first.key,
            details={"problems": [p._asdict() for p in problems]},
        )


class UsageError(InputError):
    """Arguments the command line parser refused (argparse's own message).  Exit code 2."""

    kind = "usage"


class StepError(HarnessError):
    """A step that ran and failed (git, cmake, ninja, a llama.cpp tool).  Exit code 1."""

    exit_code = 1
    kind = "step"


class CommandFailed(StepError):
    """A subprocess exited non-zero; carries the command, its exit code and its output's tail."""

    kind = "command"

    def __init__(self, argv: list[str], returncode: int, output_tail: str, log: str | None = None) -> None:
        import shlex

        self.argv = argv
        self.returncode = returncode
        self.output_tail = output_tail
        self.log = log
        lines = [f"command failed with exit code {returncode}: {shlex.join(argv)}"]
        if output_tail.strip():
            lines.append("  output (last lines):")
            lines.extend("    " + line for line in output_tail.rstrip().splitlines())
        if log:
            lines.append(f"  full log: {log}")
        super().__init__("\n".join(lines), details={"command": list(argv), "returncode": returncode, "log": log})


class InternalError(HarnessError):
    """A bug: an exception no harness code expected.  Exit code 3; the traceback goes to a crash log."""

    exit_code = 3
    kind = "internal"


@contextlib.contextmanager
def about_file(path: object) -> Iterator[None]:
    """A HarnessError raised inside names ``path`` as its ``file`` (for --json) unless it names one."""
    try:
        yield
    except HarnessError as exc:
        exc.file = exc.file or str(path)
        raise
