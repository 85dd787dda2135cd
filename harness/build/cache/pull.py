"""Pull a build from a cache and prove it here before publishing it; push a proven build.

A pull (``harness build`` with a cache) is published only when, in this order:

1. the cache has an artifact for this build's key, and its bytes match their digest (the OCI
   layer digest, or the directory cache's record);
2. the archive unpacks to plain files only, beside the target (harness/build/pack.py);
3. its manifest is one this harness reads, it names this very key, and every file under the
   unpacked directory is in it with the same sha256, none missing, none extra;
4. the recipe's smoke checks pass on this machine (``version`` with the manifest's stamp,
   ``decode`` and the rest: harness/smoke/), as for a local build.

A miss, an unreachable cache, a denied login, or a failed proof (3 for a key mismatch, 4)
falls back to building from source, with one line saying why.  Bytes that do not match their
digest, or an unpacked file that does not match the manifest, are refused: exit 1 and nothing
is published (the previous build stays).
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from harness import atomic, console, paths, smoke
from harness.build import manifest as manifest_mod
from harness.build import pack
from harness.build.cache import Tampered, Transport, Unreachable
from harness.build.manifest import CacheKey, Manifest, ManifestError
from harness.errors import StepError


def pull(cache: Transport, key: CacheKey, *, recipe: str, backend: str, out: Path, root: Path, ident: str,
         checks: Sequence[str], smoke_model: Path | None) -> Manifest | None:
    """The published manifest of a proven pull, or None (the reason said) to build from source."""
    started = time.monotonic()
    where = f"{recipe}/{backend}"
    out = atomic.under(out, root)
    with tempfile.TemporaryDirectory(dir=paths.cache_dir("pull"), prefix=".pull-") as scratch:
        archive = Path(scratch) / f"{recipe}-{backend}-{key.digest[:16]}.tar"
        try:
            found = cache.fetch(recipe, backend, key.digest, archive)
        except Unreachable as exc:
            console.warn(f"{where}: building from source: {exc.message}")
            return None
        except Tampered as exc:
            raise _refused(exc.message) from None
        if not found:
            console.info(f"{where}: not in cache {cache.url} (key {key.digest[:12]}); building from source")
            return None
        fetched_s = time.monotonic() - started
        with atomic.temp_dir_beside(out) as tmp:
            try:
                pack.unpack(archive, tmp)
            except pack.BadArchive as exc:
                raise _refused(exc.message) from None
            try:
                manifest = manifest_mod.read(tmp)
            except ManifestError as exc:
                console.warn(f"{where}: building from source: the cached build's manifest: {exc.message}")
                return None
            if manifest is None:
                raise _refused("the archive holds no manifest.json")
            if manifest.key != key or manifest.key_digest != key.digest:
                diff = ", ".join(manifest.key.differences(key)) or "its digest"
                console.warn(f"{where}: building from source: the cached build is another build (differs in {diff})")
                return None
            problems = pack.verify_files(tmp, manifest)
            if problems:
                raise _refused(f"{len(problems)} file(s) do not match the manifest: " + "; ".join(problems[:5]))
            verified_s = time.monotonic() - started - fetched_s
            console.step(f"{where}: pulled {key.digest[:12]} from {cache.url}; proving it here ({', '.join(checks)})")
            work = Path(scratch) / "smoke"  # this pull's own: another may be proving the same key now
            ctx = smoke.Context(bin_dir=tmp / "bin", backend=backend, targets=list(manifest.targets),
                                stamp=manifest.stamp.commit, work=work, model=smoke_model)
            t0 = time.monotonic()
            try:
                results = smoke.run(checks, ctx)
            except smoke.SmokeFailure as exc:
                console.warn(f"{where}: building from source: the pulled build failed its {exc.check} check here: "
                             f"{str(exc.message).splitlines()[0]}")
                return None
            smoke_s = time.monotonic() - t0
            published = manifest.model_copy(update={
                "identity": ident, "smoke": results,
                "origin": manifest_mod.Origin(how="pulled", cache=cache.url, built_on=manifest.origin.built_on),
                "timings": {"pull_s": round(fetched_s, 3), "verify_s": round(verified_s, 3),
                            "smoke_s": round(smoke_s, 3), "total_s": round(time.monotonic() - started, 3),
                            "built_build_s": manifest.timings.get("build_s", 0.0)},
            })
            published.write(tmp)
            atomic.replace_dir(tmp, out, root=root)
    return published


def lock_path(out: Path) -> Path:
    """The lock two pulls into the same place take (in the cache: nothing is added beside ``out``)."""
    import hashlib

    return paths.cache_dir("pull") / f"{hashlib.sha256(str(out.absolute()).encode()).hexdigest()[:24]}.lock"


def push(cache: Transport, out: Path, *, bundle_cuda: bool) -> str:
    """Pack the published build at ``out`` and store it under its key; returns the key."""
    manifest = manifest_mod.read(out)
    if manifest is None:
        raise StepError(f"no published build at {out} to push")
    backend = str(manifest.backend.get("name"))
    with tempfile.TemporaryDirectory(dir=paths.cache_dir("push"), prefix=".push-") as scratch:
        archive = Path(scratch) / f"{manifest.recipe.name}-{backend}{pack.suffix()}"
        _, packed = pack.pack(out, archive, bundle_cuda=bundle_cuda)
        data = (json.dumps(packed.to_json(), indent=2) + "\n").encode()
        ann = {k: str(v) for k, v in pack.describe(packed).items()}
        ann["lock"] = json.dumps(packed.lock, sort_keys=True)
        cache.push(packed.recipe.name, backend, packed.key_digest, archive, data, ann)
    return packed.key_digest


def _refused(why: str) -> StepError:
    return StepError(f"refusing the cached build: {why}",
                     hint="nothing was published (the previous build stays); the artifact is damaged or was altered: "
                          "build without the cache (--no-cache) or push a good build again (--push)")
