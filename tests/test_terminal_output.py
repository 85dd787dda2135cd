"""Names and paths from files, recipes or the environment reach the terminal as text: never markup, never escapes.

Every printer goes through console's escaping: messages and errors, tables (pipeline summary,
bench report), progress descriptions (ninja's lines, pipeline bars), plain result lines.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest
from rich.console import Console

from harness import console
from harness.bench.report import Row, table
from harness.build import cmake
from harness.pipeline import progress
from harness.pipeline.plan import Outcome
from harness.pipeline.summary import render
from tests.conftest import run_harness

HOSTILE = "blk.0.[/bold]x [link=https://evil.invalid]click[/link] \x1b[31mred\x1b[0m\x07\x9b2J"


def _check(text: str) -> None:
    assert "\x1b[31m" not in text and "\x07" not in text and "\x9b" not in text
    assert "[/bold]" in text and "[link=https://evil.invalid]" in text  # shown as written


@pytest.fixture
def terminal(monkeypatch: pytest.MonkeyPatch) -> io.StringIO:
    """The stderr console replaced by a terminal that records what would be shown (no colour codes)."""
    buf = io.StringIO()
    monkeypatch.setitem(console._consoles, "err", Console(file=buf, force_terminal=True, color_system=None,
                                                          width=400, highlight=False, soft_wrap=True))
    return buf


def test_messages(terminal: io.StringIO, capsys: pytest.CaptureFixture[str]) -> None:
    for printer in (console.info, console.step, console.warn, console.error):
        printer(f"in {HOSTILE}")
    console.echo_command(["tool", HOSTILE])
    console.out(HOSTILE)
    _check(terminal.getvalue())
    _check(capsys.readouterr().out)


def test_tables() -> None:
    buf = io.StringIO()
    out = Console(file=buf, force_terminal=True, color_system=None, width=400)
    row = Row(mode=HOSTILE, spec="none", depth=None, category=HOSTILE, prompts=1, tokens=8, seconds=1.0,
              draft_n=0, draft_n_accepted=0)
    out.print(table([row]))
    render([Outcome("quantize", "q", Path(f"/m/{HOSTILE}.gguf"), False, 1.0,
                    {"params": {"type": HOSTILE}, "gguf": {"file_size": 1, "bits_per_weight": 4.5}})], out)
    _check(buf.getvalue())


def test_progress_descriptions(terminal: io.StringIO, tmp_path: Path) -> None:
    line = f"[1/2] Building CXX object {HOSTILE}.o"
    cmake.run_ninja(["printf", "%s\\n", line], tmp_path / "log", dict(os.environ))
    progress.configure(enabled=True)
    with progress.bar(f"quantize {HOSTILE}", total=2) as bar:
        bar.update(completed=1, detail=HOSTILE)
    _check(terminal.getvalue())


def test_error_naming_a_hostile_path_is_printed_literally(tmp_path: Path) -> None:
    res = run_harness("validate", tmp_path / f"{HOSTILE.replace('//', '')}.yaml", timeout=60)
    assert res.returncode == 2
    assert "Traceback" not in res.stderr and "no such file" in res.stderr
    assert "\x1b[31m" not in res.stderr and "\x07" not in res.stderr
    assert "[/bold]x [link=https:evil.invalid]click[/link]" in res.stderr
