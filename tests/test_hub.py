"""The Hugging Face Hub unreachable, offline, or asked for a revision: what lock, build and the pipeline do.

The Hub is made unreachable for real: ``HF_ENDPOINT`` points at a local port nothing listens
on, so huggingface_hub's own HTTP client fails to connect (as with no network), without
``HF_HUB_OFFLINE``.  The CLI runs in a subprocess, as a user runs it.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from harness.errors import InputError, StepError
from harness.recipe.load import load_recipe
from harness.source import hub, locking
from tests.conftest import REPO, write_recipe

BASE = "0c1e57098bba43ac29e6e3b677cdceebdd22334f"  # a full SHA: the lock asks git nothing
RECIPE = f"""name: hubtest
upstream:
  repo: https://github.com/ggml-org/llama.cpp
  ref: {BASE}
stack: []
model:
  source: Qwen/Qwen3.6-35B-A3B
"""


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port  # closed again: connecting is refused


@pytest.fixture
def recipe(tmp_path: Path) -> Path:
    return write_recipe(tmp_path / "repo", "hubtest", RECIPE)


def harness(*args: str | Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "harness", *map(str, args)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)  # fmt: skip


def unreachable_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "HF_TOKEN")}
    env.update(HF_ENDPOINT=f"http://127.0.0.1:{closed_port()}", HARNESS_CACHE=str(tmp_path / "cache"),
               HF_HOME=str(tmp_path / "hf-home"))  # fmt: skip
    return env


@pytest.mark.parametrize("command", [["lock"], ["build", "--builds-dir", "builds-never-made"]])
def test_an_unreachable_hub_is_a_clean_exit_1(recipe: Path, tmp_path: Path, command: list[str]) -> None:
    res = harness(command[0], recipe, *command[1:], env=unreachable_env(tmp_path))
    assert res.returncode == 1, res.stderr
    assert "Traceback" not in res.stderr
    message = " ".join(res.stderr.split())
    assert "cannot reach the Hugging Face Hub to resolve Qwen/Qwen3.6-35B-A3B@main: ConnectError" in message
    assert "HF_HUB_OFFLINE=1" in message
    assert not recipe.with_suffix(".lock").exists()
    assert not (tmp_path / "builds-never-made").exists()


def test_offline_leaves_the_revision_unresolved_and_check_and_frozen_fail(recipe: Path, tmp_path: Path) -> None:
    env = {**unreachable_env(tmp_path), "HF_HUB_OFFLINE": "1"}
    res = harness("lock", recipe, env=env)
    assert res.returncode == 0 and "HF_HUB_OFFLINE is set: revision main of Qwen/Qwen3.6-35B-A3B not resolved" in res.stderr
    assert "model" not in json.loads(recipe.with_suffix(".lock").read_text())

    res = harness("lock", recipe, "--check", env=env)
    assert res.returncode == 1
    assert "the revision of Qwen/Qwen3.6-35B-A3B is not resolved" in " ".join(res.stderr.split())

    with pytest.raises(InputError, match="not resolved"):
        locking.ensure(load_recipe(recipe), frozen=True)


def test_a_pinned_revision_needs_no_hub(tmp_path: Path) -> None:
    sha = "b" * 40
    recipe = write_recipe(tmp_path / "repo", "hubtest", RECIPE + f"  revision: {sha}\n")
    res = harness("lock", recipe, env=unreachable_env(tmp_path))
    assert res.returncode == 0, res.stderr
    assert json.loads(recipe.with_suffix(".lock").read_text())["model"] == {
        "source": "Qwen/Qwen3.6-35B-A3B", "revision": sha}  # fmt: skip
    assert harness("lock", recipe, "--check", env=unreachable_env(tmp_path)).returncode == 0


def test_resolve_revision_errors(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{closed_port()}")
    with pytest.raises(StepError, match="cannot reach the Hugging Face Hub") as err:
        hub.resolve_revision("org/model", "main")
    assert err.value.exit_code == 1
    assert hub.is_local(str(tmp_path)) and hub.is_local("./x") and not hub.is_local("org/model")


def test_the_lock_and_the_pipeline_do_not_import_each_other() -> None:
    """lock -> hub <- pipeline.source -> lock: no cycle, whatever is imported first."""
    for first in ("harness.source.lock", "harness.pipeline.source", "harness.pipeline.run"):
        code = f"import {first}, sys; print(sorted(m for m in sys.modules if m.startswith('harness.')))"
        res = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
        loaded = res.stdout
        if first == "harness.source.lock":
            assert "harness.pipeline" not in loaded
