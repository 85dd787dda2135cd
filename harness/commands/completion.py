"""harness completion bash|zsh|fish: the shell code that completes harness's commands and flags.

Made by argcomplete: the shell function runs ``harness`` with ``_ARGCOMPLETE`` set and the
line being completed, and ``harness.cli.main`` answers from the real parser (commands,
sub-commands, flags, file names), so completion never drifts from the CLI.
"""

from __future__ import annotations

import argparse

from harness import console

SHELLS = ("bash", "zsh", "fish")
HOW = {
    "bash": 'eval "$(harness completion bash)"   # in ~/.bashrc',
    "zsh": 'eval "$(harness completion zsh)"    # in ~/.zshrc (after compinit)',
    "fish": "harness completion fish | source  # in ~/.config/fish/config.fish",
}


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "completion",
        help="print shell completion code (bash, zsh or fish)",
        epilog="\n".join(HOW.values()),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("shell", choices=SHELLS)
    p.add_argument("--prog", default="harness", help="the command name to complete (default: harness)")
    p.add_argument("--json", action="store_true", help='{"shell", "script"} instead of the script')


def run(args: argparse.Namespace) -> int:
    from argcomplete.shell_integration import shellcode

    script = shellcode([args.prog], shell=args.shell)
    if args.json:
        console.emit_json({"shell": args.shell, "prog": args.prog, "script": script})
    else:
        console.out(script.rstrip("\n"))
    return 0
