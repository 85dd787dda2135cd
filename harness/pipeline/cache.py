"""What makes a step skippable: digests of its inputs, a sidecar beside each output.

A digest is the sha256 of a file, remembered in ``<model dir>/.digests.json`` with the
file's size and mtime (ns): unchanged files are never hashed twice, so a run where nothing
changed costs a ``stat`` per file.  Each output ``X`` has a sidecar ``X.json`` written
after ``X`` is in place (the completion marker); a step is fresh when the sidecar's key
(input digests, parameters, tool identity) is the one it would compute now and the output
still has the size and mtime the sidecar recorded.  An output that a tool wrote as a split
set (``convert.split_max_*``, ``quantize.keep_split``) is published as
``<stem>-0000i-of-0000N.gguf``; its sidecar stays ``<stem>.gguf.json`` and records every shard.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
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
    recorded = side.get("output", {})
    files = recorded.get("files") or [recorded]
    for entry in files:
        try:
            now = stamp(output.parent / str(entry.get("path", output.name)))
        except FileNotFoundError:
            return None
        if entry.get("size") != now["size"] or entry.get("mtime_ns") != now["mtime_ns"]:
            return None
    return side


def model_path(output: Path, side: dict[str, Any]) -> Path:
    """What a later step opens: the output, or the first shard of a split output."""
    files = side.get("output", {}).get("files")
    return output.parent / str(files[0]["path"]) if files else output


def shard_names(output: Path, count: int) -> list[Path]:
    """``<stem>-0000i-of-0000N.gguf`` beside ``output`` (llama_split_path of ``<stem>``)."""
    stem = output.with_suffix("")
    return [stem.with_name(f"{stem.name}-{i:05d}-of-{count:05d}.gguf") for i in range(1, count + 1)]


_SHARD_GLOB = "-[0-9][0-9][0-9][0-9][0-9]-of-[0-9][0-9][0-9][0-9][0-9].gguf"


@dataclass
class TempOutput:
    """Where a tool writes: ``path`` (a temp file beside the output, the output's suffix kept),
    or the shards a tool derives from it (``<temp stem>-0000i-of-0000N.gguf``)."""

    output: Path
    path: Path
    published: list[Path] = field(default_factory=list)

    def written(self) -> list[Path]:
        """The file(s) the tool wrote: the temp file, or its shards in order."""
        shards = sorted(self.path.parent.glob(self.path.with_suffix("").name + _SHARD_GLOB))
        if shards:
            return shards
        return [self.path] if self.path.exists() else []

    def publish(self) -> list[Path]:
        """Move what was written into place (shards under the output's own shard names).

        Older files of this output that the new one does not replace (a single file that is
        now split, shards of another count) are removed after the new ones are in place.
        """
        made = self.written()
        finals = [self.output] if made == [self.path] else shard_names(self.output, len(made))
        for tmp, final in zip(made, finals, strict=True):
            os.replace(tmp, final)
        with contextlib.suppress(FileNotFoundError):
            if self.path.exists() and self.path.stat().st_size == 0:
                self.path.unlink()  # a tool that wrote shards may leave the plain name empty
        for old in [self.output, *self.output.parent.glob(self.output.with_suffix("").name + _SHARD_GLOB)]:
            if old not in finals and old.exists():
                old.unlink()
        self.published = finals
        return finals


@contextlib.contextmanager
def temp_output(path: Path) -> Iterator[TempOutput]:
    """A temp file name beside ``path`` with the same suffix (tools pick formats by extension).

    The caller publishes with :meth:`TempOutput.publish` once the output is checked; whatever
    is left (a failed run's full-size file, its shards) is removed, so an old output stays
    whole and a half-written one never appears under the final name.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp" + path.suffix, dir=path.parent)
    os.close(fd)
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(tmp, 0o666 & ~mask)  # the mode a tool's own open() would give, not mkstemp's 0600
    out = TempOutput(path, Path(tmp))
    try:
        yield out
    finally:
        for leftover in [out.path, *out.written()]:
            with contextlib.suppress(FileNotFoundError):
                leftover.unlink()


def remove_stale_temps(directory: Path) -> list[Path]:
    """Temp outputs a killed run left behind (call only while holding the directory's lock)."""
    removed = []
    if directory.is_dir():
        for path in directory.glob(".*.tmp*"):
            if path.is_file():
                path.unlink()
                removed.append(path)
    return removed
