"""Parse arguments and dispatch to ``harness/commands/<verb>.py``; map errors to exit codes.

Each command module defines ``add_parser(subparsers)`` and ``run(args) -> int``.
Adding a command is one file and one line in ``COMMANDS``.  Command modules import
only argparse and small harness modules at the top, and what their work needs inside
``run``: ``harness --help`` and a no-op ``harness build`` never load pydantic, rich,
requests, huggingface_hub, gguf, numpy or matplotlib (``benchmarks/startup_bench.py``).

With ``--json`` anywhere before a ``--``, a failure (bad arguments included) prints one
``{"ok": false, "error": {...}}`` object on stdout besides the message on stderr.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import sys
from collections.abc import Sequence
from types import ModuleType
from typing import Any, NoReturn

from harness import __version__, console, lifetime
from harness.errors import HarnessError, InternalError, UsageError

# verb -> module under harness.commands
COMMANDS: dict[str, str] = {
    "validate": "validate",
    "lock": "lock",
    "prepare": "prepare",
    "bisect": "bisect",
    "patches": "patches",
    "build": "build",
    "verify": "verify",
    "pack": "pack",
    "cache": "cache",
    "doctor": "doctor",
    "nightly": "nightly",
    "gguf": "gguf",
    "convert": "convert",
    "imatrix": "imatrix",
    "quantize": "quantize",
    "pipeline": "pipeline",
    "serve": "serve",
    "bench": "bench",
    "quality": "quality",
    "completion": "completion",
    "rpc-server": "rpc_server",
}

# accepted before the command and after it (and after a sub-command): harness build R -v
COMMON_FLAGS: list[tuple[tuple[str, ...], str, str]] = [
    (("-v", "--verbose"), "verbose", "echo every command run (git and probes too)"),
    (("-q", "--quiet"), "quiet", "only errors and results"),
    (("--debug",), "debug", "show tracebacks"),
]


class Parser(argparse.ArgumentParser):
    """argparse, but a refused command line raises UsageError (so --json can report it too), and
    ``passthrough=DEST`` hands everything after the first ``--`` to ``DEST`` untouched.

    Why not ``nargs=argparse.REMAINDER``: a REMAINDER positional after RECIPE also swallows the
    options that follow RECIPE (``serve R --model M -- -t 2`` would give it ``--model M -- -t 2``),
    and ``nargs="*"`` is matched, empty, right at RECIPE.  Splitting at ``--`` before parsing is
    what ``git`` and ``cargo run`` do.
    """

    def __init__(self, *args: Any, passthrough: str | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.passthrough = passthrough
        if passthrough:
            self.set_defaults(**{passthrough: []})

    def parse_known_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        argv = list(sys.argv[1:] if args is None else args)
        if not self.passthrough or "--" not in argv:
            return super().parse_known_args(argv, namespace)
        cut = argv.index("--")
        ns, unknown = super().parse_known_args(argv[:cut], namespace)
        setattr(ns, self.passthrough, argv[cut + 1 :])
        return ns, unknown

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{self.prog}: {message}", details={"usage": self.format_usage().strip()})


def _load(module: str) -> ModuleType:
    return importlib.import_module(f"harness.commands.{module}")


def _verb(argv: list[str] | None) -> str | None:
    """The command named in ``argv`` (None: unknown yet, so every command is loaded for --help)."""
    for arg in argv or []:
        if arg == "--":
            return None
        if not arg.startswith("-"):
            return arg if arg in COMMANDS else None
    return None


def _own_args(argv: list[str]) -> list[str]:
    """The arguments before a ``--`` (after it they belong to llama-server)."""
    return argv[: argv.index("--")] if "--" in argv else argv


def _add_common_flags(parser: argparse.ArgumentParser, *, top: bool) -> None:
    """-v/-q/--debug on ``parser`` and, with SUPPRESS defaults, on every sub-command below it."""
    for flags, dest, help_text in COMMON_FLAGS:
        free = [f for f in flags if f not in parser._option_string_actions]
        if free:
            parser.add_argument(*free, dest=dest, action="store_true", help=help_text,
                                default=False if top else argparse.SUPPRESS)  # fmt: skip
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in set(action.choices.values()):
                _add_common_flags(child, top=False)


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """Only the command being run is imported; --help and completion load them all (each is light)."""
    verb = _verb(argv)
    parser = Parser(
        prog="harness",
        description="Declarative, reproducible llama.cpp builds with unmerged PRs, patches and MTP-aware model work.",
        epilog="-v, -q and --debug work after the command too; --json on any command prints its result as JSON "
        "on stdout (an object, or a list of them: one per backend or file), each with \"ok\": true or false; "
        "{\"ok\": false, \"error\": {...}} when it fails.",
    )
    parser.add_argument("--version", action="version", version=f"llama-harness {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, module in COMMANDS.items():
        if verb is None or name == verb:
            _load(module).add_parser(sub)
    _add_common_flags(parser, top=True)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    own = _own_args(argv)
    as_json, debug = "--json" in own, "--debug" in own
    try:
        parser = build_parser(argv)
        if "_ARGCOMPLETE" in os.environ:  # the shell's completion function is asking (harness completion)
            import argcomplete

            argcomplete.autocomplete(parser)
        args = parser.parse_args(argv)
        lifetime.handle_stop_signals()  # SIGINT/SIGTERM unwind (stopping children) even when started in the background
        console.configure(verbose=args.verbose, quiet=args.quiet)
        as_json, debug = bool(getattr(args, "json", False)), args.debug
        return int(_load(COMMANDS[args.command]).run(args) or 0)
    except UsageError as exc:
        sys.stderr.write(exc.details["usage"] + "\n")
        return _fail(exc, as_json=as_json)
    except HarnessError as exc:
        if debug:
            _print_traceback()
        return _fail(exc, as_json=as_json)
    except KeyboardInterrupt:
        return _fail(None, as_json=as_json, kind="interrupted", message="interrupted", exit_code=130)
    except BrokenPipeError:  # `harness ... | head`: the reader is gone; end as git and coreutils do
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        return 128 + 13  # 141: what a shell reports for a process ended by SIGPIPE
    except Exception as exc:  # a bug: one line and a crash log (--debug: the traceback instead); exit 3
        if debug:
            _print_traceback()
            return _fail(InternalError(f"internal error (a bug): {type(exc).__name__} (the traceback is above)"),
                         as_json=as_json)
        from harness import crash

        log = crash.write_log(exc, argv)
        first = (str(exc).strip().splitlines() or [""])[0][:300]
        error = InternalError(f"internal error (a bug): {type(exc).__name__}: {first}; crash log: {log} "
                              "(--debug shows the traceback)", details={"log": log})  # fmt: skip
        return _fail(error, as_json=as_json)


def _print_traceback() -> None:
    import traceback

    traceback.print_exc()


def _fail(exc: HarnessError | None, *, as_json: bool, **fields: Any) -> int:
    error = exc.to_json() if exc is not None else {**fields}
    console.error(str(exc) if exc is not None else error["message"])
    if as_json:
        _emit_failure(error)
    return int(error["exit_code"])


def _emit_failure(error: dict[str, Any]) -> None:
    base = {"kind": "error", "message": "", "file": None, "line": None, "key": None, "exit_code": 1}
    console.emit_json({"ok": False, "error": {**base, **error}})


if __name__ == "__main__":
    sys.exit(main())
