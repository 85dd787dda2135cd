"""kill -9 at chosen points, then the next run recovers with no manual step.

- a child of the harness dies with it (parent-death signal on Linux, a watcher elsewhere);
- ``harness serve`` killed with SIGKILL takes llama-server along, its key file already gone
  and no secret in the server's environment;
- ``harness build`` killed while assembling the new build, and again between the swap and
  the removal of the old copy: the published build is whole at every moment (old or new) and
  the next run leaves nothing behind;
- ``harness gguf graft`` killed with its output complete but not yet renamed, and at random
  moments while writing: the next run writes the output and leaves no temp file.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from harness import atomic
from harness.smoke import tiny_model
from tests import models
from tests.conftest import REPO, run_harness
from tests.test_serve import served_recipe

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="reads /proc")


def _dead(pid: int) -> bool:
    """Gone, or a zombie nobody reaped yet (a container's init may not reap)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


def _wait_dead(pid: int, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _dead(pid):
            return True
        time.sleep(0.05)
    return False


def _kill9(proc: subprocess.Popen[str]) -> None:
    proc.kill()
    proc.wait(timeout=30)


PARENT = textwrap.dedent("""
    import subprocess, sys, time
    from harness import lifetime
    if sys.argv[1] == "watcher":
        lifetime._PRCTL = None  # as on macOS: no parent-death signal
    if sys.argv[1] == "untied":  # the control: what happened before
        p = subprocess.Popen(["sleep", "600"], start_new_session=True)
    else:
        p = subprocess.Popen(["sleep", "600"], preexec_fn=lifetime.preexec(), start_new_session=True)
        lifetime.watch(p.pid)
    print(p.pid, flush=True)
    time.sleep(600)
""")

STREAM = textwrap.dedent("""
    import sys
    from pathlib import Path
    from harness import runner
    runner.stream(["sh", "-c", "echo $$; exec sleep 600"], log_path=Path(sys.argv[1]))
""")


@pytest.mark.parametrize("how", ["prctl", "watcher", "untied"])
def test_a_child_dies_with_the_killed_harness(how: str) -> None:
    parent = subprocess.Popen([sys.executable, "-c", PARENT, how], cwd=REPO, stdout=subprocess.PIPE, text=True)
    assert parent.stdout is not None
    child = int(parent.stdout.readline())
    time.sleep(0.5)
    assert not _dead(child)
    _kill9(parent)
    if how == "untied":  # without either, the orphan lives on (so the check above can fail)
        assert not _wait_dead(child, timeout=2)
        os.kill(child, signal.SIGKILL)
    else:
        assert _wait_dead(child), f"pid {child} outlived the harness ({how})"


def test_a_streamed_command_dies_with_the_killed_harness(tmp_path: Path) -> None:
    log = tmp_path / "log"
    parent = subprocess.Popen([sys.executable, "-c", STREAM, str(log)], cwd=REPO)
    deadline = time.monotonic() + 30
    while not (log.exists() and len(log.read_text().splitlines()) > 1) and time.monotonic() < deadline:
        time.sleep(0.05)
    child = int(log.read_text().splitlines()[1])
    _kill9(parent)  # type: ignore[arg-type]
    assert _wait_dead(child), "ninja/cmake would go on compiling after the harness was killed"


# --- serve ---------------------------------------------------------------------------------


@pytest.mark.slow
def test_serve_killed_with_sigkill_takes_llama_server_along(tmp_path: Path, llama_bin: Path) -> None:
    recipe, builds = served_recipe(tmp_path, llama_bin)
    model = tiny_model.write(tmp_path / "tiny.gguf")
    key = tmp_path / "key"
    key.write_text("s3cret-fault-key\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("LLAMA_")}
    env.update(HF_TOKEN="hf_secret_token", GITHUB_TOKEN="ghp_secret_token", AWS_SECRET_ACCESS_KEY="aws")
    proc = subprocess.Popen([sys.executable, "-m", "harness", "serve", "--json", str(recipe), "--model", str(model),
                             "--builds-dir", str(builds), "--api-key-file", str(key)],
                            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], 180)
    line = proc.stdout.readline() if ready else ""
    if not line:
        proc.kill()
        pytest.fail(f"harness serve printed no URL: {proc.communicate()[1]}")
    info = json.loads(line)
    pid, argv = int(info["pid"]), info["argv"]
    key_file = Path(argv[argv.index("--api-key-file") + 1])
    try:
        assert not key_file.exists(), "the key file outlived the server's reading it"
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        names = {e.split(b"=", 1)[0].decode() for e in environ if e}
        assert not names & {"HF_TOKEN", "GITHUB_TOKEN", "AWS_SECRET_ACCESS_KEY", "LLAMA_API_KEY"}
        assert "PATH" in names
    finally:
        _kill9(proc)
    assert _wait_dead(pid), "llama-server outlived harness serve (kill -9)"
    assert not key_file.exists()


# --- build ---------------------------------------------------------------------------------


def _build(test_cache: Path, builds: Path, *extra: str, fault: str | None = None) -> subprocess.CompletedProcess[str]:
    from tests import session_build

    env = session_build.env(test_cache)
    if fault:
        env["HARNESS_FAULT"] = fault
    return run_harness("build", session_build.layout(test_cache)["recipe"], "--builds-dir", builds, *extra,
                       env=env, timeout=1200)


def _leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.startswith("."))


def _works(out: Path) -> str:
    manifest = json.loads((out / "manifest.json").read_text())
    res = subprocess.run([out / "bin" / "llama-server", "--version"], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0 and manifest["stamp"]["commit"] in res.stdout + res.stderr
    return str(manifest["created"]) + str(manifest["timings"])


@pytest.mark.slow
def test_build_killed_while_publishing_recovers(tmp_path: Path, llama_build: Path, test_cache: Path) -> None:
    builds = tmp_path / "builds"
    out = builds / "session" / "cpu"

    killed = _build(test_cache, builds, fault="build:collected")  # assembled beside, nothing published yet
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert not out.exists()
    assert len(_leftovers(out.parent)) == 1  # the temp copy of the killed run

    first = _build(test_cache, builds)
    assert first.returncode == 0, first.stderr
    assert _leftovers(out.parent) == []  # swept
    old = _works(out)
    assert out.stat().st_mode & 0o777 == 0o777 & ~_umask()  # not mkdtemp's 0700

    killed = _build(test_cache, builds, "--force", fault="replace_dir:exchanged")  # swapped, old copy not removed
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    new = _works(out)  # the new build, whole
    assert new != old
    assert len(_leftovers(out.parent)) == 1  # the old copy, under the killed run's temp name

    again = _build(test_cache, builds)  # a no-op build: nothing to do but sweep
    assert again.returncode == 0, again.stderr
    assert "up to date" in again.stdout
    assert _works(out) == new and _leftovers(out.parent) == []


@pytest.mark.slow
def test_build_killed_at_random_moments_keeps_old_or_new(tmp_path: Path, llama_build: Path, test_cache: Path) -> None:
    """SIGKILL at increasing delays into a --force build: after each kill the published build runs."""
    from tests import session_build

    builds = tmp_path / "builds"
    out = builds / "session" / "cpu"
    assert _build(test_cache, builds).returncode == 0
    env = session_build.env(test_cache)
    cmd = [sys.executable, "-m", "harness", "build", str(session_build.layout(test_cache)["recipe"]),
           "--builds-dir", str(builds), "--force"]
    for delay in (1.0, 3.0, 6.0, 10.0):
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(delay)
        children = _children_of(proc.pid)
        proc.kill()
        proc.wait()
        _works(out)
        assert all(_wait_dead(c) for c in children), "a child of the killed build kept running"
    assert _build(test_cache, builds).returncode == 0
    _works(out)
    assert _leftovers(out.parent) == []


def _children_of(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# --- graft ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def graft_inputs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    d = tmp_path_factory.mktemp("graft")
    full = models.write_qwen35(d / "full.gguf", n_vocab=20000)
    base = models.write_qwen35(d / "none.gguf", mtp="none", n_vocab=20000)
    donor = d / "donor.gguf"
    res = run_harness("gguf", "extract-mtp", full, "-o", donor)
    assert res.returncode == 0, res.stderr
    return base, donor


def test_graft_killed_before_the_rename_recovers(tmp_path: Path, graft_inputs: tuple[Path, Path]) -> None:
    base, donor = graft_inputs
    out = tmp_path / "grafted.gguf"
    killed = run_harness("gguf", "graft", base, donor, "-o", out,
                         env={**os.environ, "HARNESS_FAULT": "gguf:written"})
    assert killed.returncode == -signal.SIGKILL
    assert not out.exists()
    assert len(_leftovers(tmp_path)) == 1  # the temp directory of the killed run, the complete file in it
    res = run_harness("gguf", "graft", base, donor, "-o", out)
    assert res.returncode == 0, res.stderr
    assert _leftovers(tmp_path) == []
    assert run_harness("gguf", "audit", out).returncode == 0


def test_graft_killed_at_random_moments_recovers(tmp_path: Path, graft_inputs: tuple[Path, Path]) -> None:
    base, donor = graft_inputs
    out = tmp_path / "grafted.gguf"
    cmd = [sys.executable, "-m", "harness", "gguf", "graft", str(base), str(donor), "-o", str(out)]
    for delay in (0.3, 0.8, 1.2, 1.6, 2.0):
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(delay)
        proc.kill()
        proc.wait()
        if out.exists():  # whenever it exists it is whole
            assert run_harness("gguf", "audit", out).returncode == 0
            out.unlink()
    res = run_harness("gguf", "graft", base, donor, "-o", out)
    assert res.returncode == 0, res.stderr
    assert _leftovers(tmp_path) == [] and atomic.stale_of(out) == []


def test_key_files_of_killed_servers_are_deleted_at_the_next_start(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    import tempfile

    from harness.serve import server

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    dead = subprocess.Popen(["true"])
    dead.wait()
    stale = tmp_path / f"{server.KEY_DIR_PREFIX}{dead.pid}-abc" / "api-key"
    live = tmp_path / f"{server.KEY_DIR_PREFIX}{os.getpid()}-def" / "api-key"
    for key in (stale, live):
        key.parent.mkdir()
        key.write_text("secret\n")
    (stale.parent / "llama-server.log").write_text("log\n")
    server._sweep_run_dirs()
    assert not stale.exists() and live.exists()
    assert (stale.parent / "llama-server.log").exists()  # the log is the user's to read


def test_run_dirs_of_finished_harnesses_do_not_pile_up(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every serve and bench leaves a run dir with llama-server.log: the newest 20 of finished
    harnesses are kept (and none over a day old), a live harness's never touched."""
    import tempfile

    from harness.serve import server

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    dead = subprocess.Popen(["true"])
    dead.wait()
    now = time.time()
    runs = []
    for i in range(25):
        run = tmp_path / f"{server.KEY_DIR_PREFIX}{dead.pid}-{i:02d}"
        run.mkdir()
        (run / "llama-server.log").write_text("log\n")
        os.utime(run, (now - 60 * (25 - i), now - 60 * (25 - i)))  # run 24 is the newest
        runs.append(run)
    old = tmp_path / f"{server.KEY_DIR_PREFIX}{dead.pid}-old"
    old.mkdir()
    os.utime(old, (now - 2 * 86400, now - 2 * 86400))
    live = tmp_path / f"{server.KEY_DIR_PREFIX}{os.getpid()}-live"
    live.mkdir()
    os.utime(live, (now - 3 * 86400, now - 3 * 86400))
    server._sweep_run_dirs()
    assert [r.exists() for r in runs] == [False] * 5 + [True] * 20
    assert not old.exists() and live.exists()
