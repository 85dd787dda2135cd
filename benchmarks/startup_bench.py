#!/usr/bin/env python3
"""Start-up: `harness --help` and a no-op `harness build`, as ratios to `python -c 'import sys'`.

  .venv/bin/python benchmarks/startup_bench.py [--runs 21]

One interpreter (this one, and the `harness` script beside it), one machine, one run: the
commands alternate (python, help, no-op, no-op full check, ninja, python, help, ...) and each
figure is the median of its runs, so load from other processes falls on all of them alike.

- no-op: `harness build RECIPE --builds-dir B` on the test session's CPU build
  (tests/session_build.py: the recipe under $HARNESS_TEST_CACHE/session/repo, the environment
  of session_build.env()); made first if missing, which is a full llama.cpp build.
- no-op, full check: the same with the fast path's record removed first (harness/build/uptodate.py),
  so the recipe is parsed, the lock checked and the identity computed, as on the first no-op
  after any change; it writes the record again.
- ninja: `ninja -C <build dir> <targets>` saying "no work to do", for reference.

Goals (issue 15): --help <= 4x, no-op build <= 8x.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import platformdirs

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests import session_build  # noqa: E402

GOALS = {"help": 4.0, "noop": 8.0}


def timed(argv: list[str], env: dict[str, str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(argv, check=True, env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=21)
    args = ap.parse_args()
    test_cache = Path(os.environ.get("HARNESS_TEST_CACHE") or platformdirs.user_cache_dir("llama-harness-tests"))
    built = session_build.ensure(test_cache)  # no-op when the session build is there
    paths = session_build.layout(test_cache)
    env = session_build.env(test_cache)
    script = Path(sys.executable).parent / "harness"
    harness = [str(script)] if script.exists() else [sys.executable, "-m", "harness"]
    build = [*harness, "build", str(paths["recipe"]), "--builds-dir", str(paths["builds"])]
    records = paths["cache"] / "uptodate"
    manifest = json.loads((built / "manifest.json").read_text())
    # The build dir remembers the cmake that configured it (ninja re-runs it): when another
    # checkout's venv made the session build, configure it again with this one's cmake and ninja.
    configure, ninja_cmd = manifest["cmake"]["configure"], manifest["cmake"]["build"]
    made_by, here = str(Path(configure[0]).parent), str(Path(sys.executable).parent)
    if made_by != here:
        configure = [a.replace(made_by, here) for a in configure]
        ninja_cmd = [a.replace(made_by, here) for a in ninja_cmd]
        print(f"reconfiguring the session build with {here}/cmake (it was made by {made_by}/cmake)")
        subprocess.run(configure, check=True, env=env, stdout=subprocess.DEVNULL)
    bdir = Path(ninja_cmd[2])  # ninja -C <dir> ...: the cached build directory

    def full_check() -> float:
        for record in records.glob("*.json"):
            record.unlink()
        return timed(build, env)

    commands = {
        "python": lambda: timed([sys.executable, "-c", "import sys"], env),
        "help": lambda: timed([*harness, "--help"], env),
        "noop": lambda: timed(build, env),
        "noop_full_check": full_check,
        "ninja": lambda: timed(ninja_cmd, env),
    }
    timed(build, env)  # the record the fast path reads
    runs: dict[str, list[float]] = {name: [] for name in commands}
    for _ in range(args.runs):
        for name, run in commands.items():
            runs[name].append(run())
    timed(build, env)  # leave a record behind

    med = {name: statistics.median(times) for name, times in runs.items()}
    base = med["python"]
    result = {
        "runs": args.runs,
        "median_s": {k: round(v, 4) for k, v in med.items()},
        "ratio_to_python": {k: round(v / base, 2) for k, v in med.items()},
        "goals": {k: {"ratio": round(med[k] / base, 2), "goal": g, "met": med[k] / base <= g} for k, g in GOALS.items()},
        "build_dir": str(bdir),
    }
    print(json.dumps(result, indent=2))
    for name, seconds in med.items():
        goal = f"  (goal <= {GOALS[name]:.0f}x: {'met' if seconds / base <= GOALS[name] else 'NOT met'})" if name in GOALS else ""
        print(f"{name:16} {seconds * 1000:8.1f} ms  {seconds / base:6.2f}x python{goal}")
    return 0 if all(g["met"] for g in result["goals"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
