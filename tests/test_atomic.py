"""Paths stay under their root; directories are published old-or-new; what a killed process left is swept."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from harness import atomic
from harness.build import published
from harness.errors import InputError


def _dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


@pytest.mark.parametrize("rel", ["..", "../cpu", "a/../../cpu", ".", "", "link/x"])
def test_under_refuses_what_leaves_the_root(tmp_path: Path, rel: str) -> None:
    root = tmp_path / "builds"
    root.mkdir()
    (root / "link").symlink_to(tmp_path)  # a directory link that leads out
    with pytest.raises(atomic.OutsideRoot):
        atomic.under(root / rel, root)


def test_under_accepts_inside_and_keeps_a_last_link_unresolved(tmp_path: Path) -> None:
    root = tmp_path / "builds"
    (root / "demo").mkdir(parents=True)
    (root / "demo" / "cpu").symlink_to(tmp_path)  # replacing it acts on the link, not on its target
    assert atomic.under(root / "demo" / "cpu", root) == root.resolve() / "demo" / "cpu"


def test_dotdot_recipe_name_cannot_reach_the_users_directory(tmp_path: Path) -> None:
    """The audit's data loss: builds/../cpu is the user's ./cpu."""
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu" / "precious").write_text("x")
    with pytest.raises(InputError):
        published.build_root(tmp_path / "builds", "..", "cpu")
    with pytest.raises(atomic.OutsideRoot):
        atomic.remove_tree(tmp_path / "builds" / ".." / "cpu", root=tmp_path / "builds")
    assert (tmp_path / "cpu" / "precious").read_text() == "x"


def _tree(path: Path, text: str) -> Path:
    path.mkdir(parents=True)
    (path / "manifest.json").write_text(text)
    return path


@pytest.mark.parametrize("exchange", [True, False], ids=["renameat2", "symlink-flip"])
def test_replace_dir_publishes_and_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                  exchange: bool) -> None:
    if exchange and not atomic.exchange(_tree(tmp_path / "a", "a"), _tree(tmp_path / "b", "b")):
        pytest.skip("no renameat2(RENAME_EXCHANGE) here")
    if not exchange:
        monkeypatch.setattr(atomic, "exchange", lambda a, b: False)
    root = tmp_path / "builds"
    dst = root / "demo" / "cpu"
    for n in range(3):
        with atomic.temp_dir_beside(dst) as tmp:
            (tmp / "manifest.json").write_text(str(n))
            atomic.replace_dir(tmp, dst, root=root)
        assert (dst / "manifest.json").read_text() == str(n)
        retired = [p for p in dst.parent.iterdir() if p.name.endswith(atomic.RETIRED)]
        assert sorted((p / "manifest.json").read_text() for p in retired) == [str(i) for i in range(n)]
    assert oct(dst.resolve().stat().st_mode & 0o777) == oct(0o777 & ~_umask())
    monkeypatch.setattr(atomic, "RETIRE_GRACE_S", 0.0)  # a minute later
    atomic.sweep(dst)
    assert [p.name for p in dst.parent.iterdir() if p.name != "cpu" and not p.name.endswith(".v")] == []


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


READER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    dst, stop = Path(sys.argv[1]), Path(sys.argv[2])
    misses = reads = 0
    while not stop.exists():
        try:
            (dst / "manifest.json").read_text()
            reads += 1
        except OSError:
            misses += 1
    print(reads, misses)
""")


@pytest.mark.parametrize("exchange", [True, False], ids=["renameat2", "symlink-flip"])
def test_replace_dir_is_old_or_new_at_every_instant(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                   exchange: bool) -> None:
    """Another process reading the published build while it is replaced 200 times never fails to read it
    (the old copy is retired, not removed, so a lookup half-way into it completes)."""
    if not exchange:
        monkeypatch.setattr(atomic, "exchange", lambda a, b: False)
    root = tmp_path / "builds"
    dst = root / "r" / "cpu"
    with atomic.temp_dir_beside(dst) as tmp:  # the first publish (and, with links, the first flip) first
        (tmp / "manifest.json").write_text("0")
        atomic.replace_dir(tmp, dst, root=root)
    with atomic.temp_dir_beside(dst) as tmp:
        (tmp / "manifest.json").write_text("1")
        atomic.replace_dir(tmp, dst, root=root)
    stop = tmp_path / "stop"
    reader = subprocess.Popen([sys.executable, "-c", READER, str(dst), str(stop)], stdout=subprocess.PIPE, text=True)
    for n in range(200):
        with atomic.temp_dir_beside(dst) as tmp:
            (tmp / "manifest.json").write_text(str(n))
            atomic.replace_dir(tmp, dst, root=root)
    stop.touch()
    reads, misses = map(int, reader.communicate(timeout=60)[0].split())
    assert reads > 0
    assert misses == 0


def test_stale_temps_of_dead_processes_are_swept(tmp_path: Path) -> None:
    target = tmp_path / "out" / "model.gguf"
    target.parent.mkdir()
    host = atomic.host_id()
    dead, alive = _dead_pid(), os.getppid()
    stale_file = target.parent / f".model.gguf.harness-{host}-{dead}-abcd1234.tmp.gguf"
    stale_dir = target.parent / f".model.gguf.harness-{host}-{dead}-abcd1234.tmp"
    live = target.parent / f".model.gguf.harness-{host}-{alive}-abcd1234.tmp"
    other_host = target.parent / f".model.gguf.harness-000000-{dead}-abcd1234.tmp"
    legacy_old = target.parent / f".model.gguf.old-{dead}"
    users = target.parent / ".model.gguf.backup"
    stale_file.write_bytes(b"x" * 100)
    for d in (stale_dir, live, other_host, legacy_old, users):
        d.mkdir()
    with atomic.temp_file_beside(target) as tmp:
        tmp.write_text("new")
    assert target.read_text() == "new"
    assert not stale_file.exists() and not stale_dir.exists() and not legacy_old.exists()
    assert live.exists() and other_host.exists() and users.exists()
