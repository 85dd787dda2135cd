#!/usr/bin/env python3
"""Build benchmarks on the real llama.cpp tree; prints ratios (medians of alternating runs).

  .venv/bin/python benchmarks/build_bench.py [--cold [--pairs 3]] [--targets llama-server llama-quantize ...]

1. no-op: the whole `harness build` process when nothing changed, against `ninja` saying
   "no work to do" in the same build directory (alternating, --runs each)
2. patch change: harness rebuild after editing a local patch that touches tools/quantize/quantize.cpp,
   against plain ninja's incremental rebuild after touching the same file (goal <= 1.5x)
3. --cold: harness cold build (its build directory removed first) against plain `cmake -G Ninja` +
   `ninja <same targets>` in a fresh directory on the same tree, both without ccache, in --pairs
   alternating pairs (harness first, then plain first, ...); the ratio of the medians
   (goal <= 1.03x; ~10 minutes each on 2 cores)

Runs offline: GitHub's llama.cpp is redirected to the llama-cpp-python sdist's tree.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from harness import cmake, offline  # noqa: E402

PATCH = REPO / "patches" / "quantize-print-harness.patch"


def timed(argv: list[str], **kw: Any) -> float:
    t0 = time.perf_counter()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, **kw)
    return time.perf_counter() - t0


def alternate(runs: int, **commands: Callable[[], float]) -> dict[str, float]:
    """Each command ``runs`` times, interleaved (a b a b ...); the median of each."""
    times: dict[str, list[float]] = {name: [] for name in commands}
    for _ in range(runs):
        for name, run in commands.items():
            times[name].append(run())
    return {name: statistics.median(t) for name, t in times.items()}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cold", action="store_true")
    ap.add_argument("--pairs", type=int, default=3, help="alternating cold-build pairs (default 3)")
    ap.add_argument("--runs", type=int, default=5, help="runs of each no-op (default 5)")
    ap.add_argument("--targets", nargs="+", default=["llama-server", "llama-quantize", "llama-imatrix"])
    ap.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "harness-build-bench")
    args = ap.parse_args()
    work: Path = args.work
    work.mkdir(parents=True, exist_ok=True)
    upstream = offline.upstream_repo(work / "sdist")
    env = offline.redirect_env({offline.UPSTREAM_URL: upstream})
    env["HARNESS_CACHE"] = str(work / "cache")
    repo = work / "repo"
    (repo / "recipes").mkdir(parents=True, exist_ok=True)
    (repo / "patches").mkdir(exist_ok=True)
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    shutil.copy(PATCH, repo / "patches" / PATCH.name)
    recipe = repo / "recipes" / "bench.yaml"
    recipe.write_text(
        "name: bench\nupstream: {ref: 0c1e57098bba43ac29e6e3b677cdceebdd22334f}\n"
        f"stack:\n  - patch: patches/{PATCH.name}\nbuild:\n  targets: [{', '.join(args.targets)}]\n"
    )
    script = Path(sys.executable).parent / "harness"
    harness = [str(script)] if script.exists() else [sys.executable, "-m", "harness"]
    builds = work / "builds"
    build = [*harness, "build", str(recipe), "--builds-dir", str(builds)]
    cmake_bin, ninja_bin = cmake.program("cmake"), cmake.program("ninja")
    results: dict[str, float] = {}

    subprocess.run(build, check=True, env=env, cwd=REPO)
    # the build directory the harness used, from the published manifest: ninja -C <dir> <targets>
    manifest = json.loads((builds / "bench" / "cpu" / "manifest.json").read_text())
    bdir = Path(manifest["cmake"]["build"][2])
    tree = bdir.parent / "src"

    noop = alternate(
        args.runs,
        harness=lambda: timed(build, env=env, cwd=REPO),
        ninja=lambda: timed([ninja_bin, "-C", str(bdir), *args.targets]),
    )
    results["harness_noop_s"], results["ninja_noop_s"] = noop["harness"], noop["ninja"]

    # one local patch changes one .cpp file
    patch = repo / "patches" / PATCH.name
    original = patch.read_text()
    patch.write_text(original.replace("from a patched tree", "from a patched tree (bench edit)"))
    subprocess.run([*harness, "lock", str(recipe)], check=True, env=env, cwd=REPO, stdout=subprocess.DEVNULL)
    results["harness_patch_rebuild_s"] = timed(build, env=env, cwd=REPO)
    patch.write_text(original)
    subprocess.run([*harness, "lock", str(recipe)], check=True, env=env, cwd=REPO, stdout=subprocess.DEVNULL)
    subprocess.run(build, check=True, env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    # plain ninja, same change: touch the file and rebuild the same targets (ccache off to compare compiles)
    quantize_cpp = tree / "tools" / "quantize" / "quantize.cpp"
    text = quantize_cpp.read_text()
    quantize_cpp.write_text(text.replace("from a patched tree", "from a patched tree (bench edit)"))
    results["ninja_touch_rebuild_s"] = timed([ninja_bin, "-C", str(bdir), *args.targets],
                                             env={**os.environ, "CCACHE_DISABLE": "1"})  # fmt: skip
    quantize_cpp.write_text(text)
    subprocess.run([ninja_bin, "-C", str(bdir), *args.targets], check=True, stdout=subprocess.DEVNULL)

    if args.cold:
        env_cold = {**env, "CCACHE_DISABLE": "1"}
        plain = work / "plain-build"

        def harness_cold() -> float:
            shutil.rmtree(bdir, ignore_errors=True)  # the harness's own build directory: every object compiled
            return timed([*build, "--force", "--no-ccache"], env=env_cold, cwd=REPO)

        def plain_cold() -> float:
            shutil.rmtree(plain, ignore_errors=True)
            t0 = time.perf_counter()
            subprocess.run([cmake_bin, "-S", str(tree), "-B", str(plain), "-G", "Ninja", f"-DCMAKE_MAKE_PROGRAM={ninja_bin}",
                            "-DCMAKE_BUILD_TYPE=Release", "-DLLAMA_BUILD_TESTS=OFF", "-DLLAMA_BUILD_EXAMPLES=OFF",
                            "-DGGML_CCACHE=OFF"], check=True, stdout=subprocess.DEVNULL, env=env_cold)  # fmt: skip
            subprocess.run([ninja_bin, "-C", str(plain), *args.targets], check=True, stdout=subprocess.DEVNULL, env=env_cold)
            return time.perf_counter() - t0

        cold: dict[str, list[float]] = {"harness": [], "plain": []}
        for i in range(args.pairs):
            order = [("harness", harness_cold), ("plain", plain_cold)]
            for name, run in order if i % 2 == 0 else reversed(order):
                print(f"cold pair {i + 1}/{args.pairs}: {name} build starts", file=sys.stderr, flush=True)
                cold[name].append(run())
                print(f"cold pair {i + 1}/{args.pairs}: {name} {cold[name][-1]:.0f}s", file=sys.stderr)
        results["harness_cold_s"] = statistics.median(cold["harness"])
        results["plain_cold_s"] = statistics.median(cold["plain"])
        shutil.rmtree(plain, ignore_errors=True)
        subprocess.run(build, check=True, env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    print(json.dumps({k: round(v, 3) for k, v in results.items()}, indent=2))
    print(f"no-op: harness {results['harness_noop_s']:.3f}s vs ninja {results['ninja_noop_s']:.3f}s "
          f"(medians of {args.runs} alternating runs)")  # fmt: skip
    ratio = results["harness_patch_rebuild_s"] / results["ninja_touch_rebuild_s"]
    print(f"patch change: harness {results['harness_patch_rebuild_s']:.1f}s vs ninja {results['ninja_touch_rebuild_s']:.1f}s = {ratio:.2f}x (goal <= 1.5x)")
    if args.cold:
        ratio = results["harness_cold_s"] / results["plain_cold_s"]
        print(f"cold: harness {results['harness_cold_s']:.0f}s vs plain {results['plain_cold_s']:.0f}s = {ratio:.3f}x "
              f"(medians of {args.pairs} alternating pairs; goal <= 1.03x)")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
