#!/usr/bin/env python3
"""Build benchmarks on the real llama.cpp tree; prints ratios.

  python benchmarks/build_bench.py [--cold] [--targets llama-server llama-quantize ...]

1. no-op: the whole `harness build` process when nothing changed (goal < 1 s; plain ninja ~0.03 s)
2. patch change: harness rebuild after editing a local patch that touches tools/quantize/quantize.cpp,
   against plain ninja's incremental rebuild after touching the same file (goal <= 1.5x)
3. --cold: harness cold build against plain `cmake -G Ninja` + `ninja <same targets>` on the same
   tree, both without ccache (goal <= 1.03x; ~10 minutes each on 2 cores)

Runs offline: GitHub's llama.cpp is redirected to the llama-cpp-python sdist's tree.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from harness import offline  # noqa: E402

PATCH = REPO / "patches" / "quantize-print-harness.patch"


def timed(argv: list[str], **kw: object) -> float:
    t0 = time.perf_counter()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, **kw)  # type: ignore[call-overload]
    return time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cold", action="store_true")
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
    harness = [sys.executable, "-m", "harness"]
    builds = ["--builds-dir", str(work / "builds")]
    results: dict[str, float] = {}

    if args.cold:
        env_cold = {**env, "CCACHE_DISABLE": "1"}
        results["harness_cold_s"] = timed([*harness, "build", str(recipe), *builds, "--force", "--no-ccache"], env=env_cold, cwd=REPO)
        tree = next((work / "cache" / "trees").glob("bench-*/src"))
        plain = work / "plain-build"
        shutil.rmtree(plain, ignore_errors=True)
        t0 = time.perf_counter()
        subprocess.run(["cmake", "-S", str(tree), "-B", str(plain), "-G", "Ninja", "-DCMAKE_BUILD_TYPE=Release",
                        "-DLLAMA_BUILD_TESTS=OFF", "-DLLAMA_BUILD_EXAMPLES=OFF", "-DGGML_CCACHE=OFF"],
                       check=True, stdout=subprocess.DEVNULL, env=env_cold)
        subprocess.run(["ninja", "-C", str(plain), *args.targets], check=True, stdout=subprocess.DEVNULL, env=env_cold)
        results["plain_cold_s"] = time.perf_counter() - t0
    else:
        subprocess.run([*harness, "build", str(recipe), *builds], check=True, env=env, cwd=REPO)

    results["harness_noop_s"] = min(timed([*harness, "build", str(recipe), *builds], env=env, cwd=REPO) for _ in range(3))
    bdir = next((work / "cache" / "trees").glob("bench-*/build-cpu-*"))
    tree = bdir.parent / "src"
    results["ninja_noop_s"] = min(timed(["ninja", "-C", str(bdir), *args.targets]) for _ in range(3))

    # one local patch changes one .cpp file
    patch = repo / "patches" / PATCH.name
    original = patch.read_text()
    patch.write_text(original.replace("from a patched tree", "from a patched tree (bench edit)"))
    subprocess.run([*harness, "lock", str(recipe)], check=True, env=env, cwd=REPO, stdout=subprocess.DEVNULL)
    results["harness_patch_rebuild_s"] = timed([*harness, "build", str(recipe), *builds], env=env, cwd=REPO)
    patch.write_text(original)
    subprocess.run([*harness, "lock", str(recipe)], check=True, env=env, cwd=REPO, stdout=subprocess.DEVNULL)
    subprocess.run([*harness, "build", str(recipe), *builds], check=True, env=env, cwd=REPO, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    # plain ninja, same change: touch the file and rebuild the same targets (ccache off to compare compiles)
    quantize_cpp = tree / "tools" / "quantize" / "quantize.cpp"
    text = quantize_cpp.read_text()
    quantize_cpp.write_text(text.replace("from a patched tree", "from a patched tree (bench edit)"))
    results["ninja_touch_rebuild_s"] = timed(["ninja", "-C", str(bdir), *args.targets], env={**os.environ, "CCACHE_DISABLE": "1"})
    quantize_cpp.write_text(text)
    subprocess.run(["ninja", "-C", str(bdir), *args.targets], check=True, stdout=subprocess.DEVNULL)

    print(json.dumps({k: round(v, 3) for k, v in results.items()}, indent=2))
    print(f"no-op: harness {results['harness_noop_s']:.2f}s vs ninja {results['ninja_noop_s']:.3f}s (goal: harness < 1 s)")
    ratio = results["harness_patch_rebuild_s"] / results["ninja_touch_rebuild_s"]
    print(f"patch change: harness {results['harness_patch_rebuild_s']:.1f}s vs ninja {results['ninja_touch_rebuild_s']:.1f}s = {ratio:.2f}x (goal <= 1.5x)")
    if args.cold:
        cold = results["harness_cold_s"] / results["plain_cold_s"]
        print(f"cold: harness {results['harness_cold_s']:.0f}s vs plain {results['plain_cold_s']:.0f}s = {cold:.3f}x (goal <= 1.03x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
