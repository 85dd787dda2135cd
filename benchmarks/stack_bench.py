#!/usr/bin/env python3
"""Source cache benchmark: bytes a pinned recipe fetches against a full clone, and prepare times.

  python benchmarks/stack_bench.py [--upstream URL-or-path]

By default the upstream is the llama.cpp commit vendored in PyPI's llama-cpp-python sdist
(offline). With network access, pass --upstream https://github.com/ggml-org/llama.cpp to
measure against the real history (the full clone then takes a while).
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

from harness.source import sdist_upstream as offline  # noqa: E402


def du(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--upstream", help="a URL or path to clone in full for comparison (default: the sdist's tree)")
    ap.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "harness-stack-bench")
    args = ap.parse_args()
    work: Path = args.work
    shutil.rmtree(work / "cache", ignore_errors=True)
    upstream = args.upstream or str(offline.upstream_repo(work / "sdist"))
    env = dict(os.environ)
    if not args.upstream:
        env = offline.redirect_env({offline.UPSTREAM_URL: Path(upstream)})
    env["HARNESS_CACHE"] = str(work / "cache")
    repo = work / "repo"
    (repo / "patches").mkdir(parents=True, exist_ok=True)
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    shutil.copy(REPO / "patches" / "quantize-print-harness.patch", repo / "patches")
    recipe = repo / "bench.yaml"
    recipe.write_text("upstream: {ref: 0c1e57098bba43ac29e6e3b677cdceebdd22334f}\n"
                      "stack:\n  - patch: patches/quantize-print-harness.patch\n")
    cmd = [sys.executable, "-m", "harness", "prepare", str(recipe), "--json", "--offline"]
    t0 = time.perf_counter()
    first = json.loads(subprocess.run(cmd, env=env, cwd=REPO, check=True, capture_output=True, text=True).stdout)
    cold = time.perf_counter() - t0
    warm = min(
        (lambda t: (subprocess.run(cmd, env=env, cwd=REPO, check=True, capture_output=True), time.perf_counter() - t)[1])(time.perf_counter())
        for _ in range(3)
    )
    mirror_bytes = sum(du(m) for m in (work / "cache" / "mirrors").glob("*.git"))
    full = work / "full-clone.git"
    shutil.rmtree(full, ignore_errors=True)
    t0 = time.perf_counter()
    subprocess.run(["git", "clone", "-q", "--mirror", "--no-local", upstream, str(full)], check=True, env=env)
    full_s = time.perf_counter() - t0
    full_bytes = du(full)
    result = {"pinned_fetch_bytes": mirror_bytes, "full_clone_bytes": full_bytes, "full_clone_s": round(full_s, 2),
              "prepare_cold_s": round(cold, 2), "prepare_cached_s": round(warm, 3), "commit": first["commit"]}
    print(json.dumps(result, indent=2))
    print(f"fetched {mirror_bytes / 1e6:.1f} MB for the pinned recipe vs {full_bytes / 1e6:.1f} MB for a full clone "
          f"({mirror_bytes / max(full_bytes, 1):.2f}x); prepare cold {cold:.1f}s, from cache {warm:.2f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
