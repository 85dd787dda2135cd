"""A valid ``manifest.json`` (harness/build/manifest.py) for tests that publish a build by hand."""

from __future__ import annotations

from typing import Any

from harness.build import manifest


def data(**overrides: Any) -> dict[str, Any]:
    key = manifest.CacheKey(lock="l" * 64, backend="cpu", options={}, targets=["llama-server"], cmake={},
                            isa={"variant": "portable", "arch": "x86_64"}, toolchain={})
    m: dict[str, Any] = {
        "schema": manifest.SCHEMA, "identity": "id", "key": key.model_dump(by_alias=True), "key_digest": key.digest,
        "recipe": {"name": "r", "path": "r.yaml", "sha256": "0" * 64}, "lock": {"digest": "l" * 64},
        "patched_commit": "p" * 40, "stack": [], "backend": {"name": "cpu"}, "targets": ["llama-server"],
        "stamp": {"number": 0, "commit": "0c1e570"}, "cmake": {"configure": [], "build": []}, "isa": {},
        "toolchain": {}, "smoke": {}, "created": "2026-01-01T00:00:00+00:00", "files": {},
    }
    m.update(overrides)
    manifest.Manifest.model_validate(m)
    return m
