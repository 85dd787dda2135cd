"""runner.service: a long-running child (llama-server, rpc-server) started, logged, probed and stopped as a group.

Real processes: a leader that starts a grandchild ignoring SIGTERM, so stopping the leader alone
would leave the grandchild running; the stop must reach the whole group.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness import runner
from harness.errors import InputError

# the leader: a grandchild that ignores SIGTERM, our environment, then "ready", then it waits
LEADER = """
import os, subprocess, sys, time
g = subprocess.Popen([sys.executable, "-c",
                      "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('armed', flush=True); time.sleep(600)"])
for k, v in sorted(os.environ.items()):
    print(f"env {k}={v}")
print(f"grandchild {g.pid}", flush=True)
time.sleep(0.5)  # the grandchild has set its SIGTERM handler ('armed' in the log)
print("ready", flush=True)
time.sleep(600)
"""


def _gone(pid: int) -> bool:
    """No such process, or a zombie (killed, not yet reaped by whoever adopted it)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] == b"Z"
    except FileNotFoundError:
        return True


def _wait_gone(pid: int, limit: float = 30.0) -> bool:
    deadline = time.monotonic() + limit
    while not _gone(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def _ready_grandchild(log: Path) -> int | None:
    lines = log.read_text().splitlines()  # the first line echoes the command, this script included
    if "ready" not in lines or "armed" not in lines:
        return None
    return next(int(line.split()[1]) for line in lines if re.fullmatch(r"grandchild \d+", line))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_a_service_is_probed_logged_scrubbed_and_stopped_as_a_group(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_TOKEN", "hf_do_not_leak")
    monkeypatch.setenv("LLAMA_API_KEY", "key_do_not_leak")
    monkeypatch.setenv("TOKENIZERS_PARALLELISM", "false")
    log = tmp_path / "logs" / "service.log"
    log.parent.mkdir()
    log.write_text("an earlier run\n")
    with runner.service([sys.executable, "-c", LEADER], log_path=log, grace=1.0) as svc:
        grandchild = svc.wait_ready(lambda: _ready_grandchild(log), timeout=120, poll=0.05,
                                    exited=lambda code: AssertionError(f"exited {code}"),
                                    timed_out=lambda: AssertionError("not ready"))
        leader = svc.pid
        assert os.getpgid(grandchild) == leader == os.getsid(leader)  # its own session and group
        assert not svc.exited()
    assert svc.reaped and svc.process.returncode is not None
    assert _wait_gone(grandchild), "the grandchild outlived the stop (SIGKILL after the grace missed it)"
    text = log.read_text()
    assert text.startswith("an earlier run\n+ ")  # appended, the command echoed first
    assert "env TOKENIZERS_PARALLELISM=false" in text
    assert "do_not_leak" not in text and "env HF_TOKEN" not in text and "env LLAMA_API_KEY" not in text


def test_a_service_that_dies_before_it_is_ready(tmp_path: Path) -> None:
    log = tmp_path / "dies.log"
    probed = []

    def probe() -> bool | None:
        probed.append(1)
        return None

    with pytest.raises(RuntimeError, match="exited 3") as caught, \
            runner.service(["sh", "-c", "echo going away; exit 3"], log_path=log) as svc:
        svc.wait_ready(probe, timeout=120, poll=0.05, exited=lambda code: RuntimeError(f"exited {code}"),
                       timed_out=lambda: AssertionError("timed out instead of seeing the exit"))
    assert caught.value is not None and svc.reaped and svc.process.returncode == 3
    assert runner.log_tail(log).splitlines() == ["+ sh -c 'echo going away; exit 3'", "going away"]


def test_a_service_that_never_gets_ready_times_out_and_is_stopped(tmp_path: Path) -> None:
    with pytest.raises(TimeoutError), runner.service(["sleep", "600"], log_path=tmp_path / "slow.log", grace=5.0) as svc:
        svc.wait_ready(lambda: None, timeout=0.3, poll=0.05, exited=lambda code: AssertionError(code),
                       timed_out=lambda: TimeoutError("not ready"))
    assert svc.process.returncode == -15  # SIGTERM was enough: no SIGKILL needed


def test_a_missing_program_is_an_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="cannot run /nonexistent/server"), \
            runner.service(["/nonexistent/server"], log_path=tmp_path / "x.log"):
        pass


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_a_service_dies_with_the_harness_even_on_sigkill(tmp_path: Path) -> None:
    """The harness killed with SIGKILL runs no cleanup: the kernel (prctl) stops the service."""
    harness_like = ("import sys, time\nfrom pathlib import Path\nfrom harness import runner\n"
                    "with runner.service(['sleep', '600'], log_path=Path(sys.argv[1])) as svc:\n"
                    "    print(svc.pid, flush=True)\n    time.sleep(600)\n")
    parent = subprocess.Popen([sys.executable, "-c", harness_like, str(tmp_path / "s.log")], stdout=subprocess.PIPE,
                              text=True, start_new_session=True)
    leader = 0
    try:
        assert parent.stdout is not None
        leader = int(parent.stdout.readline())
        assert not _gone(leader)
        parent.kill()
        parent.wait()
        assert _wait_gone(leader), "the service outlived the harness"
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
        if leader and not _gone(leader):
            os.kill(leader, signal.SIGKILL)
