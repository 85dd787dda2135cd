#!/usr/bin/env python3
"""Build benchmarks on the real llama.cpp tree, harness against raw CMake + Ninja on the same tree.

  .venv/bin/python benchmarks/build_bench.py [--runs 5] [--smoke version] [--cold [--pairs 3]] [--targets ...]

The raw side is a copy of the harness's patched tree (git metadata included, as a user's clone
has), configured with the harness's own configure command (from the published manifest; only
the build directory differs) and built with the same ninja command.  Each measurement
alternates the two sides, --runs rounds, and reports medians, min-max and ninja's step counts:

1. no-op: the whole `harness build` process when nothing changed, against `ninja` saying
   "no work to do" in the raw build directory
2. one-file patch edit: the harness rebuild after editing the local patch (it changes
   tools/quantize/quantize.cpp; `harness lock` first, not timed), against raw ninja after the
   same edit to that file in the raw tree.  Each round's edit is new text, so neither side gets
   its compile from ccache.  The harness side includes its smoke checks (--smoke, default the
   recipe's: version,decode) and publishing; steps are the manifest's `ninja_steps`
3. --cold: harness cold build (its build directory removed first) against the raw configure +
   `ninja <same targets>` in a fresh directory, both without ccache, in --pairs alternating pairs;
   the ratio of the medians (~10 minutes each on 2 cores)

Runs offline: GitHub's llama.cpp is redirected to the llama-cpp-python sdist's tree.
"""

from __future__ import annotations

import argparse
import json
import os
import re
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

from harness.build import cmake  # noqa: E402
from harness.source import sdist_upstream as offline  # noqa: E402

PATCH = REPO / "patches" / "quantize-print-harness.patch"


def timed(argv: list[str], **kw: Any) -> float:
    t0 = time.perf_counter()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, **kw)
    return time.perf_counter() - t0


def ninja_steps(argv: list[str], **kw: Any) -> tuple[float, int]:
    """Wall time and steps run (ninja's last ``[n/N]``) of one ninja command."""
    t0 = time.perf_counter()
    out = subprocess.run(argv, check=True, capture_output=True, text=True, **kw).stdout
    wall = time.perf_counter() - t0
    steps = [int(m.group(1)) for m in re.finditer(r"^\[(\d+)/\d+\]", out, re.M)]
    return wall, (steps[-1] if steps else 0)


def alternate(runs: int, **sides: Callable[[int], tuple[float, int]]) -> dict[str, dict[str, Any]]:
    """Each side ``runs`` times, interleaved (a b a b ...), with the round number; medians, min-max, steps."""
    got: dict[str, list[tuple[float, int]]] = {name: [] for name in sides}
    for i in range(runs):
        for name, run in sides.items():
            got[name].append(run(i))
    return {name: {"median_s": statistics.median(w for w, _ in r), "min_s": min(w for w, _ in r),
                   "max_s": max(w for w, _ in r), "steps": sorted({n for _, n in r})} for name, r in got.items()}


def raw_configure(configure: list[str], bdir: Path, src: Path, raw_src: Path, raw_bdir: Path) -> list[str]:
    """The harness's configure command for another source and build directory (nothing else changed)."""
    return [a.replace(str(bdir), str(raw_bdir)).replace(str(src), str(raw_src)) for a in configure]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cold", action="store_true")
    ap.add_argument("--pairs", type=int, default=3, help="alternating cold-build pairs (default 3)")
    ap.add_argument("--runs", type=int, default=5, help="alternating rounds of each measurement (default 5)")
    ap.add_argument("--smoke", help="the harness's smoke checks (default: the recipe's, version,decode)")
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
    build = [*harness, "build", str(recipe), "--builds-dir", str(builds), *(["--smoke", args.smoke] if args.smoke else [])]
    lock = [*harness, "lock", str(recipe)]
    ninja_bin = cmake.program("ninja")
    patch = repo / "patches" / PATCH.name
    original = patch.read_text()
    marker = "from a patched tree"

    subprocess.run(build, check=True, env=env, cwd=REPO)
    # the harness's build directory and configure command, from the published manifest
    manifest_path = builds / "bench" / "cpu" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    bdir = Path(manifest["cmake"]["build"][2])
    tree = bdir.parent / "src"
    # the raw side: a copy of the same patched tree (with its .git), the same configure command
    raw_src, raw_bdir = work / "raw" / "src", work / "raw" / "build"
    shutil.rmtree(work / "raw", ignore_errors=True)
    shutil.copytree(tree, raw_src, symlinks=True)
    subprocess.run(raw_configure(manifest["cmake"]["configure"], bdir, tree, raw_src, raw_bdir), check=True,
                   stdout=subprocess.DEVNULL, env=env)  # fmt: skip
    raw_ninja = [ninja_bin, "-C", str(raw_bdir), *args.targets]
    # ccache's base dir as the harness sets it (the raw build dir also sits beside its src): the first
    # raw build replays the harness's compiles; the edits below miss on both sides
    raw_env = {**env, **cmake.ccache_env(raw_src.parent)}
    subprocess.run(raw_ninja, check=True, stdout=subprocess.DEVNULL, env=raw_env)

    def harness_noop(_: int) -> tuple[float, int]:
        return timed(build, env=env, cwd=REPO), 0

    def raw_noop(_: int) -> tuple[float, int]:
        return ninja_steps(raw_ninja, env=raw_env)

    results: dict[str, Any] = {"noop": alternate(args.runs, harness=harness_noop, raw=raw_noop)}

    quantize_cpp = raw_src / "tools" / "quantize" / "quantize.cpp"
    raw_text = quantize_cpp.read_text()

    breakdown: list[dict[str, float]] = []

    def harness_edit(i: int) -> tuple[float, int]:
        patch.write_text(original.replace(marker, f"{marker} (bench edit {i} {time.time_ns()})"))
        subprocess.run(lock, check=True, env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wall = timed(build, env=env, cwd=REPO)
        published = json.loads(manifest_path.read_text())
        # where the time went: the manifest's own timings, and the process around build() (interpreter
        # start, imports, the lock check, the swap into place) as what is left of the wall time
        timings = dict(published["timings"])
        timings["outside_build_s"] = wall - timings["total_s"]
        breakdown.append(timings)
        return wall, published["ninja_steps"]

    def raw_edit(i: int) -> tuple[float, int]:
        quantize_cpp.write_text(raw_text.replace(marker, f"{marker} (bench edit {i} {time.time_ns()})"))
        return ninja_steps(raw_ninja, env=raw_env)

    load = [os.getloadavg()]
    try:
        results["patch_edit"] = alternate(args.runs, harness=harness_edit, raw=raw_edit)
        load.append(os.getloadavg())
        results["patch_edit"]["harness"]["breakdown"] = {
            k: {"median_s": statistics.median(b[k] for b in breakdown if k in b),
                "min_s": min(b[k] for b in breakdown if k in b), "max_s": max(b[k] for b in breakdown if k in b)}
            for k in breakdown[0]}
        results["patch_edit"]["load_average"] = {"before": load[0], "after": load[1]}
    finally:
        patch.write_text(original)
        quantize_cpp.write_text(raw_text)
    subprocess.run(lock, check=True, env=env, cwd=REPO, stdout=subprocess.DEVNULL)
    subprocess.run(build, check=True, env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    if args.cold:
        env_cold = {**env, "CCACHE_DISABLE": "1"}
        plain = work / "plain-build"

        cold_parts: list[dict[str, float]] = []

        def harness_cold(_: int) -> tuple[float, int]:
            shutil.rmtree(bdir, ignore_errors=True)  # the harness's own build directory: every object compiled
            wall = timed([*build, "--force", "--no-ccache"], env=env_cold, cwd=REPO)
            published = json.loads(manifest_path.read_text())
            cold_parts.append({**published["timings"], "outside_build_s": wall - published["timings"]["total_s"]})
            return wall, published["ninja_steps"]

        def plain_cold(_: int) -> tuple[float, int]:
            shutil.rmtree(plain, ignore_errors=True)
            t0 = time.perf_counter()
            configure = [a for a in raw_configure(manifest["cmake"]["configure"], bdir, tree, raw_src, plain)
                         if "_COMPILER_LAUNCHER=" not in a]  # fmt: skip
            subprocess.run(configure, check=True, stdout=subprocess.DEVNULL, env=env_cold)
            _, steps = ninja_steps([ninja_bin, "-C", str(plain), *args.targets], env=env_cold)
            return time.perf_counter() - t0, steps

        quantize_cpp.write_text(raw_text)
        load = [os.getloadavg()]
        results["cold"] = alternate(args.pairs, harness=harness_cold, raw=plain_cold)
        results["cold"]["harness"]["breakdown"] = cold_parts
        results["cold"]["load_average"] = {"before": load[0], "after": os.getloadavg()}
        shutil.rmtree(plain, ignore_errors=True)
        subprocess.run(build, check=True, env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    print(json.dumps(results, indent=2, default=lambda v: round(v, 3)))
    for k, b in results["patch_edit"]["harness"].get("breakdown", {}).items():
        print(f"  patch edit, harness {k}: {b['median_s']:.3f}s [{b['min_s']:.3f}-{b['max_s']:.3f}]")
    for what, r in results.items():
        h, raw = r["harness"], r["raw"]
        print(f"{what}: harness {h['median_s']:.3f}s [{h['min_s']:.3f}-{h['max_s']:.3f}] steps {h['steps']} vs "
              f"raw {raw['median_s']:.3f}s [{raw['min_s']:.3f}-{raw['max_s']:.3f}] steps {raw['steps']} = "
              f"{h['median_s'] / raw['median_s']:.2f}x (medians of {args.pairs if what == 'cold' else args.runs} alternating rounds)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
