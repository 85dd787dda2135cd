"""A stopped build leaves no compiler running: real ninja, a slow fake compiler, SIGTERM and kill -9.

ninja runs every job in a process group of its own, so a signal to ninja alone (the old SIGKILL
as death signal) left the compilers writing objects into the build directory a later build
linked.  Now ninja gets SIGTERM (from ``lifetime.stop`` when the harness unwinds, from the
kernel when the harness dies), passes it on to its jobs, waits for them and deletes their
half-written outputs; and a new build waits for whatever still works in its build directory.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from harness import lifetime
from harness.build import cmake
from harness.errors import StepError
from tests.conftest import REPO

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="reads /proc")

JOBS = 4
# the fake compiler: a while, then the object (what a killed build's compile would write late)
NINJA = textwrap.dedent("""
    rule cc
      command = sh -c 'echo started >> started.log; sleep 20; echo code > $out'
    build o1.o: cc
    build o2.o: cc
    build o3.o: cc
    build o4.o: cc
""")

# the harness's way of running ninja, in a process of its own that the test signals
PARENT = textwrap.dedent("""
    import sys
    from pathlib import Path
    from harness import lifetime, runner
    lifetime.handle_stop_signals()
    if sys.argv[3] == "ignore-int":  # a script started us in the background: SIGINT inherited as SIG_IGN
        pass
    try:
        runner.stream([sys.argv[1], "-C", sys.argv[2], "-j4"], log_path=Path(sys.argv[2]) / "log")
    except KeyboardInterrupt:
        sys.exit(130)
""")

# the control: ninja as it was run before (same process group, SIGKILL when the parent dies)
UNTIED = textwrap.dedent("""
    import subprocess, sys, time
    from harness import lifetime
    subprocess.Popen([sys.argv[1], "-C", sys.argv[2], "-j4"], preexec_fn=lifetime.preexec(),
                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(600)
""")


def _build_dir(tmp_path: Path) -> Path:
    bdir = tmp_path / "build dir"
    bdir.mkdir()
    (bdir / "build.ninja").write_text(NINJA)
    return bdir


def _start(script: str, bdir: Path, *extra: str, **kw: object) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen([sys.executable, "-c", script, cmake.program("ninja"), str(bdir), *extra], cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, **kw)  # type: ignore[call-overload]
    deadline = time.monotonic() + 30
    started = bdir / "started.log"
    while not (started.exists() and len(started.read_text().splitlines()) == JOBS):
        assert time.monotonic() < deadline and proc.poll() is None, "ninja did not start its jobs"
        time.sleep(0.05)
    assert len(lifetime.writers(bdir)) >= 2 * JOBS  # sh and sleep of every job (ninja's cwd is ours)
    return proc  # type: ignore[no-any-return]


def _no_writers_within(bdir: Path, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while lifetime.writers(bdir):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def _objects(bdir: Path) -> list[str]:
    return sorted(p.name for p in bdir.glob("*.o"))


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGKILL])
def test_a_stopped_build_leaves_no_compiler_running(tmp_path: Path, sig: signal.Signals) -> None:
    bdir = _build_dir(tmp_path)
    proc = _start(PARENT, bdir, "default")
    t0 = time.monotonic()
    proc.send_signal(sig)
    code = proc.wait(timeout=10)
    assert code == {signal.SIGTERM: 143, signal.SIGINT: 130, signal.SIGKILL: -9}[sig]
    assert _no_writers_within(bdir, 5), f"still working in the build dir: {lifetime.writers(bdir)}"
    assert time.monotonic() - t0 < 5
    assert _objects(bdir) == []  # and none written later by a survivor


def test_sigint_stops_a_build_started_in_the_background(tmp_path: Path) -> None:
    """A script's `harness build &` inherits SIGINT as SIG_IGN; the harness restores it."""
    bdir = _build_dir(tmp_path)
    proc = _start(PARENT, bdir, "ignore-int", preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=10) == 130
    assert _no_writers_within(bdir, 5) and _objects(bdir) == []


def test_the_old_way_left_compilers_writing(tmp_path: Path) -> None:
    """The control: ninja killed with SIGKILL alone leaves its jobs running (so the test above can fail)."""
    bdir = _build_dir(tmp_path)
    proc = _start(UNTIED, bdir)
    proc.kill()
    proc.wait()
    time.sleep(1)
    survivors = lifetime.writers(bdir)
    try:
        assert survivors, "expected the old way to leave compilers behind"
    finally:
        for pid in survivors:
            os.kill(pid, signal.SIGKILL)


def test_a_new_build_waits_for_an_earlier_runs_processes(tmp_path: Path) -> None:
    bdir = tmp_path / "build"
    bdir.mkdir()
    (bdir / "sub").mkdir()
    left = subprocess.Popen(["sleep", "600"], cwd=bdir / "sub")
    try:
        assert lifetime.writers(bdir) == [left.pid]
        with pytest.raises(StepError, match=f"pids {left.pid}"):
            lifetime.wait_for_writers(bdir, timeout=0.3)
    finally:
        left.kill()
        left.wait()
    lifetime.wait_for_writers(bdir, timeout=0.3)  # gone (a zombie cannot write): no wait
    assert lifetime.writers(tmp_path / "elsewhere") == []
