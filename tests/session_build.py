"""The test session's real llama.cpp build, made by `harness build` like a user would.

A recipe like recipes/demo.yaml lives in its own git repository under the test cache
(outside the checkout); GitHub's llama.cpp URL is redirected to the sdist's tree.  The
cache persists, so a later session only pays for a no-op build.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from harness.source import sdist_upstream as offline

REPO = Path(__file__).resolve().parent.parent
TARGETS = ["llama-server", "llama-quantize", "llama-imatrix", "llama-gguf-split", "llama-perplexity"]
RPC_TARGET = "ggml-rpc-server"  # added by build.rpc (tools/rpc/CMakeLists.txt at 0c1e570)


def recipe_text(name: str = "session") -> str:
    return f"""name: {name}
upstream:
  repo: {offline.UPSTREAM_URL}
  ref: 0c1e57098bba43ac29e6e3b677cdceebdd22334f
stack:
  - patch: patches/quantize-print-harness.patch
build:
  backends: [cpu]
  targets: [{", ".join(TARGETS)}]
  rpc: true    # GGML_RPC=ON and the rpc-server (ggml-rpc-server): tests/test_rpc.py
"""


def layout(test_cache: Path) -> dict[str, Path]:
    root = test_cache / "session"
    return {
        "root": root,
        "repo": root / "repo",
        "recipe": root / "repo" / "recipes" / "session.yaml",
        "patch": root / "repo" / "patches" / "quantize-print-harness.patch",
        "cache": root / "harness-cache",
        "builds": root / "builds",
    }


def env(test_cache: Path) -> dict[str, str]:
    paths = layout(test_cache)
    upstream = offline.upstream_repo(test_cache / "sdist")
    base = {k: v for k, v in os.environ.items() if not k.startswith("GIT_CONFIG")}
    result = offline.redirect_env({offline.UPSTREAM_URL: upstream}, base=base)
    result["HARNESS_CACHE"] = str(paths["cache"])
    return result


def ensure(test_cache: Path) -> Path:
    """Build (or find up to date) the session recipe; returns builds/session/cpu."""
    paths = layout(test_cache)
    repo = paths["repo"]
    if not (repo / ".git").exists():
        repo.mkdir(parents=True, exist_ok=True)
        subprocess.run(["git", "init", "-q", str(repo)], check=True)
    paths["recipe"].parent.mkdir(parents=True, exist_ok=True)
    paths["patch"].parent.mkdir(parents=True, exist_ok=True)
    if not paths["recipe"].exists() or paths["recipe"].read_text() != recipe_text():
        paths["recipe"].write_text(recipe_text())
    shutil.copyfile(REPO / "patches" / "quantize-print-harness.patch", paths["patch"])
    log = paths["root"] / "build.log"
    with open(log, "w") as out:
        res = subprocess.run(
            [sys.executable, "-m", "harness", "build", str(paths["recipe"]), "--builds-dir", str(paths["builds"]), "--json"],
            cwd=REPO, env=env(test_cache), stdout=subprocess.PIPE, stderr=out, text=True, timeout=5400,
        )
    if res.returncode != 0:
        raise RuntimeError(f"session build failed (exit {res.returncode}); log: {log}\n" + log.read_text()[-3000:])
    result = json.loads(res.stdout)[0]
    return Path(result["path"])
