"""Parse arguments and dispatch to ``harness/commands/<verb>.py``; map errors to exit codes.

Each command module defines ``add_parser(subparsers)`` and ``run(args) -> int``.
Adding a command is one file and one line in ``COMMANDS``.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from types import ModuleType

from harness import __version__, console
from harness.errors import HarnessError

# verb -> module under harness.commands
COMMANDS: dict[str, str] = {
    "validate": "validate",
    "lock": "lock",
    "prepare": "prepare",
    "patches": "patches",
    "build": "build",
    "verify": "verify",
    "doctor": "doctor",
    "nightly": "nightly",
    "gguf": "gguf",
    "convert": "convert",
    "imatrix": "imatrix",
    "quantize": "quantize",
    "pipeline": "pipeline",
    "serve": "serve",
    "bench": "bench",
    "rpc-server": "rpc_server",
}


def _load(module: str) -> ModuleType:
    return importlib.import_module(f"harness.commands.{module}")


def _verb(argv: list[str] | None) -> str | None:
    """The command named in ``argv`` (None: unknown yet, so every command is loaded for --help)."""
    for arg in argv or []:
        if not arg.startswith("-"):
            return arg if arg in COMMANDS else None
    return None


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """Only the command being run is imported (start-up time matters: a no-op build is ~0.3 s)."""
    verb = _verb(argv)
    parser = argparse.ArgumentParser(
        prog="harness",
        description="Declarative, reproducible llama.cpp builds with unmerged PRs, patches and MTP-aware model work.",
    )
    parser.add_argument("--version", action="version", version=f"llama-harness {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="echo every command run")
    parser.add_argument("-q", "--quiet", action="store_true", help="only errors and results")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, module in COMMANDS.items():
        if verb is None or name == verb:
            _load(module).add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    console.configure(verbose=args.verbose, quiet=args.quiet)
    module = _load(COMMANDS[args.command])
    try:
        return int(module.run(args) or 0)
    except HarnessError as exc:
        if args.debug:
            raise
        console.error(str(exc))
        return exc.exit_code
    except KeyboardInterrupt:
        console.error("interrupted")
        return 130
    except BrokenPipeError:
        return 1


if __name__ == "__main__":
    sys.exit(main())
