"""The no-op fast path of ``harness build``: decide that nothing changed without loading the recipe.

A full ``harness build`` that ends with every backend published (built or found up to
date) records what it depended on, in a form that is cheap to check again:

- the sha256 of the recipe, its lock and every local patch file the stack names;
- resolved path, size and mtime (or absence) of every program the build could pick for the
  identity's toolchain: cmake and ninja beside the interpreter and on PATH, ``$CC``/``cc``,
  ``$CXX``/``c++``, and ccache (so installing one, or a new ``cc`` earlier on PATH, misses);
- the environment variables that choose those programs or reach the compiles (``PATH``,
  ``CC``, ``CXX``, ``*FLAGS``, ``CMAKE_*``, ``CCACHE_*``, ``HARNESS_*`` ...);
- this machine (``uname``; on Linux the CPU model and flags: native builds target them);
- this harness's code (size and mtime of every module) and interpreter;
- per backend, the identity and path of the published build.

``check`` recomputes all of that (hashing a few small files and a few hundred stat calls),
reads each published ``manifest.json``, and returns the same results a full no-op would
when nothing differs and every published file is there.  Anything else is a miss and the
full path runs (and records again).  Only CPU builds are recorded: GPU backends ask their
toolkit and driver (``nvcc --version``, ``nvidia-smi``) for facts that go into the identity,
and those answers are not cached here.  Records live in ``<cache>/uptodate/``, written
atomically.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from harness.build.manifest import Manifest

from harness import readlimits
from harness.errors import InputError

SCHEMA = 1
_ENV_NAMES = ("PATH", "CC", "CXX", "CFLAGS", "CXXFLAGS", "CPPFLAGS", "LDFLAGS", "SOURCE_DATE_EPOCH", "MACOSX_DEPLOYMENT_TARGET")
_ENV_PREFIXES = ("CMAKE_", "CCACHE_", "HARNESS_", "CUDA", "NVCC", "HIP", "ROCM", "VULKAN", "GGML_", "LLAMA_")


def key(recipe: str | Path, backends: Iterable[str] | None, builds_dir: Path | None, *, ccache: bool,
        smoke: Iterable[str] | None = None) -> str:
    """Which record answers this command line (recipe file, backends asked for, builds dir, ccache,
    smoke checks asked for: a build proven by fewer checks is no answer to more)."""
    from harness.build.published import DEFAULT_BUILDS_DIR

    what = [os.path.realpath(recipe), sorted(backends) if backends else None,
            os.path.abspath(builds_dir or DEFAULT_BUILDS_DIR), ccache, sorted(smoke) if smoke is not None else None]
    return hashlib.sha256(json.dumps(what).encode()).hexdigest()[:32]


def learned_isa() -> Path:
    """The CPU extensions crashed decodes excluded (harness/build/isa.py): they change the build's plan."""
    from harness import paths

    return paths.cache_root() / "isa" / "learned.json"


def digests(files: Iterable[Path]) -> dict[str, str | None]:
    """sha256 of each file (None: missing or unreadable)."""
    return {str(p): _sha256(p) for p in files}


def programs(*, ccache: bool) -> dict[str, str]:
    """Every program the build's toolchain could resolve to, as it is looked up: by path for
    ``cmake.program``'s first choice (beside the interpreter), by name for PATH lookups
    (``cmake.program``'s fallback, ``toolchain.compilers``, ``cmake.ccache_program``)."""
    beside = Path(sys.executable).parent
    found = {"cmake": str(beside / "cmake"), "cmake on PATH": "cmake",
             "ninja": str(beside / "ninja"), "ninja on PATH": "ninja",
             "cc": os.environ.get("CC") or "cc", "c++": os.environ.get("CXX") or "c++"}  # fmt: skip
    if ccache:
        found["ccache"] = "ccache"
    return found


def inputs(files: Mapping[str, str | None], *, ccache: bool) -> dict[str, Any]:
    """Everything a build identity rests on that can be checked without loading the recipe
    (``files`` from ``digests``; ``ccache``: whether the build may use it)."""
    from harness.build import toolchain

    return {
        "schema": SCHEMA,
        "files": dict(files),
        "ccache": ccache,
        "programs": {name: toolchain.stat_key(program) for name, program in programs(ccache=ccache).items()},
        "env": {k: v for k, v in os.environ.items() if k in _ENV_NAMES or k.startswith(_ENV_PREFIXES)},
        "host": _host(),
        "harness": _code_digest(),
    }


def check(record_key: str) -> list[dict[str, Any]] | None:
    """The build results (as ``harness build --json`` prints them) when nothing changed, else None."""
    try:
        record = readlimits.load_json(_record_path(record_key))
        old = record["inputs"]
        now = inputs(digests(Path(p) for p in old["files"]), ccache=old["ccache"])
        if now != old:
            return None
        results: list[dict[str, Any]] = []
        for entry in record["results"]:
            root = Path(entry["path"])
            # the manifest as JSON (no pydantic on the fast path): the record was written by this very
            # harness code (its digest is among the inputs), for the build whose identity it names
            manifest = readlimits.load_json(root / "manifest.json", what="build manifest")
            if not isinstance(manifest, dict) or manifest.get("identity") != entry["identity"]:
                return None
            if not all((root / f).exists() for f in manifest["files"]):
                return None
            if any(e.name.startswith(f".{root.name}.") for e in os.scandir(root.parent)):
                return None  # temps or an old copy beside it (a killed build?): the full path sweeps them
            results.append({"recipe": entry["recipe"], "backend": entry["backend"], "path": entry["path"],
                            "identity": entry["identity"], "noop": True, **_summary_json(manifest)})
        return results
    except (OSError, ValueError, KeyError, TypeError, AttributeError, InputError):
        return None


def record(record_key: str, before: dict[str, Any], results: list[dict[str, Any]]) -> None:
    """Remember ``results`` for ``record_key``, with the ``inputs`` taken before the build ran."""
    from harness import atomic, backends

    path = _record_path(record_key)
    if not results or any(not backends.get(r["backend"]).fast_path for r in results):
        path.unlink(missing_ok=True)
        return
    entries = [{"recipe": r["recipe"], "backend": r["backend"], "path": r["path"], "identity": r["identity"]}
               for r in results]  # fmt: skip
    atomic.write_json(path, {"inputs": before, "results": entries})


def _summary_json(m: dict[str, Any]) -> dict[str, Any]:
    """``summary`` of a manifest read as JSON (the fast path imports no pydantic): the same fields, the
    model's defaults where the file leaves them out."""
    isa = m.get("isa") or {}
    origin = {"how": "built", "cache": None, "built_on": None, **(m.get("origin") or {})}
    return {"stamp": m["stamp"], "timings": m.get("timings") or {}, "patched_commit": m["patched_commit"],
            "origin": origin, "key": m["key_digest"],
            "isa": {k: isa.get(k) for k in ("variant", "enabled", "disabled", "fallbacks", "ggml_features")}}


def summary(manifest: Manifest) -> dict[str, Any]:
    """What ``harness build --json`` prints of a published build (a build, a no-op or a pull alike)."""
    return {"stamp": manifest.stamp.model_dump(), "timings": manifest.timings, "patched_commit": manifest.patched_commit,
            "origin": manifest.origin.model_dump(), "key": manifest.key_digest,
            "isa": {k: manifest.isa.get(k) for k in ("variant", "enabled", "disabled", "fallbacks", "ggml_features")}}


def _record_path(record_key: str) -> Path:
    from harness import paths

    return paths.cache_root() / "uptodate" / f"{record_key}.json"


def _sha256(path: Path) -> str | None:
    """A file's sha256; a directory's (a patch series) covers its names and every file's bytes."""
    try:
        if path.is_dir():
            h = hashlib.sha256()
            for child in sorted(path.iterdir()):
                h.update(f"{child.name}\0{_sha256(child)}\n".encode())
            return h.hexdigest()
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None


def _host() -> dict[str, Any]:
    u = os.uname()
    host: dict[str, Any] = {"uname": [u.sysname, u.nodename, u.release, u.machine], "python": sys.executable}
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            first = f.read(1 << 16).split("\n\n", 1)[0]
        host["cpu"] = [line for line in first.splitlines() if line.startswith(("model name", "flags", "Features"))]
    except OSError:
        pass
    return host


def _code_digest() -> str:
    """Size and mtime of every module of this harness: any edit or upgrade misses."""
    root = Path(__file__).resolve().parents[1]  # the harness package
    h = hashlib.sha256()
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d != "__pycache__")
        for name in sorted(filenames):
            if name.endswith(".py"):
                st = os.stat(os.path.join(dirpath, name))
                h.update(f"{dirpath}/{name}:{st.st_size}:{st.st_mtime_ns}\n".encode())
    return h.hexdigest()
