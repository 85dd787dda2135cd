"""What a llama-server binary accepts, read from its own ``--help``; argv checked against it.

A fork adds flags and values (AtomicBot-ai's TurboQuant fork: ``turbo2/3/4`` for
``--cache-type-k/-v``), an older build lacks some (``--n-cpu-moe``), so nothing here is a
fixed list: every flag, every ``--spec-type`` and every cache type the harness passes is
checked against the binary that will run, before it starts (exit 2 naming the flag).

The layout parsed is common/arg.cpp's ``common_arg::to_string``: an option line starts in
column 0 with its names (``-ctk,  --cache-type-k TYPE``), then its value hint; its help
starts in column 40, on the same line when the names fit in 37 columns, else on the next;
``allowed values: a, b`` and ``{a,b}`` name the values an option takes.  Options take one
value when they show a hint (two for ``START END``); llama.cpp has no positional arguments
and no ``--flag=value`` form, and it turns ``_`` into ``-`` in ``--long_names``.
"""

from __future__ import annotations

import difflib
import functools
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from harness.errors import InputError

HELP_COLUMN = 40  # common_arg::to_string: n_leading_spaces
_NAME = re.compile(r"^--?[A-Za-z0-9][\w-]*$")
_HINT_WORD = re.compile(r"(?:<[^>]*>|\[[^\]]*\]|\{[^}]*\}|\S)+")
_NUMBER = re.compile(r"^-\d")


@dataclass(frozen=True)
class Option:
    names: tuple[str, ...]
    hint: str = ""
    help: str = ""
    choices: tuple[str, ...] = ()  # the values it accepts, when its help says
    multi: bool = False  # a comma-separated list of choices (--spec-type)

    @property
    def n_values(self) -> int:
        if not self.hint:
            return 0
        return len(_HINT_WORD.findall(self.hint))

    @property
    def summary(self) -> str:
        """The help text on one line, without its ``(env: ...)`` note."""
        return " ".join(line for line in self.help.splitlines() if not line.startswith("(env:"))

    @property
    def removed(self) -> bool:
        return "argument has been removed" in self.help


@dataclass(frozen=True)
class ServerHelp:
    """The options of one llama-server, by every name they answer to."""

    options: dict[str, Option] = field(default_factory=dict)
    source: str = "llama-server"

    @property
    def spec_types(self) -> tuple[str, ...]:
        option = self.options.get("--spec-type")
        return option.choices if option is not None else ()

    def choices(self, flag: str) -> tuple[str, ...]:
        option = self.options.get(flag)
        return option.choices if option is not None else ()

    def has(self, flag: str) -> bool:
        return _normal(flag) in self.options

    def problems(self, args: Sequence[str]) -> list[str]:
        """Why llama-server would refuse ``args`` (flags and their values), in order; empty if it would not."""
        found: list[str] = []
        i = 0
        while i < len(args):
            token = args[i]
            name = _normal(token)
            option = self.options.get(name)
            if option is None:
                if token.startswith("-") and not _NUMBER.match(token):
                    found.append(f"unknown flag {token!r}{_suggest(name, self.options)}")
                    # its value, if it has one, is not a second problem
                    i += 2 if i + 1 < len(args) and not args[i + 1].startswith("-") else 1
                else:
                    found.append(f"{token!r} is not a flag (llama-server takes no positional arguments)")
                    i += 1
                continue
            if option.removed:
                found.append(f"{token}: {option.summary}")
            values = args[i + 1 : i + 1 + option.n_values]
            if len(values) < option.n_values:
                found.append(f"{token} expects a value ({option.hint})")
            elif option.choices:
                for value in values[0].split(",") if option.multi else values[:1]:
                    if value not in option.choices:
                        close = difflib.get_close_matches(value, option.choices, n=1)
                        hint = f" (did you mean {close[0]!r}?)" if close else ""
                        found.append(f"{token} {value!r}: not a value this llama-server accepts{hint}; "
                                     f"it accepts {', '.join(option.choices)}")
            i += 1 + option.n_values
        return found

    def check(self, args: Sequence[str], *, origin: str) -> None:
        """Raise InputError (exit 2) naming every flag or value of ``args`` this llama-server would refuse."""
        found = self.problems(args)
        if found:
            raise InputError(
                f"{origin}: llama-server would refuse " + ("this" if len(found) == 1 else "these") + ":\n  "
                + "\n  ".join(found),
                hint=f"checked against `{self.source} --help`",
            )


def parse(text: str, source: str = "llama-server") -> ServerHelp:
    """The options of a ``llama-server --help`` text."""
    options: dict[str, Option] = {}
    blocks: list[tuple[str, list[str]]] = []
    for line in text.splitlines():
        if line.startswith("-") and not line.startswith("-----"):
            if len(line) > HELP_COLUMN and line[HELP_COLUMN - 3 : HELP_COLUMN] == "   ":
                blocks.append((line[:HELP_COLUMN].rstrip(), [line[HELP_COLUMN:].strip()]))
            else:
                blocks.append((line.rstrip(), []))
        elif blocks and line.startswith(" " * HELP_COLUMN):
            blocks[-1][1].append(line.strip())
    for spec, help_lines in blocks:
        names, hint = _names_and_hint(spec)
        if not names:
            continue
        text_help = "\n".join(help_lines)
        choices, multi = _choices(hint, text_help)
        option = Option(tuple(names), hint, text_help, choices, multi)
        for name in names:
            options[_normal(name)] = option
    return ServerHelp(options, source)


@functools.cache
def _read(binary: Path, mtime_ns: int) -> ServerHelp:
    from harness import runner

    result = runner.run([binary, "--help"], check=False, timeout=60)
    parsed = parse(result.stdout + result.stderr, source=str(binary))
    if not parsed.options:
        raise InputError(f"{binary} --help listed no options (exit code {result.returncode}); is it a llama-server?")
    return parsed


def read(binary: Path) -> ServerHelp:
    """``binary --help``, parsed (once per binary and modification time)."""
    return _read(binary, binary.stat().st_mtime_ns)


def _names_and_hint(spec: str) -> tuple[list[str], str]:
    names: list[str] = []
    names_continue = True
    rest = spec.split()
    while rest:
        token = rest[0]
        bare = token.rstrip(",")
        if not _NAME.match(bare) or (names and not names_continue):
            break
        names.append(bare)
        names_continue = token.endswith(",")
        rest.pop(0)
    return names, " ".join(rest)


def _choices(hint: str, help_text: str) -> tuple[tuple[str, ...], bool]:
    # a long list wraps at 70 columns (break_str_into_lines): a line ending in "," goes on
    allowed = re.search(r"allowed values:\s*((?:[^\n]*,\n)*[^\n]+)", help_text)
    if allowed:
        return tuple(v.strip() for v in allowed.group(1).replace("\n", " ").split(",") if v.strip()), False
    braces = re.fullmatch(r"\{([\w,-]+)\}", hint)
    if braces:
        return tuple(braces.group(1).split(",")), False
    if re.fullmatch(r"[a-z0-9]+(?:-[a-z0-9]+)*(?:,[a-z0-9]+(?:-[a-z0-9]+)*)+", hint):
        return tuple(hint.split(",")), True  # --spec-type none,draft-simple,...: a list of names
    return (), False


def _normal(flag: str) -> str:
    """llama.cpp's own spelling rule: ``--long_name`` is ``--long-name``."""
    return flag.replace("_", "-") if flag.startswith("--") else flag


def _suggest(name: str, options: dict[str, Option]) -> str:
    """A close flag this llama-server still takes; for a removed one, what its help names instead
    (``--draft-n-max`` is closest to ``--draft-max``, which "has been removed. use --spec-draft-n-max ...")."""
    close = difflib.get_close_matches(name, list(options), n=1)
    if not close:
        return ""
    option = options[close[0]]
    if not option.removed:
        return f" (did you mean {close[0]!r}?)"
    instead = [f for f in dict.fromkeys(re.findall(r"--[\w-]*\w", option.summary))
               if f in options and not options[f].removed]
    if not instead:
        return f" ({close[0]} has been removed too)"
    return f" (did you mean {' or '.join(map(repr, instead))}? {close[0]} has been removed)"
