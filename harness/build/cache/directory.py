"""A binary cache in a plain directory (or ``file://``): one archive and one record per key.

``<dir>/<recipe>/<backend>-<key>.tar.gz`` (or ``.tar.zst``) and ``<backend>-<key>.json`` beside
it: the archive's sha256 and size, the annotations, and the build's manifest.  Both are written
atomically, the record last, so a reader sees a whole artifact or none.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from harness import atomic
from harness.build.cache import Entry, Tampered, Unreachable, check_name, tag


class DirectoryCache:
    def __init__(self, url: str, root: Path) -> None:
        self.url = url
        self.root = root

    def _record(self, recipe: str, backend: str, key: str) -> Path:
        return self.root / check_name(recipe) / f"{tag(backend, key)}.json"

    def fetch(self, recipe: str, backend: str, key: str, dest: Path) -> bool:
        if not self.root.is_dir():
            raise Unreachable(f"cache {self.url}: no such directory")
        try:
            record: dict[str, Any] = json.loads(self._record(recipe, backend, key).read_text())
        except FileNotFoundError:
            return False
        except (OSError, ValueError) as exc:
            raise Unreachable(f"cache {self.url}: cannot read its record of {key[:12]}: {exc}") from None
        archive = self._record(recipe, backend, key).parent / str(record["archive"]["name"])
        if "/" in record["archive"]["name"]:
            raise Tampered(f"cache {self.url}: the record of {key[:12]} names {record['archive']['name']!r}")
        try:
            shutil.copyfile(archive, dest)
        except OSError as exc:
            raise Unreachable(f"cache {self.url}: cannot read {archive.name}: {exc.strerror or exc}") from None
        got = atomic.sha256_file(dest)
        if got != record["archive"]["sha256"]:
            raise Tampered(f"cache {self.url}: {archive.name} has sha256 {got[:16]}..., its record says "
                           f"{str(record['archive']['sha256'])[:16]}...")
        return True

    def push(self, recipe: str, backend: str, key: str, archive: Path, manifest_json: bytes,
             annotations: dict[str, str]) -> None:
        record_path = self._record(recipe, backend, key)
        record_path.parent.mkdir(parents=True, exist_ok=True)
        name = tag(backend, key) + "".join(archive.suffixes[-2:])
        with atomic.temp_file_beside(record_path.parent / name) as tmp:
            shutil.copyfile(archive, tmp)
        atomic.write_json(record_path, {
            "archive": {"name": name, "sha256": atomic.sha256_file(archive), "size": archive.stat().st_size},
            "annotations": annotations, "manifest": json.loads(manifest_json),
        })

    def list(self, recipe: str) -> list[Entry]:
        entries = []
        for path in sorted((self.root / check_name(recipe)).glob("*.json")):
            try:
                record = json.loads(path.read_text())
                ann = record["annotations"]
                entries.append(Entry(recipe, ann["backend"], ann["key"], record["archive"]["size"], ann))
            except (OSError, ValueError, KeyError, TypeError):
                continue
        return entries
