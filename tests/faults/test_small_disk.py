"""Disk preflight: prepare and build refuse with exit 2 and both numbers before writing, on a real small disk.

The small disk is a tmpfs of a few MiB (mounted when the tests run as root and may mount;
skipped otherwise), and the same check runs everywhere through ``disk.free_bytes``.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.build import disk
from harness.errors import InputError
from tests import world as w
from tests.conftest import run_harness, write_recipe


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A real 8 MiB filesystem (tmpfs)."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mnt)], capture_output=True, text=True)
    if res.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {res.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def _numbers(stderr: str) -> tuple[str, str]:
    m = re.search(r"need ([\d.]+ [MG]iB) on the filesystem of .*?, ([\d.]+ [MG]iB) free", stderr)
    assert m, stderr
    return m.group(1), m.group(2)


def test_check_sums_needs_per_filesystem_and_names_both_numbers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(disk, "free_bytes", lambda path: 100 * disk.MiB)
    needs = [disk.Need("fetch x", tmp_path / "cache" / "mirrors" / "x.git", 64 * disk.MiB),
             disk.Need("checkout src", tmp_path / "cache" / "trees" / "src", 60 * disk.MiB)]
    with pytest.raises(InputError) as info:
        disk.check(needs)
    assert "need 124 MiB on the filesystem of" in str(info.value) and "100 MiB free" in str(info.value)
    assert not (tmp_path / "cache").exists()  # nothing written
    disk.check(needs[:1])  # 64 MiB fits


def test_prepare_on_a_small_cache_is_refused_before_fetching(tmp_path: Path, world: w.World, world_env: dict[str, str],
                                                           small_disk: Path) -> None:
    recipe = write_recipe(tmp_path / "repo", "small", f"upstream:\n  repo: {w.UPSTREAM_URL}\n  ref: master\n")
    res = run_harness("prepare", recipe, env={**world_env, "HARNESS_CACHE": str(small_disk / "cache")}, timeout=300)
    assert res.returncode == 2, res.stderr
    assert "not enough disk space" in res.stderr and "Traceback" not in res.stderr
    need, free = _numbers(res.stderr)
    assert need.endswith("MiB") and float(free.split()[0]) <= 8
    assert not any((small_disk / "cache" / "mirrors").glob("*.git"))  # no half-fetched mirror


@pytest.mark.slow
def test_build_into_a_small_builds_dir_is_refused_before_writing(tmp_path: Path, llama_build: Path, test_cache: Path,
                                                                small_disk: Path) -> None:
    from tests import session_build

    lay = session_build.layout(test_cache)
    builds = small_disk / "builds"
    res = run_harness("build", lay["recipe"], "--builds-dir", builds, env=session_build.env(test_cache), timeout=600)
    assert res.returncode == 2, res.stderr
    assert "published copy" in res.stderr and "Traceback" not in res.stderr
    _numbers(res.stderr)
    assert not builds.exists() or not any(builds.rglob("*"))
