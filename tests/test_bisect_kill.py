"""kill -9 of ``harness bisect`` in the middle of a step's build (tests/faults/test_kill.py's way): the
mirror, the recipe's lock, ``trees/`` and ``builds/`` are as before, and the next bisection runs cleanly."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests import bisect_world as bw
from tests.conftest import REPO, run_harness, write_recipe

pytestmark = [pytest.mark.git_world, pytest.mark.skipif(sys.platform != "linux", reason="reads /proc")]


def _mirror_state(cache: Path) -> tuple[list[str], list[str], list[str]]:
    """(every ref of every mirror, git's lock files left in them, their object files)."""
    refs, locks, objects = [], [], []
    for git_dir in sorted((cache / "mirrors").glob("**/HEAD")):
        repo = git_dir.parent
        out = subprocess.run(["git", "-C", str(repo), "for-each-ref", "--format=%(refname) %(objectname)"],
                             capture_output=True, text=True, check=True).stdout.split("\n")
        refs += [f"{repo.name} {line}" for line in out if line]
        locks += [str(p) for p in repo.rglob("*.lock")]
        objects += sorted(str(p.relative_to(repo)) for p in (repo / "objects").rglob("*") if p.is_file())
    return refs, locks, objects


def test_kill_9_during_a_build_step_leaves_everything_as_it_was(tmp_path: Path) -> None:
    if not shutil.which("cc"):
        pytest.skip("no C compiler")
    world = bw.build(tmp_path / "world")
    env = {**os.environ, **{k: v for k, v in world.env.items() if k.startswith("GIT_CONFIG")}}
    recipe = write_recipe(tmp_path / "recipes", "tiny", bw.recipe_text([2]))
    world.set_master(world.commits[24])
    assert run_harness("lock", recipe, env=env).returncode == 0
    world.set_master(world.commits[bw.N])
    cache = Path(os.environ["HARNESS_CACHE"])
    # a compiler that, while tmp/slow exists, stops at main.c (the bisection's first build step)
    slow, marker = tmp_path / "slow", tmp_path / "compiling"
    cc = tmp_path / "cc"
    cc.write_text(f"#!/bin/sh\ncase \"$*\" in *main.c*) if [ -e {slow} ]; then echo $$ > {marker}; exec sleep 120; fi;; esac\n"
                  f"exec {shutil.which('cc')} \"$@\"\n")
    cc.chmod(0o755)
    env = {**env, "CC": str(cc)}
    args = ["bisect", str(recipe), "--check", "build", "--json"]
    first = run_harness(*args, env=env)  # a bisection that completes (warms the mirror, makes the build dir)
    assert first.returncode == 0, first.stderr[-2000:]
    assert json.loads(first.stdout)["first_bad"]["sha"] == world.commits[bw.BUILD_BREAK]
    shutil.rmtree(next((cache / "bisect").glob("tiny-*/build-cpu")))  # the killed run's first step compiles again
    before = (_mirror_state(cache), recipe.with_suffix(".lock").read_bytes())
    assert sum("refs/harness/pin/" in r for r in before[0][0]) >= 4, before[0]  # the bisection's pins are there

    slow.touch()
    proc = subprocess.Popen([sys.executable, "-m", "harness", *args], cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not marker.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert marker.exists(), "the build step never reached main.c"
        proc.kill()  # kill -9, mid-compile
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
        if marker.exists():  # the compiler stand-in this test started, if nothing stopped it
            pid = int(marker.read_text())
            for _ in range(100):
                if not Path(f"/proc/{pid}").exists():
                    break
                time.sleep(0.1)
            else:
                os.kill(pid, signal.SIGKILL)
    slow.unlink()

    assert (_mirror_state(cache), recipe.with_suffix(".lock").read_bytes()) == before
    assert not before[0][1]  # no git lock file in a mirror
    assert not (cache / "trees").exists() and not (recipe.parent / "builds").exists()
    again = run_harness(*args, env=env)
    assert again.returncode == 0, again.stderr[-2000:]
    assert json.loads(again.stdout)["first_bad"]["sha"] == world.commits[bw.BUILD_BREAK]
    assert (_mirror_state(cache), recipe.with_suffix(".lock").read_bytes()) == before
