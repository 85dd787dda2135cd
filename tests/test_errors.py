"""The error boundary: a bug exits 3 with one line and a crash log; a lock wait names its holder
and a timeout is a clean step error; the Hub's errors are told from our bugs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness import atomic, cli, flock
from harness.errors import InputError, StepError
from harness.source import hub
from tests.conftest import REPO, run_harness

# a bug in a command (a KeyError nothing expects), run the way a user runs the CLI
BUGGY = (
    "import sys; import harness.commands.validate as v\n"
    "def run(args):\n    return {}['no-such-key']\n"
    "v.run = run\n"
    "from harness import cli; sys.exit(cli.main(sys.argv[1:]))\n"
)


def buggy_cli(*args: str, cache: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HARNESS_CACHE": str(cache)}
    return subprocess.run([sys.executable, "-c", BUGGY, "validate", "r.yaml", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120)  # fmt: skip


def test_a_bug_exits_3_with_one_line_and_a_crash_log(tmp_path: Path) -> None:
    res = buggy_cli(cache=tmp_path / "cache")
    assert res.returncode == 3, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in res.stderr, res.stderr
    assert "internal error" in lines[0] and "KeyError: 'no-such-key'" in lines[0]
    log = tmp_path / "cache" / "crash.log"
    assert f"crash log: {log}" in lines[0]
    text = log.read_text()
    assert "Traceback (most recent call last)" in text and "KeyError: 'no-such-key'" in text
    assert "command:  harness validate r.yaml" in text and "llama-harness" in text


def test_a_bug_under_debug_shows_the_traceback(tmp_path: Path) -> None:
    res = buggy_cli("--debug", cache=tmp_path / "cache")
    assert res.returncode == 3 and "Traceback (most recent call last)" in res.stderr  # the same exit code
    assert "KeyError: 'no-such-key'" in res.stderr
    assert not (tmp_path / "cache" / "crash.log").exists()


def test_debug_keeps_the_exit_code_of_bad_input(tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_text("name: [\n")
    res = run_harness("validate", tmp_path / "bad.yaml", "--debug")
    assert res.returncode == 2 and "Traceback (most recent call last)" in res.stderr, res.stderr


def test_a_cache_directory_that_cannot_be_made_is_bad_input(tmp_path: Path) -> None:
    blocker = tmp_path / "afile"
    blocker.write_text("")
    (tmp_path / "r.yaml").write_text("name: r\n")
    res = run_harness("build", tmp_path / "r.yaml", "--dry-run", env={**os.environ, "HARNESS_CACHE": str(blocker)})
    assert res.returncode == 2, res.stderr
    assert "Traceback" not in res.stderr and f"the cache directory {blocker} (HARNESS_CACHE) cannot be used" in res.stderr


def test_a_bug_with_json_reports_kind_internal(tmp_path: Path) -> None:
    res = buggy_cli("--json", cache=tmp_path / "cache")
    assert res.returncode == 3
    error = json.loads(res.stdout)["error"]
    assert (error["kind"], error["exit_code"]) == ("internal", 3)
    assert error["log"] == str(tmp_path / "cache" / "crash.log")


def test_the_crash_log_that_cannot_be_written_leaves_the_traceback_on_stderr(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    res = buggy_cli(cache=blocker / "cache")  # below a file: no directory can be made there
    assert res.returncode == 3
    assert "Traceback (most recent call last)" in res.stderr and "crash log: (not written:" in res.stderr


HOLDER = (
    "import sys, time; from pathlib import Path; from harness import atomic\n"
    "with atomic.lock(Path(sys.argv[1])):\n    print('held', flush=True); sys.stdin.read()\n"
)


@pytest.fixture
def held(tmp_path: Path) -> Iterator[tuple[Path, subprocess.Popen[str]]]:
    """A lock held by another real process (until its stdin closes)."""
    path = tmp_path / "thing.lock"
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(path), "harness-test-holder"], cwd=REPO,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)  # fmt: skip
    assert proc.stdout is not None and proc.stdout.readline() == "held\n"
    yield path, proc
    assert proc.stdin is not None
    proc.stdin.close()
    proc.wait(timeout=30)


def test_a_lock_wait_says_who_holds_it_and_a_timeout_is_a_step_error(
    held: tuple[Path, subprocess.Popen[str]], capsys: pytest.CaptureFixture[str]
) -> None:
    path, proc = held
    started = time.monotonic()
    with pytest.raises(StepError) as caught, atomic.lock(path, timeout=0.5):
        pass
    assert time.monotonic() - started >= 0.5
    err = " ".join(capsys.readouterr().err.split())
    assert f"waiting for the lock {path} (up to 0.5 s): held by pid {proc.pid} (" in err, err
    message = str(caught.value)
    assert f"gave up after 0.5 s waiting for the lock {path}: held by pid {proc.pid}" in message
    assert "harness-test-holder" in message  # the holder's command line


def test_a_released_lock_is_taken_and_its_holder_record_goes(held: tuple[Path, subprocess.Popen[str]]) -> None:
    path, proc = held
    assert flock.holder_path(path).exists()
    assert proc.stdin is not None
    proc.stdin.close()
    proc.wait(timeout=30)
    assert not flock.holder_path(path).exists()  # the holder removed its record on release
    lock = atomic.lock(path, timeout=5)
    with lock, lock:  # reentrant (the same object)
        assert lock.is_locked and f"pid {os.getpid()}" in flock.holder(path)
    assert not lock.is_locked and not flock.holder_path(path).exists()


def test_a_bug_inside_the_hub_client_is_not_called_unreachable(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only what the Hub client raises for a Hub it cannot ask becomes "cannot reach the Hub"."""
    from huggingface_hub import HfApi

    def buggy(*args: object, **kwargs: object) -> None:
        raise TypeError("a bug")

    monkeypatch.setattr(HfApi, "model_info", buggy)
    with pytest.raises(TypeError, match="a bug"):
        hub._model_info("org/model", "main")

    def refused(*args: object, **kwargs: object) -> None:
        raise ConnectionRefusedError(111, "Connection refused")

    monkeypatch.setattr(HfApi, "model_info", refused)
    with pytest.raises(StepError, match="cannot reach the Hugging Face Hub"):
        hub._model_info("org/model", "main")
    monkeypatch.undo()
    with pytest.raises(InputError, match="not a Hugging Face Hub repo id"):  # refused before anything is asked
        hub._model_info("not a repo id", "main")


def test_the_cli_boundary_maps_a_bug_in_process(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
                                                tmp_path: Path) -> None:  # fmt: skip
    import harness.commands.validate as validate

    def run(args: object) -> int:
        raise RuntimeError("boom\nsecond line")

    monkeypatch.setattr(validate, "run", run)
    assert cli.main(["validate", "r.yaml"]) == 3
    err = capsys.readouterr().err
    assert "RuntimeError: boom" in err and "second line" not in err
    assert "second line" in (Path(os.environ["HARNESS_CACHE"]) / "crash.log").read_text()
