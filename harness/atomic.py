"""Writes that are never half-done, and never outside the root they belong to.

Every path the harness replaces or removes goes through ``under`` first: it must lie
strictly below a root the harness owns (the builds dir, the cache, an output or model
dir), whatever a recipe or file name says (``..``, links).  Files and directories are
made as temp siblings (``.<name>.harness-<host>-<pid>-<random>.tmp``) and published
with ``os.replace`` or, for directories that already exist, one atomic exchange
(``replace_dir``).  A temp left by a killed process is recognised by its name and removed
the next time anything is written beside the same target (``sweep``).
"""

from __future__ import annotations

import contextlib
import errno
import functools
import hashlib
import json
import os
import re
import secrets
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from harness import faults, flock
from harness.errors import InputError


@functools.cache
def host_id() -> str:
    """Six hex digits naming this machine in temp names (a shared cache may be seen by several)."""
    import socket

    return hashlib.sha256(socket.gethostname().encode()).hexdigest()[:6]

# .<target>.harness-<host>-<pid>-<random>.tmp[<suffix>]; <random> is tempfile's 8 chars
_OURS = re.compile(r"^\.(?P<target>.+)\.harness-(?P<host>[0-9a-f]{6})-(?P<pid>\d+)-[a-z0-9_]{8}\.tmp"
                   r"(?P<suffix>\.[^/]*)?$")
# A published directory's old copy is retired (renamed, not removed) for RETIRE_GRACE_S: a
# process that was starting from it keeps finding its files (ld.so resolves $ORIGIN through
# /proc/self/exe, which follows the renamed copy), and a lookup half-way into it does not fail.
RETIRE_GRACE_S = 60.0
RETIRED = ".old"
# what replace_dir's old code left: .<target>.old-<pid>
_LEGACY_OLD = re.compile(r"^\.(?P<target>.+)\.old-(?P<pid>\d+)$")


class OutsideRoot(InputError):
    """A path to replace or remove that is not strictly below its root.  Exit code 2."""


def under(path: Path, root: Path) -> Path:
    """``path`` made absolute, proven to lie strictly below ``root``; else :class:`OutsideRoot`.

    The directories leading to ``path`` are resolved (``..``, symlinks), its last component
    is not: replacing or removing a symlink acts on the link, never on what it points to.
    """
    root_r = root.resolve()
    name = path.name
    resolved = path.parent.resolve() / name if name not in ("", ".", "..") else path.resolve()
    if name in ("", ".", "..") or resolved == root_r or not resolved.is_relative_to(root_r):
        raise OutsideRoot(f"refusing to write or remove {path}: it is not inside {root_r}",
                          hint="a name from a recipe or a file may not leave the directory the harness owns")
    return resolved


def remove_tree(path: Path, *, root: Path) -> None:
    """Remove ``path`` (a directory tree, a file or a link; nothing if absent), checked to lie under ``root``."""
    path = under(path, root)
    if path.is_symlink() or path.is_file():
        path.unlink(missing_ok=True)
    elif path.is_dir():
        shutil.rmtree(path, ignore_errors=True)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _temp_prefix(path: Path) -> str:
    return f".{path.name}.harness-{host_id()}-{os.getpid()}-"


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this host (one we may not signal counts as alive)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def stale_of(path: Path) -> list[Path]:
    """Temp and old copies of ``path`` that a dead process of this host left beside it, and old
    copies retired more than ``RETIRE_GRACE_S`` ago."""
    found = []
    try:
        entries = list(os.scandir(path.parent))
        live = os.readlink(path) if path.is_symlink() else None  # a flipped directory's current version
    except OSError:
        return []
    for entry in entries:
        if not entry.name.startswith(f".{path.name}.") or entry.name == live:
            continue
        m = _OURS.match(entry.name)
        if m and m["target"] == path.name and m["host"] == host_id():
            if not pid_alive(int(m["pid"])) or (m["suffix"] == RETIRED and _age(entry) > RETIRE_GRACE_S):
                found.append(Path(entry.path))
            continue
        legacy = _LEGACY_OLD.match(entry.name)
        if legacy and legacy["target"] == path.name and not pid_alive(int(legacy["pid"])):
            found.append(Path(entry.path))
    return sorted(found)


def _age(entry: os.DirEntry[str]) -> float:
    try:
        return time.time() - entry.stat(follow_symlinks=False).st_ctime  # a rename sets ctime
    except OSError:
        return 0.0


def sweep(path: Path) -> list[Path]:
    """Remove what ``stale_of(path)`` finds; returns what was removed."""
    removed = stale_of(path)
    for stale in removed:
        remove_tree(stale, root=path.parent)
    return removed


def _mkstemp_beside(path: Path, suffix: str = ".tmp") -> tuple[int, str]:
    """A temp file in ``path``'s directory, with the mode a plain open() would give (not mkstemp's 0600)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    sweep(path)
    fd, tmp = tempfile.mkstemp(prefix=_temp_prefix(path), suffix=suffix, dir=path.parent)
    os.chmod(tmp, 0o666 & ~_umask())
    return fd, tmp


def write_text(path: Path, text: str) -> None:
    fd, tmp = _mkstemp_beside(path)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_json(path: Path, data: Any) -> None:
    write_text(path, json.dumps(data, indent=2, sort_keys=False) + "\n")


@contextlib.contextmanager
def temp_file_beside(path: Path, *, keep_suffix: bool = False) -> Iterator[Path]:
    """Yield a temp path beside ``path``; on success it replaces ``path``, on failure it is removed.

    ``keep_suffix`` ends the temp name with ``path``'s suffix (tools that pick formats by extension).
    """
    fd, tmp = _mkstemp_beside(path, ".tmp" + (path.suffix if keep_suffix else ""))
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        faults.point("atomic:before-replace")
        os.replace(tmp_path, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()


def make_temp_dir_beside(path: Path) -> Path:
    """A fresh temp directory beside ``path``, left to the caller (swept once its process is gone)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    sweep(path)
    tmp = Path(tempfile.mkdtemp(prefix=_temp_prefix(path), suffix=".tmp", dir=path.parent))
    os.chmod(tmp, 0o777 & ~_umask())
    return tmp


@contextlib.contextmanager
def temp_dir_beside(path: Path) -> Iterator[Path]:
    """Yield a fresh temp directory beside ``path`` (mode as ``mkdir`` gives, not mkdtemp's 0700);
    removed unless the caller published it."""
    tmp = make_temp_dir_beside(path)
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# --- publishing a directory ---------------------------------------------------------------

_AT_FDCWD = -100
_RENAME_EXCHANGE = 2  # linux/fs.h


@functools.cache
def _renameat2() -> Any:
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    try:
        fn = ctypes.CDLL(None, use_errno=True).renameat2  # glibc >= 2.28, musl >= 1.2
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    fn.restype = ctypes.c_int
    return fn


def exchange(a: Path, b: Path) -> bool:
    """Swap ``a`` and ``b`` in one step (Linux ``renameat2(RENAME_EXCHANGE)``).

    False where the platform or the filesystem cannot (no renameat2, ENOSYS, EINVAL)."""
    fn = _renameat2()
    if fn is None:
        return False
    if fn(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    import ctypes

    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), str(a), None, str(b))


def replace_dir(src: Path, dst: Path, *, root: Path) -> None:
    """Publish directory ``src`` at ``dst`` (both under ``root``): old or new at every instant.

    A new ``dst`` is one rename.  An existing one is swapped with ``src`` by ``exchange``
    and the old copy, now at ``src``, retired (see ``RETIRE_GRACE_S``; swept later, also
    if we are killed here).  Where exchange is unavailable ``dst`` becomes a symlink to a
    versioned sibling and is flipped with ``os.replace`` (atomic for links); only the very
    first flip of a real directory has a moment without ``dst``.
    """
    src, dst = under(src, root), under(dst, root)
    if not os.path.lexists(dst):
        os.rename(src, dst)
        return
    if exchange(src, dst):
        faults.point("replace_dir:exchanged")
        _retire(src, dst)
    else:
        _flip(src, dst)
    sweep(dst)


def _retire(old: Path, dst: Path) -> None:
    os.rename(old, dst.with_name(f"{_temp_prefix(dst)}{secrets.token_hex(4)}.tmp{RETIRED}"))


def _flip(src: Path, dst: Path) -> None:
    token = f"{_temp_prefix(dst)}{secrets.token_hex(4)}.tmp"
    version = dst.with_name(token + ".v")  # recognised by _OURS, kept while it is the link's target
    os.rename(src, version)
    old: Path | None = None
    if dst.is_symlink():
        target = os.readlink(dst)
        old = dst.with_name(target) if _OURS.match(target) else None  # a link of the user's: leave its target
    else:  # the first flip of a real directory: move it aside (the one moment without dst)
        old = dst.with_name(token + ".first")
        os.rename(dst, old)
    link = dst.with_name(token + ".link")
    os.symlink(version.name, link)
    os.replace(link, dst)
    if old is not None:
        _retire(old, dst)


def lock(path: Path, timeout: float = -1) -> flock.FileLock:
    """A file lock at ``path`` (created beside what it guards); waits say who holds it (``harness.flock``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    return flock.FileLock(path, timeout=timeout)


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()
