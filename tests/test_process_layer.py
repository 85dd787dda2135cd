"""One process layer: no module outside harness/runner.py starts a process (STYLE.md habit 16).

A call to ``subprocess.Popen/run/call/check_call/check_output/getoutput/getstatusoutput``, ``os.fork``,
``os.exec*``, ``os.spawn*``, ``os.posix_spawn*``, ``os.system``, ``os.popen``, ``pty.spawn`` or
``asyncio.create_subprocess_*``, however imported, counts.  Naming ``subprocess.TimeoutExpired``
(``runner.TimeoutExpired``) or a ``Popen`` type does not start anything and is not counted.
``EXCEPTIONS`` lists the modules still allowed, each with its reason; one that no longer starts a
process fails the test, so the list only shrinks.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

PACKAGE = Path(__file__).resolve().parent.parent / "harness"
RUNNER = "runner.py"

STARTERS = {
    "subprocess": {"Popen", "run", "call", "check_call", "check_output", "getoutput", "getstatusoutput"},
    "os": {"fork", "forkpty", "system", "popen", "execl", "execle", "execlp", "execlpe", "execv", "execve", "execvp",
           "execvpe", "spawnl", "spawnle", "spawnlp", "spawnlpe", "spawnv", "spawnve", "spawnvp", "spawnvpe",
           "posix_spawn", "posix_spawnp"},
    "pty": {"spawn", "fork"},
    "asyncio": {"create_subprocess_exec", "create_subprocess_shell"},
}  # fmt: skip

# module (relative to harness/): why it still starts a process itself
EXCEPTIONS: dict[str, str] = {
    "lifetime.py": "the watcher that kills a child's group once we are gone: runner ties its children to us "
    "through this module (importing runner would be a cycle) and the watcher must outlive us; it gets no secrets",
}


def starters(path: Path) -> list[str]:
    """``module.function`` of every process-starting call in ``path`` (line numbers appended)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    aliases: dict[str, str] = {}  # local name -> "module" or "module.function"
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name in STARTERS:
                    aliases[a.asname or a.name] = a.name
        elif isinstance(node, ast.ImportFrom) and node.module in STARTERS and not node.level:
            for a in node.names:
                aliases[a.asname or a.name] = f"{node.module}.{a.name}"
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        name = None
        if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) and func.value.id in aliases:
            name = f"{aliases[func.value.id]}.{func.attr}"
        elif isinstance(func, ast.Name) and func.id in aliases:
            name = aliases[func.id]
        if name is not None:
            module, _, function = name.partition(".")
            if function in STARTERS.get(module, ()):
                found.append(f"{name} (line {node.lineno})")
    return found


def _offenders() -> dict[str, list[str]]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE).as_posix()
        if rel != RUNNER and (calls := starters(path)):
            found[rel] = calls
    return found


def test_only_the_runner_starts_processes() -> None:
    found = {rel: calls for rel, calls in _offenders().items() if rel not in EXCEPTIONS}
    assert not found, "processes started outside harness/runner.py (use runner.run/run_bytes/stream/service):\n" + \
        "\n".join(f"  harness/{rel}: {', '.join(calls)}" for rel, calls in found.items())


def test_every_exception_is_still_needed() -> None:
    stale = set(EXCEPTIONS) - set(_offenders())
    assert not stale, f"EXCEPTIONS no longer needed (remove them): {sorted(stale)}"


def test_the_check_sees_every_way_of_starting_one(tmp_path: Path) -> None:
    """The check cannot pass by seeing nothing: each spelling is found, a type or an exception is not."""
    src = tmp_path / "m.py"
    src.write_text(
        "import subprocess, os\nimport subprocess as sp\nfrom subprocess import Popen as P, TimeoutExpired\n"
        "from os import execv\n"
        "def f(p: subprocess.Popen[bytes]) -> None:\n"
        "    subprocess.run(['x'])\n    sp.check_output(['x'])\n    P(['x'])\n    os.fork()\n    execv('x', [])\n"
        "    try:\n        pass\n    except subprocess.TimeoutExpired:\n        pass\n"
    )
    assert starters(src) == ["subprocess.run (line 6)", "subprocess.check_output (line 7)", "subprocess.Popen (line 8)",
                             "os.fork (line 9)", "os.execv (line 10)"]
    assert starters(PACKAGE / RUNNER)  # the runner itself does start them
