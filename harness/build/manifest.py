"""The published build's ``manifest.json``: one versioned model, and the build's cache key.

Every reader (build, verify, uptodate, nightly, rpc, the pipeline's tools, the binary cache)
goes through :func:`read`: a manifest of another schema is a clean message naming the file
and the command that rewrites it, never a KeyError half-way through a command.

The cache key (:class:`CacheKey`) is what makes two builds the same build on any machine:

- ``lock``: the lock's digest (upstream base SHA and every stack item's pin and sha256);
- ``backend``, ``options``: the backend and its recipe options, the CPU options, the recipe's
  CMake arguments and build type, RPC, the targets;
- ``cmake``: every ``-D`` entry this harness passes, with placeholder paths and no compiler
  launcher (ccache changes how fast a build is made, not what it is);
- ``isa``: the CPU instruction-set plan.  A ``native`` build runs ``-march=native``, so it is
  keyed by the architecture and the exact CPU feature set (every flag /proc/cpuinfo lists) it
  was compiled on; ``portable`` and ``all-variants`` builds by the architecture only (their
  code does not depend on the CPU that compiled them);
- ``gpu``: for CUDA, the architectures (``CMAKE_CUDA_ARCHITECTURES``) and the CUDA major
  version (the runtime a binary needs);
- ``toolchain``: the versions of cmake, ninja, the C and C++ compilers (and nvcc).

Its digest names the artifact in a cache (harness/build/cache/).  The local ``identity`` (harness/
build/run.py) adds what only this machine cares about (the launcher) and decides whether a
published build is current.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from harness import readlimits
from harness.errors import InputError
from harness.smoke.results import SmokeResults

SCHEMA = 4  # 4: a versioned model with the cache key and the origin (3: dicts read by key)
KEY_SCHEMA = 1
NAME = "manifest.json"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class CacheKey(_Model):
    """See the module doc.  ``digest`` names the build in a cache."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    schema_: int = Field(default=KEY_SCHEMA, alias="schema")
    lock: str
    backend: str
    options: dict[str, Any]
    targets: list[str]
    cmake: dict[str, str]
    isa: dict[str, Any]
    gpu: dict[str, Any] = Field(default_factory=dict)
    toolchain: dict[str, str]

    @property
    def digest(self) -> str:
        data = self.model_dump(by_alias=True)
        return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()

    def differences(self, other: CacheKey) -> list[str]:
        """The top-level parts that differ (for a miss's one-line reason)."""
        mine, theirs = self.model_dump(by_alias=True), other.model_dump(by_alias=True)
        return [k for k in mine if mine[k] != theirs.get(k)]


def cuda_major(nvcc_version: str) -> str | None:
    """``12`` from the nvcc version the toolchain records (``12.4.131``, or nvcc's own ``release 12.4`` line)."""
    m = re.search(r"release (\d+)\.", nvcc_version) or re.match(r"V?(\d+)\.", nvcc_version.strip())
    return m.group(1) if m else None


class Stamp(_Model):
    number: int  # LLAMA_BUILD_NUMBER
    commit: str  # LLAMA_BUILD_COMMIT
    late: bool = False  # its digest was written over a placeholder after the link (harness/build/stamp.py)


class RecipeRef(_Model):
    name: str
    path: str
    sha256: str


class Commands(_Model):
    configure: list[str]
    build: list[str]


class Rpc(_Model):
    server: str | None
    protocol: str | None


class Origin(_Model):
    """How this copy came to be: compiled here, or pulled from a cache and proven here."""

    how: Literal["built", "pulled"] = "built"
    cache: str | None = None  # the cache URL (no credentials) a pulled build came from
    built_on: str | None = None  # host that compiled it (uname nodename)


class Manifest(_Model):
    schema_: Literal[4] = Field(default=4, alias="schema")
    identity: str
    key: CacheKey
    key_digest: str
    recipe: RecipeRef
    lock: dict[str, Any]  # "path", "digest" and the lock's own JSON
    patched_commit: str
    stack: list[dict[str, Any]]
    drift: list[dict[str, Any]] = Field(default_factory=list)
    backend: dict[str, Any]
    targets: list[str]
    rpc: Rpc | None = None
    stamp: Stamp
    cmake: Commands
    isa: dict[str, Any]
    toolchain: dict[str, str]
    ninja_steps: int = 0
    log: str | None = None
    timings: dict[str, float] = Field(default_factory=dict)
    smoke: SmokeResults  # what each smoke check proved (harness/smoke/results.py)
    origin: Origin = Field(default_factory=Origin)
    bundled: list[str] = Field(default_factory=list)  # libraries `harness pack` added (CUDA runtime)
    created: str
    files: dict[str, str]

    @property
    def lock_digest(self) -> str:
        return str(self.lock.get("digest", ""))

    @property
    def base(self) -> str | None:
        upstream = self.lock.get("upstream")
        return str(upstream["sha"]) if isinstance(upstream, dict) and "sha" in upstream else None

    def to_json(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True, exclude_none=False)

    def write(self, root: Path) -> None:
        from harness import atomic

        atomic.write_json(root / NAME, self.to_json())


class ManifestError(InputError):
    """A manifest this harness cannot read: another schema, or not a manifest of ours."""


def parse(data: Any, where: Path) -> Manifest:
    """Validate parsed JSON as a manifest; ManifestError naming the file and what to do."""
    schema = data.get("schema") if isinstance(data, dict) else None
    if schema != SCHEMA:
        if isinstance(schema, int) and schema < SCHEMA:
            what = f"written by an older harness (manifest schema {schema}; this one reads {SCHEMA})"
        elif isinstance(schema, int):
            what = f"written by a newer harness (manifest schema {schema}; this one reads {SCHEMA})"
        else:
            what = "not a llama-harness build manifest (no schema)"
        raise ManifestError(f"{where}: {what}", file=str(where), key="schema",
                            hint="build it again with this harness: harness build RECIPE --backend B")
    try:
        return Manifest.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        key = ".".join(str(p) for p in first["loc"])
        raise ManifestError(f"{where}: {key}: {first['msg']} ({exc.error_count()} problem(s))", file=str(where),
                            key=key, hint="build it again with this harness: harness build RECIPE --backend B") from None


def read(root: Path) -> Manifest | None:
    """``root/manifest.json``; None when there is none; ManifestError when it is not one this harness reads."""
    path = root / NAME
    if not path.exists() and not path.is_symlink():
        return None
    try:  # a regular file, of bounded size and nesting (a manifest is a few KiB)
        data = readlimits.load_json(path, what="build manifest")
    except InputError as exc:
        raise ManifestError(str(exc), file=str(path)) from None
    return parse(data, path)


def read_or_none(root: Path) -> Manifest | None:
    """``read``, with a manifest of another schema counted as none (a build replaces it)."""
    try:
        return read(root)
    except ManifestError:
        return None
