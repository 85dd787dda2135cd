"""One family of errors, each with the exit code the CLI returns for it.

Exit codes: 2 bad input (recipe, arguments, malformed files), 1 a failed step
(git, cmake, a tool), 130 interrupted.  Messages are written for people: the CLI
prints ``str(error)`` and nothing else unless ``--debug`` is given.
"""

from __future__ import annotations


class HarnessError(Exception):
    exit_code = 1

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message}\n{self.hint}"


class InputError(HarnessError):
    """Bad input: a recipe, an argument, a malformed file.  Exit code 2."""

    exit_code = 2


class StepError(HarnessError):
    """A step that ran and failed (git, cmake, ninja, a llama.cpp tool).  Exit code 1."""

    exit_code = 1


class CommandFailed(StepError):
    """A subprocess exited non-zero; carries the command, its exit code and its output's tail."""

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
        super().__init__("\n".join(lines))
