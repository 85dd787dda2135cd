"""The nightly workflow users can adopt: valid YAML whose harness commands exist in the CLI."""

from __future__ import annotations

import re
import shlex

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
