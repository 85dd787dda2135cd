"""Multi-file results are all-or-nothing: a kill between two of their files is seen and repaired.

- ``gguf graft --split-max-tensors`` killed between two shard renames (``HARNESS_FAULT=gguf:shard-moved``)
  over an earlier set: the shards carry different write ids, ``inspect``/``audit`` refuse the set
  (exit 2), and the next graft replaces every shard;
- nightly's adoption (lock, each backend's build, ``last-good.json``) killed after each of its
  steps: the journal is rolled forward by the next run, and the three agree.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from harness import atomic
from harness.build import published
from harness.nightly import adoption
from harness.source import lock
from tests import fake_manifest, models
from tests.conftest import REPO, run_harness


@pytest.fixture(scope="module")
def graft_inputs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    d = tmp_path_factory.mktemp("graft")
    full = models.write_qwen35(d / "full.gguf")
    base = models.write_qwen35(d / "none.gguf", mtp="none")
    donor = d / "donor.gguf"
    res = run_harness("gguf", "extract-mtp", full, "-o", donor)
    assert res.returncode == 0, res.stderr
    return base, donor


def test_a_split_set_killed_between_renames_is_refused_then_repaired(tmp_path: Path,
                                                                     graft_inputs: tuple[Path, Path]) -> None:
    base, donor = graft_inputs
    out = tmp_path / "grafted.gguf"
    graft = ("gguf", "graft", base, donor, "-o", out, "--split-max-tensors", "4")
    assert (res := run_harness(*graft)).returncode == 0, res.stderr
    shards = sorted(tmp_path.glob("grafted-*-of-*.gguf"))
    assert len(shards) > 2
    assert run_harness("gguf", "audit", shards[0]).returncode == 0

    killed = run_harness(*graft, env={**os.environ, "HARNESS_FAULT": "gguf:shard-moved"})
    assert killed.returncode == -signal.SIGKILL
    for cmd in ("inspect", "audit"):
        res = run_harness("gguf", cmd, shards[0])
        assert res.returncode == 2, (cmd, res.stdout, res.stderr)
        assert "split.harness.write_id" in res.stderr and "another run" in res.stderr

    assert (res := run_harness(*graft)).returncode == 0, res.stderr  # the next run repairs
    assert run_harness("gguf", "audit", shards[0]).returncode == 0
    assert sorted(tmp_path.glob("grafted-*-of-*.gguf")) == shards
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_a_single_file_output_has_no_write_id(tmp_path: Path, graft_inputs: tuple[Path, Path]) -> None:
    from harness.gguf_files.split import SPLIT_WRITE_ID, open_model

    base, donor = graft_inputs
    out = tmp_path / "one.gguf"
    assert run_harness("gguf", "graft", base, donor, "-o", out).returncode == 0
    with open_model(out) as model:
        assert SPLIT_WRITE_ID not in model.kv  # llama.cpp-made sets and single files read as before


# --- nightly's adoption ------------------------------------------------------------------

ADOPT = textwrap.dedent("""
    import json, sys
    from pathlib import Path
    from harness.nightly import adoption
    from harness.source import lock
    builds_dir, lock_path, candidate_lock = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
    cand = lock.read(candidate_lock)
    moves = [adoption.Move(backend=b, candidate=str(builds_dir / "r" / ".candidate" / b),
                           final=str(builds_dir / "r" / b), identity="new-" + b) for b in ("cpu", "vulkan")]
    pointer = {m.backend: {"path": m.final, "identity": m.identity} for m in moves}
    adoption.adopt(builds_dir, "r", lock_path, cand, moves, pointer, builds_dir / "r" / "last-good.json")
""")


def _lock(base: str) -> lock.Lock:
    return lock.Lock(recipe="r", upstream={"repo": "https://example.invalid/llama.cpp", "ref": "master", "sha": base})


def _build(path: Path, identity: str) -> None:
    path.mkdir(parents=True)
    (path / "manifest.json").write_text(json.dumps(fake_manifest.data(identity=identity)))


def _state(builds_dir: Path, lock_path: Path) -> tuple[str, list[str], dict[str, str]]:
    the_lock = lock.read(lock_path)
    assert the_lock is not None
    identities = [str(getattr(published.manifest(builds_dir / "r" / b), "identity", None)) for b in ("cpu", "vulkan")]
    pointer = json.loads((builds_dir / "r" / "last-good.json").read_text())
    return the_lock.base_sha, identities, {b: p["identity"] for b, p in pointer.items()}


@pytest.mark.parametrize("fault", ["adopt:journaled", "adopt:locked", "adopt:moved"])
def test_a_killed_adoption_is_rolled_forward(tmp_path: Path, fault: str) -> None:
    builds_dir, lock_path = tmp_path / "builds", tmp_path / "r.lock.json"
    old, new = "a" * 40, "b" * 40
    lock.write(lock_path, _lock(old))
    lock.write(tmp_path / "candidate.json", _lock(new))
    for b in ("cpu", "vulkan"):
        _build(builds_dir / "r" / b, "old-" + b)
        _build(builds_dir / "r" / ".candidate" / b, "new-" + b)
    atomic.write_json(builds_dir / "r" / "last-good.json", {b: {"identity": "old-" + b} for b in ("cpu", "vulkan")})

    killed = subprocess.run([sys.executable, "-c", ADOPT, builds_dir, lock_path, tmp_path / "candidate.json"],
                            cwd=REPO, env={**os.environ, "HARNESS_FAULT": fault}, capture_output=True, text=True)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert adoption.journal_path(builds_dir, "r").exists()
    before = _state(builds_dir, lock_path)
    assert before != (new, ["new-cpu", "new-vulkan"], {"cpu": "new-cpu", "vulkan": "new-vulkan"})  # disagreeing

    assert adoption.finish(builds_dir, "r")  # what the next nightly does first
    assert _state(builds_dir, lock_path) == (new, ["new-cpu", "new-vulkan"], {"cpu": "new-cpu", "vulkan": "new-vulkan"})
    assert not adoption.journal_path(builds_dir, "r").exists()
    assert not adoption.finish(builds_dir, "r")


def test_a_journal_from_elsewhere_is_ignored_with_a_warning(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    journal = adoption.journal_path(tmp_path, "r")
    journal.parent.mkdir(parents=True)
    journal.write_text("[" * 100000)
    assert not adoption.finish(tmp_path, "r")
    assert "unreadable adoption journal" in capsys.readouterr().err
    assert not journal.exists()


# --- patches export: patch, recipe and lock --------------------------------------------------

EXPORT_FAULTS = {  # where the export is killed -> what the next reader makes of it
    "journal:prepared": "rolled back",  # journal with the old contents written, nothing else
    "journal:tentative": "rolled back",  # the new patch written for the lock to read
    "journal:committed": "rolled forward",  # the journal holds the new contents, no file switched yet
    "journal:wrote": "rolled forward",  # the recipe switched, the lock not yet: the two disagree
}


@pytest.mark.parametrize("fault", sorted(EXPORT_FAULTS))
def test_a_killed_export_is_old_or_new_after_the_next_read(tmp_path: Path, world_env: dict[str, str],
                                                           fault: str) -> None:
    from tests import world as w
    from tests.conftest import write_recipe
    from tests.test_export import _conflict, _resolve_readme

    recipe = write_recipe(tmp_path / "r", "conf", f"upstream:\n  repo: {w.UPSTREAM_URL}\nstack:\n  - pr: 1\n  - pr: 2\n")
    lock_path, patch = recipe.with_suffix(".lock"), tmp_path / "r" / "patches" / "conf-02-pr-2.patch"
    assert run_harness("lock", recipe).returncode == 0
    work = Path(str(_conflict(recipe)["worktree"]))
    _resolve_readme(work, "resolved")
    old = (recipe.read_bytes(), lock_path.read_bytes())

    killed = run_harness("patches", "export", recipe, env={**os.environ, "HARNESS_FAULT": fault})
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    journal = tmp_path / "r" / ".conf.yaml.journal.json"
    assert journal.exists()
    if fault == "journal:wrote":  # left as it is, a reader would see the two disagree
        assert b"conf-02-pr-2.patch" in recipe.read_bytes() and lock_path.read_bytes() == old[1]

    check = run_harness("lock", recipe, "--check")  # the next command that reads the recipe
    assert check.returncode == 0, check.stdout + check.stderr
    assert EXPORT_FAULTS[fault] in check.stderr
    assert not journal.exists()
    left = [p.name for d in (recipe.parent, patch.parent) if d.exists() for p in d.iterdir() if p.name.startswith(".")]
    assert left == [".git"]  # no journal, no temp file left
    if EXPORT_FAULTS[fault] == "rolled back":
        assert (recipe.read_bytes(), lock_path.read_bytes()) == old and not patch.exists()
        assert not patch.parent.exists()
        assert (res := run_harness("patches", "export", recipe)).returncode == 0, res.stderr  # the conflict is kept
    else:
        assert "patch: patches/conf-02-pr-2.patch" in recipe.read_text() and "(resolved)" in patch.read_text()
        assert json.loads(lock_path.read_text())["stack"][1]["kind"] == "patch"
    assert run_harness("lock", recipe, "--check").returncode == 0
    res = run_harness("prepare", recipe, "--json")
    assert res.returncode == 0, res.stderr
    assert "(resolved)" in (Path(json.loads(res.stdout)["tree"]) / "README.md").read_text()
