"""What makes a step skippable: digests of its inputs, a sidecar beside each output.

A digest is the sha256 of a file, remembered in ``<model dir>/.digests.json`` with the
file's size and mtime (ns): unchanged files are never hashed twice, so a run where nothing
changed costs a ``stat`` per file.  Each output ``X`` has a sidecar ``X.json`` written
after ``X`` is in place (the completion marker); a step is fresh when the sidecar's key
(input digests, parameters, tool identity) is the one it would compute now and the output
still has the size and mtime the sidecar recorded.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from pathlib import Path
from typing import Any

from harness import atomic

DIGESTS = ".digests.json"
SIDECAR_SUFFIX = ".json"


class Digests:
    """sha256 of files, cached by (path, size, mtime_ns) in one JSON file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._entries: dict[str, dict[str, Any]] = {}
        self._dirty = False
        if path.exists():
            with contextlib.suppress(OSError, ValueError):
                loaded = json.loads(path.read_text())
                if isinstance(loaded, dict):
                    self._entries = loaded

    def file(self, path: Path) -> str:
        st = path.stat()
        key = str(path.resolve())
        entry = self._entries.get(key)
        if entry and entry.get("size") == st.st_size and entry.get("mtime_ns") == st.st_mtime_ns:
            return str(entry["sha256"])
        digest = atomic.sha256_file(path)
        self._entries[key] = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": digest}
        self._dirty = True
        return digest

    def tree(self, root: Path, names: list[str]) -> str:
        """One digest for the named files of a directory (a checkpoint)."""
        h = hashlib.sha256()
        for name in sorted(names):
            h.update(f"{name}\0{self.file(root / name)}\n".encode())
        return h.hexdigest()

    def save(self) -> None:
        if self._dirty:
            atomic.write_json(self.path, self._entries)
            self._dirty = False


def key(data: dict[str, Any]) -> str:
    """A stable digest of a step's inputs, parameters and tool."""
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()


def sidecar_path(output: Path) -> Path:
    return output.with_name(output.name + SIDECAR_SUFFIX)


def read_sidecar(output: Path) -> dict[str, Any] | None:
    path = sidecar_path(output)
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def write_sidecar(output: Path, data: dict[str, Any]) -> None:
    atomic.write_json(sidecar_path(output), data)


def stamp(path: Path) -> dict[str, int]:
    """Size and mtime of an output, as its sidecar records them."""
    st = path.stat()
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}


def fresh(output: Path, want_key: str) -> dict[str, Any] | None:
    """The sidecar of ``output`` when it is up to date for ``want_key``, else None."""
    side = read_sidecar(output)
    if side is None or side.get("key") != want_key:
        return None
    try:
        now = stamp(output)
    except FileNotFoundError:
        return None
    recorded = side.get("output", {})
    if recorded.get("size") != now["size"] or recorded.get("mtime_ns") != now["mtime_ns"]:
        return None
    return side


def temp_output(path: Path) -> contextlib.AbstractContextManager[Path]:
    """A temp file beside ``path`` with the same suffix (tools pick formats by extension).

    On success the temp file replaces ``path``; on any failure it is removed, so an old
    output stays whole and a half-written one never appears under the final name.
    """
    return atomic.temp_file_beside(path, keep_suffix=True)


def remove_stale_temps(directory: Path) -> list[Path]:
    """Temp outputs a killed run left behind (call only while holding the directory's lock)."""
    removed = []
    if directory.is_dir():
        for path in directory.glob(".*.tmp*"):
            if path.is_file():
                path.unlink()
                removed.append(path)
    return removed
