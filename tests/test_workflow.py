"""The nightly workflow users can adopt: valid YAML whose harness commands exist in the CLI."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import yaml

from harness.cli import build_parser
from tests.conftest import REPO


def test_nightly_workflow_runs_real_commands() -> None:
    wf = yaml.safe_load((REPO / ".github" / "workflows" / "nightly.yml").read_text())
    assert "schedule" in wf[True] or "schedule" in wf.get("on", {})  # PyYAML reads the key `on` as True
    job = wf["jobs"]["nightly"]
    matrix = job["strategy"]["matrix"]
    for recipe in matrix["recipe"]:
        assert (REPO / recipe).exists(), recipe
    commands = [
        line.strip()
        for step in job["steps"] if "run" in step
        for line in step["run"].splitlines() if line.strip().startswith("harness ")
    ]
    assert any(c.startswith("harness nightly") for c in commands)
    parser = build_parser()
    for command in commands:
        argv = shlex.split(re.sub(r"\$\{\{[^}]*\}\}", "X", command))[1:]
        argv = [a if a != "X" else "recipes/demo.yaml" for a in argv]
        if "--backend" in argv:
            argv[argv.index("--backend") + 1] = "cpu"
        parser.parse_args(argv)  # exits (fails the test) on an unknown command or flag
    assert any("ccache" in str(step.get("with", {}).get("path", "")) for step in job["steps"])


def _step(name: str) -> str:
    wf = yaml.safe_load((REPO / ".github" / "workflows" / "nightly.yml").read_text())
    return next(s["run"] for s in wf["jobs"]["nightly"]["steps"] if s.get("name") == name)


def test_the_workflow_proposes_a_recipes_first_lock(tmp_path: Path) -> None:
    """The step that opens the pull request, run as a runner would: real git, the real harness, gh stubbed."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    env.update(GIT_CONFIG_GLOBAL=os.devnull, GIT_CONFIG_NOSYSTEM="1", HARNESS_CACHE=str(tmp_path / "cache"))

    def git(*args: str, cwd: Path = tmp_path / "work") -> str:
        return subprocess.run(["git", "-C", str(cwd), *args], check=True, capture_output=True, text=True,
                              env=env).stdout.strip()  # fmt: skip

    subprocess.run(["git", "init", "-q", "--bare", str(tmp_path / "origin.git")], check=True, env=env)
    work = tmp_path / "work"
    subprocess.run(["git", "clone", "-q", str(tmp_path / "origin.git"), str(work)], check=True, env=env)
    (work / "recipes").mkdir()
    (work / "recipes" / "x.yaml").write_text(
        "name: x\nupstream: {repo: https://github.com/ggml-org/llama.cpp, ref: 0c1e57098bba43ac29e6e3b677cdceebdd22334f}\n")
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "a recipe without a lock")
    git("push", "-q", "origin", "HEAD:main")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "gh").write_text(f'#!/bin/sh\necho "$@" >> {tmp_path / "gh.log"}\n')
    (bin_dir / "gh").chmod(0o755)
    (bin_dir / "harness").write_text(f'#!/bin/sh\nexec {sys.executable} -m harness "$@"\n')
    (bin_dir / "harness").chmod(0o755)
    env["PATH"] = f"{bin_dir}:{env['PATH']}"
    env["PYTHONPATH"] = str(REPO)
    # what `harness nightly` leaves behind when everything passed: the adopted lock, a new file
    assert subprocess.run([sys.executable, "-m", "harness", "lock", "recipes/x.yaml"], cwd=work, env=env).returncode == 0
    script = _step("Propose the new lock").replace("${{ matrix.recipe }}", "recipes/x.yaml").replace("${{ matrix.backend }}", "cpu")
    run = subprocess.run(["bash", "-e", "-c", script], cwd=work, env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    branch = git("for-each-ref", "--format=%(refname:short)", "refs/heads/nightly/*", cwd=tmp_path / "origin.git")
    assert branch.startswith("nightly/x-cpu-")  # the recipe's cpu and cuda jobs push distinct branches
    assert git("log", "-1", "--format=%s", branch, cwd=tmp_path / "origin.git") == "nightly: first lock for recipes/x.yaml"
    assert git("show", "--name-only", "--format=", branch, cwd=tmp_path / "origin.git") == "recipes/x.lock"
    assert "pr create" in (tmp_path / "gh.log").read_text()
    # the next night, nothing moved: nothing to propose
    (tmp_path / "gh.log").unlink()
    again = subprocess.run(["bash", "-e", "-c", script], cwd=work, env=env, capture_output=True, text=True)
    assert again.returncode == 0 and not (tmp_path / "gh.log").exists()
