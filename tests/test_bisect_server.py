"""``harness bisect`` where the check talks to a built llama-server: the ``decode`` smoke check and a
``bench:`` threshold, on an upstream of 24 real commits whose CMake project builds a stand-in
llama-server (tests/bisect_server_world.py): c7 makes it 10x slower per token, c15 makes its first
completion abort (SIGABRT, as a failed GGML_ASSERT does) until c20.  Real ``git bisect run`` with a
script that builds and runs the same stand-in is the oracle for the crash; a failed night names it."""

from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path

import pytest

from harness.build import cmake
from harness.smoke import tiny_model
from tests import bisect_server_world as sw
from tests.conftest import run_harness, write_recipe
from tests.test_bisect import _oracle

pytestmark = pytest.mark.git_world  # local git repositories only: no network

# what the oracle runs at each commit of its own clone: configure, build, start the stand-in on a
# GGUF, ask for 4 tokens; a server killed by a signal (or no 4 tokens) is bad
ORACLE = """import json, os, socket, subprocess, sys, time, urllib.request
cmake_bin, ninja_bin, bdir, model = sys.argv[1:5]
subprocess.run([cmake_bin, "-S", ".", "-B", bdir, "-G", "Ninja", f"-DCMAKE_MAKE_PROGRAM={ninja_bin}",
                "-DLLAMA_BUILD_COMMIT=oracle"], check=True, stdout=subprocess.DEVNULL)
subprocess.run([ninja_bin, "-C", bdir, "llama-server"], check=True, stdout=subprocess.DEVNULL)
with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
proc = subprocess.Popen([os.path.join(bdir, "bin", "llama-server"), "-m", model, "--port", str(port)],
                        stderr=subprocess.DEVNULL)
url, tokens = f"http://127.0.0.1:{port}", 0
try:
    for _ in range(200):
        try:
            urllib.request.urlopen(url + "/health", timeout=2)
            break
        except OSError:
            time.sleep(0.05)
    req = urllib.request.Request(url + "/completion", data=json.dumps({"prompt": "Hello", "n_predict": 4}).encode(),
                                 headers={"Content-Type": "application/json"})
    try:
        tokens = json.load(urllib.request.urlopen(req, timeout=30))["timings"]["predicted_n"]
    except OSError:
        pass
finally:
    time.sleep(0.2)
    code = proc.poll()
    proc.kill()
    proc.wait()
sys.exit(1 if (code is not None and code < 0) or tokens != 4 else 0)
"""


@pytest.fixture(scope="module")
def sworld(tmp_path_factory: pytest.TempPathFactory) -> sw.ServerWorld:
    return sw.build(tmp_path_factory.mktemp("bisect-server-world"))


@pytest.fixture
def env(sworld: sw.ServerWorld) -> dict[str, str]:
    sworld.set_master(sworld.commits[sw.N])
    return {**os.environ, **{k: v for k, v in sworld.env.items() if k.startswith("GIT_CONFIG")}}


def _recipe(tmp_path: Path, env: dict[str, str], world: sw.ServerWorld, *, smoke: list[str],
            lock_at: int = 0) -> Path:
    recipe = write_recipe(tmp_path / "recipes", "tinyserver", sw.recipe_text(smoke=smoke))
    world.set_master(world.commits[lock_at])
    res = run_harness("lock", recipe, env=env)
    assert res.returncode == 0, res.stderr
    world.set_master(world.commits[sw.N])
    return recipe


def _bisect(recipe: Path, env: dict[str, str], *args: str) -> dict:  # type: ignore[type-arg]
    res = run_harness("bisect", recipe, *args, "--json", env=env, cwd=recipe.parent)
    assert res.returncode == 0, res.stderr[-3000:]
    return json.loads(res.stdout)  # type: ignore[no-any-return]


def test_decode_smoke_crash_is_found_as_git_bisect_run_finds_it(sworld: sw.ServerWorld, env: dict[str, str],
                                                                 tmp_path: Path) -> None:
    """--check smoke with [version, decode]: the decode check starts each step's own llama-server on the
    harness's tiny GGUF; from c15 the server aborts at its first completion, so c15 is named, in about
    log2 of the range steps after the two ends, as git bisect run names it with a build-and-decode script."""
    recipe = _recipe(tmp_path, env, sworld, smoke=["version", "decode"])
    good, bad = sworld.commits[0], sworld.commits[sw.FIX - 1]
    result = _bisect(recipe, env, "--check", "smoke", "--good", good, "--bad", bad)
    culprit = sworld.commits[sw.CRASH]
    assert result["first_bad"]["sha"] == culprit and result["first_bad"]["pr"] == 2000 + sw.CRASH
    assert result["last_good"]["sha"] == sworld.commits[sw.CRASH - 1]
    assert "smoke check 'decode' failed" in result["detail"] and "SIGABRT" in result["detail"]
    good_steps = [s for s in result["steps"] if s["verdict"] == "good"]
    assert good_steps and all("smoke checks passed: version, decode" in s["detail"] for s in good_steps)
    # the slowdown at c7 is no smoke failure: every step below c15 passed
    assert all(s["verdict"] == ("bad" if sworld.commits.index(s["commit"]["sha"]) >= sw.CRASH else "good")
               for s in result["steps"])
    bisecting = [s for s in result["steps"] if s["end"] is None]
    assert [s["end"] for s in result["steps"][:2]] == ["bad", "good"]
    assert len(bisecting) <= math.ceil(math.log2(sw.FIX - 1))

    model = tiny_model.write(tmp_path / "oracle.gguf")
    script = tmp_path / "oracle.py"
    script.write_text(ORACLE)
    oracle, git_steps = _oracle(sworld, tmp_path, good, bad,
                                f"exec {sys.executable} {script} {cmake.program('cmake')} {cmake.program('ninja')} "
                                f"{tmp_path / 'oracle-build'} {model}\n")
    assert oracle == [culprit]
    assert abs(len(bisecting) - git_steps) <= 1, (len(bisecting), git_steps)


def test_bench_threshold_finds_the_slowdown(sworld: sw.ServerWorld, env: dict[str, str], tmp_path: Path) -> None:
    """--check 'bench:tokens_per_second<400': each step measures its llama-server with the bench's runner
    (3 rounds of the prompt suite) and the bench's statistics decide.  c7 drops the stand-in from about
    2000 to at most 200 tokens/s: c7 is named.  The bad end c18 aborts at its first completion: it cannot
    be measured, so it is skipped (taken as bad, as git takes --bad), not a stop of the bisection."""
    recipe = _recipe(tmp_path, env, sworld, smoke=["version"])
    model = tiny_model.write(tmp_path / "model.gguf")
    result = _bisect(recipe, env, "--check", "bench:tokens_per_second<400", "--model", str(model),
                     "--good", sworld.commits[0], "--bad", sworld.commits[18])
    assert result["first_bad"]["sha"] == sworld.commits[sw.SLOW], [(s["commit"]["subject"], s["detail"])
                                                                   for s in result["steps"]]
    assert result["last_good"]["sha"] == sworld.commits[sw.SLOW - 1]
    assert "tokens_per_second" in result["detail"] and "< 400" in result["detail"]
    at_bad = result["steps"][0]
    assert at_bad["end"] == "bad" and at_bad["verdict"] == "skip" and "SIGABRT" in at_bad["detail"]
    measured = [s for s in result["steps"] if s["end"] != "bad"]
    assert all(s["verdict"] != "skip" for s in measured)  # the statistics decided every measured step
    assert len(measured) - 1 <= math.ceil(math.log2(18))


def test_nightly_names_the_commit_that_crashes_decode(sworld: sw.ServerWorld, env: dict[str, str],
                                                      tmp_path: Path) -> None:
    """A night passes at c0 (version and decode smoke); upstream moves to c18, where the decode smoke
    aborts: the failed night bisects with the smoke check and report.json/report.md name c15."""
    recipe = _recipe(tmp_path, env, sworld, smoke=["version", "decode"])
    report, builds = tmp_path / "report", tmp_path / "builds"
    sworld.set_master(sworld.commits[0])
    first = run_harness("nightly", recipe, "--report", report, "--builds-dir", builds, "--json", env=env)
    assert first.returncode == 0, first.stderr[-3000:]
    sworld.set_master(sworld.commits[18])
    second = run_harness("nightly", recipe, "--report", report, "--builds-dir", builds, "--json", env=env)
    assert second.returncode == 1, second.stderr[-3000:]
    entry = json.loads(second.stdout)["recipes"][0]
    assert entry["failed_step"] == "smoke:decode:cpu"
    # an abort is a failed assert, not an instruction the CPU refused: no rebuild without AVX-512, nothing learned
    assert "rebuilding without" not in second.stderr and second.stderr.count("/bin/llama-server -m") >= 2
    assert not list(Path(env.get("HARNESS_CACHE") or os.environ["HARNESS_CACHE"]).rglob("learned.json"))
    culprit = sworld.commits[sw.CRASH]
    found = entry["bisect"]
    assert found["check"] == "smoke" and found["first_bad"]["sha"] == culprit, found
    assert "SIGABRT" in found["detail"] and len(found["steps"]) <= math.ceil(math.log2(18))
    on_disk = json.loads((report / "report.json").read_text())["recipes"][0]["bisect"]
    assert on_disk["first_bad"]["sha"] == culprit
    md = (report / "report.md").read_text()
    assert f"Culprit: upstream {culprit[:12]}" in md and f"PR #{2000 + sw.CRASH}" in md
    # the failed night kept the lock and the published build
    assert json.loads(recipe.with_suffix(".lock").read_text())["upstream"]["sha"] == sworld.commits[0]
