"""A backend is one file and one registry line (issue 21): the README's example backend, added to a
copy of the package exactly as a developer would (the new module, its name in ``MODULES``), is
taken by the recipe schema, ``harness doctor``, llama-server's flags, the CMake entries and the
no-op fast path, with nothing else edited.  The registries' own invariants are checked too."""

from __future__ import annotations

import difflib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO, write_recipe

pytestmark = pytest.mark.unit

README = REPO / "README.md"

PROBE = r"""
import json, sys
from pathlib import Path
from harness import backends
from harness.build import cmake, isa, uptodate
from harness.errors import InputError
from harness.recipe.load import load_recipe
from harness.serve import server

recipe = load_recipe(sys.argv[1])
build = recipe.spec.build
npu = backends.get("npu")
plan = isa.plan(build, isa.Compiler("cc", "gcc", (13, 2, 0)), isa.Cpu("test", "x86_64", frozenset(isa.PORTABLE)))
entries = cmake.cache_entries(build, npu, cmake.Stamp(0, "-"), Path("/src"), Path("/build"), ccache=None, isa=plan)
for name in ("npu", "cpu"):
    uptodate.record(name, {}, [{"recipe": "r", "backend": name, "path": "/p", "identity": "i"}])
try:
    load_recipe(sys.argv[2])
    bad = None
except InputError as exc:
    bad = str(exc).splitlines()
print(json.dumps({
    "backends": build.backends,
    "devices": build.options("npu").devices,
    "ngl": {name: server.recipe_args(recipe.spec.serve, backend=name) for name in ("npu", "cpu")},
    "cmake": {k: v for k, v in entries.items() if k.startswith("GGML_NPU")},
    "recorded": {name: uptodate._record_path(name).exists() for name in ("npu", "cpu")},
    "disk": [npu.disk.build_dir, npu.disk.published],
    "bad": bad,
}))
"""


def _readme_example() -> tuple[str, str]:
    """The module and the registry line the README's "Adding a backend" shows."""
    text = README.read_text(encoding="utf-8")
    section = text[text.index("## Adding a backend"):]
    section = section[: section.index("\n## ", 1)]
    module, line = re.findall(r"```python\n(.*?)```", section, re.S)[:2]
    return module, line


def _with_npu(tmp_path: Path) -> Path:
    """A copy of the package with the README's backend added: one new file, one new line."""
    root = tmp_path / "pkg"
    shutil.copytree(REPO / "harness", root / "harness", ignore=shutil.ignore_patterns("__pycache__"))
    module, line = _readme_example()
    (root / "harness" / "backends" / "npu.py").write_text(module)
    registry = root / "harness" / "backends" / "__init__.py"
    before = registry.read_text()
    after = before.replace('    "hip",\n)', f'    "hip",\n{line})', 1)
    registry.write_text(after)
    changed = [d for d in difflib.unified_diff(before.splitlines(), after.splitlines(), lineterm="", n=0)
               if d[:1] in "+-" and not d.startswith(("+++", "---"))]
    assert changed == ['+    "npu",'], changed
    return root


def test_a_new_backend_is_one_file_and_one_registry_line(tmp_path: Path) -> None:
    root = _with_npu(tmp_path)
    recipes = tmp_path / "recipes"
    good = write_recipe(recipes, "npu", "build:\n  backends: [cpu, npu]\n  npu: {devices: [a, b]}\n")
    bad = write_recipe(recipes, "bad", "build:\n  backends: [npuu]\n  npu: {device: [a]}\n")
    env = {**os.environ, "PYTHONPATH": str(root)}
    res = subprocess.run([sys.executable, "-c", PROBE, str(good), str(bad)], capture_output=True, text=True,
                         cwd=tmp_path, env=env, timeout=120)
    assert res.returncode == 0, res.stderr
    got = json.loads(res.stdout)
    assert got["backends"] == ["cpu", "npu"] and got["devices"] == ["a", "b"]
    assert got["ngl"] == {"npu": ["-ngl", "all"], "cpu": []}  # a GPU backend offloads by default
    assert got["cmake"] == {"GGML_NPU": "ON", "GGML_NPU_DEVICES": "a;b"}
    assert got["recorded"] == {"npu": False, "cpu": True}  # no fast path for it
    assert got["disk"] == [1 << 30, 256 << 20]
    assert any("build.backends[0]: unknown backend 'npuu' (did you mean 'npu'?)" in p for p in got["bad"]), got["bad"]
    assert any("build.npu.device: unknown key (did you mean 'devices'?)" in p for p in got["bad"]), got["bad"]

    doctor = subprocess.run([sys.executable, "-m", "harness", "doctor", "--json"], capture_output=True, text=True,
                            cwd=tmp_path, env=env, timeout=120)
    assert doctor.returncode == 0, doctor.stderr
    report = {b["backend"]: b for b in json.loads(doctor.stdout)["backends"]}
    assert list(report)[:5] == ["cpu", "cuda", "metal", "vulkan", "hip"] and list(report)[-1] == "npu"
    if not shutil.which("npucc"):
        assert any(m.startswith("npucc (NPU kernel compiler)") for m in report["npu"]["missing"])


def test_the_registries_are_the_lists_everyone_reads() -> None:
    """Each backend module's name is its key; the recipe's names and sections come from the
    registry, the smoke names from theirs, the CPU extensions from theirs."""
    from harness import backends
    from harness.backends import cpu_extensions
    from harness.build import isa
    from harness.recipe import schema
    from harness.smoke import registry as smoke_registry

    assert {name: b.name for name, b in backends.REGISTRY.items()} == {n: n for n in backends.MODULES}
    assert schema.BACKENDS == backends.MODULES
    for name, backend in backends.REGISTRY.items():
        assert schema.Build.model_fields[name].annotation is backend.options
    # the shipped backends' facts (a backend added later brings its own)
    gpu = {n for n in backends.MODULES if backends.uses_gpu(n)}
    assert {"cuda", "metal", "vulkan", "hip"} <= gpu and "cpu" not in gpu
    fast = {n for n in backends.MODULES if backends.get(n).fast_path}
    assert "cpu" in fast and not fast & {"cuda", "metal", "vulkan", "hip"}
    assert isa.EXTENSIONS is cpu_extensions.EXTENSIONS
    assert schema.RecipeModel().build.smoke == list(smoke_registry.BUILD_DEFAULT) == ["version", "decode"]
    assert schema.RecipeModel().nightly.smoke == list(smoke_registry.NIGHTLY_DEFAULT)
    from harness import smoke

    assert smoke.names() == smoke_registry.NAMES


def test_a_new_smoke_check_is_one_file_and_one_registry_line(monkeypatch: pytest.MonkeyPatch) -> None:
    """A check the registry lists but harness/smoke/results.py has no model for is kept as the dict it
    returns, under its name, through the manifest's JSON and back; a name no registry lists is foreign."""
    from pydantic import BaseModel, ValidationError

    from harness.smoke import registry as smoke_registry
    from harness.smoke.results import SmokeResults

    class Mine(BaseModel):
        ok: bool
        tokens: int

    monkeypatch.setattr(smoke_registry, "NAMES", (*smoke_registry.NAMES, "mine"))
    results = SmokeResults.model_validate({"mine": Mine(ok=True, tokens=4).model_dump(mode="json"),
                                           "rpc": {"ok": True, "skipped": "no rpc-server"}})
    assert results.items() == [("rpc", results.rpc), ("mine", {"ok": True, "tokens": 4})]
    assert results.model_dump(mode="json") == {"rpc": {"ok": True, "skipped": "no rpc-server"}, "mine": {"ok": True, "tokens": 4}}
    assert SmokeResults.model_validate(results.model_dump(mode="json")) == results
    monkeypatch.setattr(smoke_registry, "NAMES", smoke_registry.NAMES[:-1])
    with pytest.raises(ValidationError, match="mine"):
        SmokeResults.model_validate({"mine": {"ok": True}})
