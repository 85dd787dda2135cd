"""Binary caches of published builds, keyed by the build's cache key (harness/build/manifest.py).

A cache is named by a URL (``harness build --cache URL``, ``$HARNESS_BUILD_CACHE``, the recipe's
``build.cache``):

- a plain directory, or ``file:///path``: ``<dir>/<recipe>/<backend>-<key>.tar.gz`` and a
  ``.json`` record beside it (for one machine or a shared filesystem);
- ``oci://HOST[:PORT]/NAMESPACE`` (HTTPS) or ``oci+http://...`` (plain HTTP, for a registry on
  loopback): an OCI distribution registry (GHCR, Docker Hub, Harbor, Zot, ``registry``), one
  repository per recipe (``NAMESPACE/<recipe>``), one tag per build (``<backend>-<key>``).
  See harness/build/cache/oci.py for the protocol and harness/build/cache/creds.py for credentials.

Each transport moves one archive (harness/build/pack.py) per key and lists what a recipe has.  What a
pulled archive must prove before it is published is harness/build/cache/pull.py's business.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from harness.errors import InputError, StepError

ENV = "HARNESS_BUILD_CACHE"


class Unreachable(StepError):
    """The cache could not be reached or stopped answering (a pull falls back to building)."""


class Tampered(StepError):
    """An artifact whose bytes are not what its digest says (refused, nothing is published)."""


@dataclass(frozen=True)
class Entry:
    """One artifact a cache holds for a recipe."""

    recipe: str
    backend: str
    key: str
    size: int | None
    annotations: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {"recipe": self.recipe, "backend": self.backend, "key": self.key, "size": self.size,
                "annotations": self.annotations}


class Transport(Protocol):
    url: str  # as the user gave it, credentials never part of it

    def fetch(self, recipe: str, backend: str, key: str, dest: Path) -> bool:
        """Download the archive of ``key`` to ``dest``; False when the cache has none.  Raises
        Unreachable when the cache does not answer, Tampered when the bytes are not the artifact's."""

    def push(self, recipe: str, backend: str, key: str, archive: Path, manifest_json: bytes,
             annotations: dict[str, str]) -> None:
        """Store ``archive`` (and the manifest beside it) under ``key``; replaces an older copy."""

    def list(self, recipe: str) -> list[Entry]:
        """Every artifact of ``recipe``."""


_NAME = re.compile(r"^[a-z0-9]+(?:[._-][a-z0-9]+)*$")


def tag(backend: str, key: str) -> str:
    return f"{backend}-{key}"


def check_name(recipe: str) -> str:
    """A recipe name as a repository path component (OCI's rule, lowercase)."""
    name = recipe.lower()
    if not _NAME.match(name):
        raise InputError(f"recipe name {recipe!r} cannot name a cache repository (letters, digits, '.', '_', '-')")
    return name


def open_cache(url: str) -> Transport:
    """The transport for ``url`` (see the module doc); InputError for a URL it cannot use."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    if parts.username or parts.password:
        raise InputError(f"cache URL {_redact(url)}: credentials do not belong in a URL (they would show in argv and logs)",
                         hint="log in with 'docker login HOST' (~/.docker/config.json) or set HARNESS_REGISTRY_TOKEN")
    if parts.scheme in ("oci", "oci+http", "oci+https"):
        from harness.build.cache.oci import OciCache

        if not parts.hostname or not parts.path.strip("/"):
            raise InputError(f"cache URL {url}: expected oci://HOST[:PORT]/NAMESPACE")
        return OciCache(url, parts.netloc, parts.path.strip("/"), insecure=parts.scheme == "oci+http")
    if parts.scheme in ("", "file"):
        from harness.build.cache.directory import DirectoryCache

        path = Path(parts.path if parts.scheme == "file" else url).expanduser()
        return DirectoryCache(url, path)
    raise InputError(f"cache URL {_redact(url)}: unknown scheme {parts.scheme!r}; use a directory, file://, "
                     "oci://HOST/NAMESPACE or oci+http://HOST/NAMESPACE")


def _redact(url: str) -> str:
    return re.sub(r"//[^/@]*@", "//***@", url)


def configured(flag: str | None, recipe_value: str | None) -> str | None:
    """The cache to use: ``--cache``, else $HARNESS_BUILD_CACHE, else the recipe's ``build.cache``."""
    import os

    return flag or os.environ.get(ENV) or recipe_value or None
