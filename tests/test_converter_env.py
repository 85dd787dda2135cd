"""The converter's Python, made from the pinned tree's own requirements (issue 23, item 1).

Report: the `[convert]` extra installs transformers>=5; for a Gemma 4 config its to_dict() loses
global_head_dim and per_layer_config and the pinned tree's convert_hf_to_gguf.py asserts, while the
tree itself says which versions it needs (requirements/requirements-convert_hf_to_gguf.txt and what it
includes); `doctor RECIPE` said "ready" either way.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from harness.build import needs
from harness.pipeline import converter_env, tools

pytestmark = pytest.mark.network  # the envs install from the package index (pip's cache, else PyPI)


@pytest.fixture(autouse=True)
def _own_envs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HARNESS_CONVERTER_ENVS", raising=False)  # these tests watch an env being made

# the layout of llama.cpp's requirements/ at 0c1e570, with small packages in place of torch and transformers
TOP = """-r ./requirements-convert_legacy_llama.txt
--extra-index-url https://download.pytorch.org/whl/cpu
"""
LEGACY = """six==1.17.0   # stands in for transformers==4.57.6

idna>=3.0,<4
"""


def _tree(root: Path, legacy: str = LEGACY) -> Path:
    (root / "requirements").mkdir(parents=True)
    (root / converter_env.REQUIREMENTS).write_text(TOP)
    (root / "requirements" / "requirements-convert_legacy_llama.txt").write_text(legacy)
    return root


def test_the_requirements_are_read_with_their_includes(tmp_path: Path) -> None:
    reqs = converter_env.read_requirements(_tree(tmp_path / "t"))
    assert reqs is not None
    assert reqs.lines == ("six==1.17.0", "idna>=3.0,<4") and reqs.indexes == ("https://download.pytorch.org/whl/cpu",)
    assert reqs.pins() == {"six": "==1.17.0", "idna": ">=3.0,<4"}
    assert converter_env.read_requirements(tmp_path) is None  # a tree without requirements/


def test_a_torch_the_index_cannot_serve_comes_from_pypi_and_is_said(tmp_path: Path) -> None:
    tree = _tree(tmp_path / "t", "torch==2.11.0\nnumpy~=2.2.6\n")
    plan = converter_env.plan(tree)
    assert plan is not None
    if plan.indexes:  # PyTorch's index is reachable from here: the tree's line stands
        assert plan.lines == ["torch==2.11.0", "numpy~=2.2.6"] and plan.note is None
    else:
        assert plan.lines == [f"torch=={converter_env.TORCH_FALLBACK}", "numpy~=2.2.6"]
        assert plan.note is not None and "torch==2.11.0" in plan.note and "download.pytorch.org" in plan.note


def test_the_env_is_made_once_and_reused_across_trees_with_the_same_requirements(tmp_path: Path) -> None:
    first = _tree(tmp_path / "recipe-a")
    env = converter_env.ensure(first)
    assert env is not None
    assert env.record.installed["six"] == "1.17.0"
    assert env.record.installer == ("uv" if converter_env._uv() else "pip")
    out = subprocess.run([env.python, "-c", "import six, sys; print(six.__version__, sys.prefix)"],
                         capture_output=True, text=True, check=True).stdout.split()  # fmt: skip
    assert out == ["1.17.0", str(env.root)]
    made = (env.root / "env.json").stat().st_mtime_ns

    again = converter_env.ensure(_tree(tmp_path / "recipe-b"))  # another recipe pinning the same tree
    assert again is not None and again.root == env.root and (env.root / "env.json").stat().st_mtime_ns == made

    other = converter_env.ensure(_tree(tmp_path / "recipe-c", "six==1.16.0\n"))
    assert other is not None and other.root != env.root and other.record.installed["six"] == "1.16.0"

    # the build's converter runs with it; model.python / --python still override
    build = tools.Build(first, "cpu", None, None)
    assert build.converter_python() == env.python
    assert build.converter_python_key().startswith("requirements:")
    assert tools.Build(first, "cpu", None, "/opt/py/bin/python").converter_python() == "/opt/py/bin/python"
    assert tools.Build(tmp_path, "cpu", None, None).converter_python() == sys.executable  # published without requirements/


def test_doctor_compares_the_interpreter_with_the_trees_pins(tmp_path: Path) -> None:
    """Report: `doctor RECIPE` said ready with transformers 5.x where the tree pins transformers==4.57.6."""
    import importlib.metadata

    have = importlib.metadata.version("transformers")
    tree = _tree(tmp_path / "t", "transformers==4.57.6\nsix\n")
    checks = {c.what: c for c in needs._pinned(sys.executable, tree, "model.python")}
    if have == "4.57.6":
        assert checks["converter pins"].ok
    else:
        assert not checks["converter pins"].ok and f"transformers {have}, the tree pins ==4.57.6" in checks["converter pins"].detail
    # the venv the harness would make: not made yet is not a failure, and says where it will come from
    pending = needs._converter_env(_tree(tmp_path / "u"))
    assert [c.ok for c in pending] == [True] and "made on the first convert" in pending[0].detail
    converter_env.ensure(tmp_path / "u")
    made = {c.what: c for c in needs._converter_env(tmp_path / "u")}
    assert made["converter pins"].ok and made["converter python"].detail.startswith(str(converter_env.plan(tmp_path / "u").root))  # type: ignore[union-attr]
