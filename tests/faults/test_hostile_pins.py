"""Hand-edited Hugging Face pins in a lock: ``serve`` refuses them with exit 2, naming the lock and the key.

The lock's ``draft`` entry was a plain dict: a number for a revision, a missing ``files``, or a
file name that climbs out of the repository passed ``lock --check`` and then crashed ``serve``
with a traceback (or handed huggingface_hub a path outside its cache).  Each case of
tests/data/bad_pins/draft.yaml is fed to the real ``harness serve`` with the session's real
llama.cpp build; :mod:`harness.source.lock_models` is also checked directly against the model pin.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
import yaml

from harness.errors import InputError
from harness.source import lock_models
from tests import models
from tests.faults.conftest import harness_measured
from tests.test_serve import served_recipe

BASE = "0c1e57098bba43ac29e6e3b677cdceebdd22334f"
R = "1111111111111111111111111111111111111111"
REPO_ID, FILE = "owner/tiny-GGUF", "d.gguf"
CASES: dict[str, dict[str, Any]] = yaml.safe_load((Path(__file__).parent.parent / "data" / "bad_pins" / "draft.yaml").read_text())


def _pin(case: dict[str, Any]) -> dict[str, Any]:
    pin: dict[str, Any] = {"source": REPO_ID, "file": FILE, "revision": R, "files": [FILE]}
    pin.update(case.get("edit", {}))
    for key in case.get("drop", []):
        del pin[key]
    return pin


def test_a_good_pin_passes() -> None:
    where = Path("r.lock")
    assert lock_models.draft_pin(_pin({}), where).files == [FILE]
    assert lock_models.draft_pin(_pin({"edit": {"files": ["sub/d-00001-of-00002.gguf"]}}), where)
    assert lock_models.model_pin({"source": REPO_ID, "revision": R}, where).revision == R
    with pytest.raises(InputError, match=r"r.lock: model.revision: required key missing"):
        lock_models.model_pin({"source": REPO_ID}, where)
    assert lock_models.problems({"source": "x", "revision": R}, where, "model") == [
        "r.lock: model.source: 'x' is not a Hugging Face repository id (owner/name)"]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, llama_bin: Path) -> tuple[Path, Path, Path]:
    d = tmp_path_factory.mktemp("pins")
    recipe, builds = served_recipe(d, llama_bin)
    recipe.write_text(recipe.read_text() + f"draft: {{source: {REPO_ID}, file: {FILE}}}\n"
                      f"upstream: {{repo: https://github.com/ggml-org/llama.cpp, ref: {BASE}}}\n")  # fmt: skip
    return recipe, builds, models.write_qwen35(d / "m.gguf", mtp="none")


@pytest.mark.parametrize("name", sorted(CASES))
def test_a_hand_edited_draft_pin_stops_serve_with_exit_2(served: tuple[Path, Path, Path], tmp_path: Path,
                                                         name: str) -> None:
    recipe, builds, model = served
    lock = recipe.with_suffix(".lock")
    lock.write_text(json.dumps({"schema": 1, "recipe": "mini", "stack": [], "draft": _pin(CASES[name]),
                                "upstream": {"repo": "https://github.com/ggml-org/llama.cpp", "ref": BASE, "sha": BASE}}))
    before = lock.read_bytes()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    res = harness_measured("serve", recipe, "--model", model, "--builds-dir", builds, "--dry-run", env=env)
    assert res.returncode == 2, res.stderr
    assert "Traceback" not in res.stderr and len(res.stderr.splitlines()) < 25
    for expected in CASES[name]["expect"]:
        assert f"{lock}: {expected}" in res.stderr, res.stderr
    assert lock.read_bytes() == before  # never rewritten behind the user's back
