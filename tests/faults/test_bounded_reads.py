"""Every file the harness reads is a regular file, read with a size bound and parsed with a depth bound.

Lock files, API key files, ``--model`` paths and GGUF inputs, learned.json and the no-op records
are fed ``/dev/zero``, FIFOs (nobody writes: an ``open`` would hang), symlink loops, a sysfs
file, non-UTF-8 bytes and deep nesting: each ends in exit 2 naming the file (or, for the
harness's own state, a warning), within 5 s and 256 MiB.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from harness import readlimits
from harness.build import isa
from harness.errors import InputError
from tests.conftest import write_recipe
from tests.faults.conftest import harness_measured

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="/dev/zero, /sys and /proc/self/status")
MAX_SECONDS = 5.0
MAX_RSS_MB = 256.0
SYSFS = Path("/sys/kernel/mm/transparent_hugepage/enabled")


def _hostile(tmp_path: Path, kind: str) -> Path:
    path = tmp_path / f"hostile-{kind}"
    if kind == "dev-zero":
        path.symlink_to("/dev/zero")
    elif kind == "fifo":
        os.mkfifo(path)
    elif kind == "loop":
        path.symlink_to(path.name)
    elif kind == "directory":
        path.mkdir()
    elif kind == "sysfs":
        if not SYSFS.exists():
            pytest.skip("no sysfs")
        path.symlink_to(SYSFS)
    elif kind == "not-utf8":
        path.write_bytes(b"\xff\xfe key \x80\n")
    elif kind == "deep":
        path.write_text("[" * 200000 + "]" * 200000)
    elif kind == "huge":
        with open(path, "wb") as f:
            f.truncate(64 << 20)  # sparse: 64 MiB that costs no disk
    return path


def _bounded(res: object) -> None:
    assert res.returncode == 2, res.stderr  # type: ignore[attr-defined]
    assert "Traceback" not in res.stderr  # type: ignore[attr-defined]
    assert res.seconds < MAX_SECONDS, res  # type: ignore[attr-defined]
    assert res.max_rss_mb < MAX_RSS_MB, res  # type: ignore[attr-defined]


LOCK_KINDS = ["dev-zero", "fifo", "loop", "directory", "deep", "huge", "not-utf8"]


@pytest.mark.parametrize("kind", LOCK_KINDS)
def test_a_hostile_lock_file_is_exit_2(tmp_path: Path, kind: str) -> None:
    recipe = write_recipe(tmp_path, "r", "upstream:\n  ref: master\n")
    lock = recipe.with_suffix(".lock")
    src = _hostile(tmp_path, kind)
    lock.symlink_to(src.name) if kind != "loop" else lock.symlink_to(lock.name)
    res = harness_measured("lock", recipe, "--check")
    _bounded(res)
    assert str(lock) in res.stderr


KEY_KINDS = ["dev-zero", "fifo", "loop", "not-utf8", "huge"]  # a sysfs file is a small text: a key


@pytest.mark.parametrize("kind", KEY_KINDS)
def test_a_hostile_api_key_file_is_exit_2(tmp_path: Path, kind: str) -> None:
    recipe = write_recipe(tmp_path, "r", "upstream:\n  ref: master\n")
    model = tmp_path / "m.gguf"
    model.write_bytes(b"GGUF")
    key = _hostile(tmp_path, kind)
    res = harness_measured("serve", recipe, "--model", model, "--api-key-file", key)
    _bounded(res)
    assert "API key file" in res.stderr


MODEL_KINDS = ["dev-zero", "fifo", "loop", "sysfs", "directory"]


@pytest.mark.parametrize("kind", MODEL_KINDS)
def test_a_hostile_model_path_is_exit_2(tmp_path: Path, kind: str) -> None:
    model = _hostile(tmp_path, kind)
    for args in (("gguf", "inspect", model), ("gguf", "audit", model)):
        res = harness_measured(*args)
        _bounded(res)
        assert str(model) in res.stderr
    recipe = write_recipe(tmp_path, "r", "upstream:\n  ref: master\n")
    _bounded(harness_measured("serve", recipe, "--model", model))


def test_a_big_metadata_array_costs_about_its_size_in_memory(tmp_path: Path) -> None:
    """A tokenizer's arrays are read as the file holds them, not as Python lists (which cost
    20 to 40 times their bytes: a 19 MiB vocabulary took 442 MiB).  The same tiny model with and
    without ~24 MiB of arrays (1.4M short strings, 1M int32): inspect and audit
    each grow by less than 3 times the added bytes (the file's pages the parse touches, one copy,
    an offset per string)."""
    from gguf import GGUFValueType as T

    from tests import models

    plain = models.write_qwen35(tmp_path / "plain.gguf")
    big = models.write_qwen35(tmp_path / "big.gguf", extra=[
        ("test.big_vocab", T.ARRAY, [f"{i:x}" for i in range(1_400_000)], T.STRING),
        ("test.big_numbers", T.ARRAY, list(range(1_000_000)), T.INT32),
    ])  # fmt: skip
    added_mb = (big.stat().st_size - plain.stat().st_size) / (1 << 20)
    assert added_mb > 20
    for cmd in ("inspect", "audit"):
        base, res = harness_measured("gguf", cmd, plain), harness_measured("gguf", cmd, big, timeout=120)
        assert base.returncode == res.returncode == 0, res.stderr
        assert res.max_rss_mb - base.max_rss_mb < 3 * added_mb, (cmd, base.max_rss_mb, res.max_rss_mb, added_mb)


def test_read_bytes_reads_one_byte_past_the_bound(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="a device, not a regular file"):
        readlimits.read_bytes(Path("/dev/zero"))
    big = tmp_path / "big"
    big.write_bytes(b"x" * 101)
    with pytest.raises(InputError, match="larger than 100 bytes"):
        readlimits.read_bytes(big, limit=100)
    assert readlimits.read_bytes(big, limit=101) == b"x" * 101
    assert readlimits.load_json(_write(tmp_path / "ok.json", '{"a": ["[[[", {"b": []}]}')) == {"a": ["[[[", {"b": []}]}
    with pytest.raises(InputError, match="nested more than 3 levels"):
        readlimits.load_json(_write(tmp_path / "deep.json", '{"a": [{"b": []}]}'), max_depth=3)


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


# --- state files from another version ----------------------------------------------------------


@pytest.fixture
def learned_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "learned.json"
    monkeypatch.setattr(isa, "_learned_path", lambda: path)
    return path


def _cpu_compiler() -> tuple[isa.Cpu, isa.Compiler]:
    from harness.build import toolchain

    return isa.detect_cpu(), toolchain.compiler()


def test_learned_json_from_a_newer_version_is_ignored_with_a_warning(
        learned_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cpu, compiler = _cpu_compiler()
    key = isa._learned_key(cpu, compiler, "native")
    learned_file.write_text(json.dumps({key: {"avx2": "learned: crash", "avx1024_future": "learned: crash"}}))
    assert isa.learned(cpu, compiler, "native") == {"avx2": "learned: crash"}
    assert "unknown CPU extension(s) 'avx1024_future'" in capsys.readouterr().err
    isa.learn(cpu, compiler, "native", "avx", "why")  # learning again keeps what it cannot use
    assert "avx1024_future" in json.loads(learned_file.read_text())[key]


@pytest.mark.parametrize("kind", ["deep", "dev-zero", "fifo", "not-utf8", "huge"])
def test_a_hostile_learned_json_is_ignored_with_a_warning(
        learned_file: Path, kind: str, capsys: pytest.CaptureFixture[str]) -> None:
    src = _hostile(learned_file.parent, kind)
    learned_file.symlink_to(src)
    cpu, compiler = _cpu_compiler()
    assert isa.learned(cpu, compiler, "native") == {}
    assert "learned CPU exclusions" in capsys.readouterr().err


def test_deep_manifest_and_no_op_record_are_not_a_crash(tmp_path: Path) -> None:
    from harness.build import published
    (tmp_path / "manifest.json").write_text("[" * 200000 + "]" * 200000)
    assert published.manifest(tmp_path) is None  # not one of ours: rebuilt
