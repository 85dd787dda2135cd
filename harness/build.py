"""Locked recipe -> builds/<recipe>/<backend>/: one CMake+Ninja build per backend.

The identity of a build is a digest of everything that goes into it (lock, backend and
options, targets, CMake arguments, toolchain versions).  When the published build has that
identity, nothing runs.  Source and build directories live in the cache per (recipe,
backend, options) and are moved to each new patched commit, so only what changed is
recompiled.  The result is assembled beside the published one and swapped in only after
the smoke test passed: a failed or interrupted build leaves the previous good build.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from harness import (
    atomic,
    backends,
    builds,
    cmake,
    console,
    git,
    lock,
    paths,
    publish,
    runner,
    stack,
    toolchain,
)
from harness.errors import StepError
from harness.lock import Lock
from harness.recipe import Recipe
from harness.stack import Prepared
from harness.tree import Tree

SCHEMA = 2  # 2: ccache namespace (objects built under scheme 1 may carry other file names)


@dataclass(frozen=True)
class BuildResult:
    recipe: str
    backend: str
    root: Path
    identity: str
    noop: bool
    manifest: dict[str, Any]


def _digest(data: Any) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()


def options_of(recipe: Recipe, backend: str) -> dict[str, Any]:
    b = recipe.spec.build
    own = getattr(b, backend).model_dump()
    return {"backend": backend, "options": own, "cmake_args": dict(b.cmake_args), "build_type": b.build_type,
            "schema": SCHEMA}


def identity(the_lock: Lock, recipe: Recipe, backend: str, tools: dict[str, str], *, ccache: str | None) -> str:
    """Everything that goes into a build, paths aside: a change to any of it means a new build."""
    # the CMake entries this harness version computes, with placeholder paths and stamp
    flags = cmake.cache_entries(recipe.spec.build, backends.get(backend), cmake.Stamp(0, "-"), Path("/src"),
                                Path("/build"), ccache="ccache" if ccache else None)
    return _digest({
        "schema": SCHEMA,
        "lock": the_lock.digest,
        **options_of(recipe, backend),
        "targets": sorted(recipe.spec.build.targets),
        "toolchain": tools,
        "flags": flags,
    })


def work_dir(recipe: Recipe, backend: str) -> Path:
    """The persistent build directory of (recipe, backend, options), beside the recipe's source tree.

    Every build directory is ``<tree root>/build-<backend>-<options>``, so the source is ``../src``
    from all of them: with CCACHE_BASEDIR at the cache root, compiles of the same file in two
    recipes are the same command and hit the cache.
    """
    return Tree.for_recipe(recipe).root / f"build-{backend}-{_digest(options_of(recipe, backend))[:10]}"


def stamp_of(prepared: Prepared) -> cmake.Stamp:
    applied = [i for i in prepared.items if i.status == stack.APPLIED]
    short = prepared.base[:7]
    if not applied:
        return cmake.Stamp(0, short)
    return cmake.Stamp(len(applied), f"{short}+stack.{prepared.lock_digest[:8]}")


def build(
    recipe: Recipe,
    backend_name: str,
    *,
    builds_dir: Path | None = None,
    jobs: int | None = None,
    force: bool = False,
    frozen: bool = False,
    ccache: bool = True,
    lock_override: Lock | None = None,
    out: Path | None = None,
) -> BuildResult:
    """Build one backend; ``lock_override`` and ``out`` let nightly build a candidate lock elsewhere."""
    started = time.monotonic()
    backend = backends.get(backend_name)
    the_lock = lock_override or lock.ensure(recipe, frozen=frozen)
    cmake_bin, ninja_bin = cmake.program("cmake"), cmake.program("ninja")
    tools = {**toolchain.versions(cmake_bin, ninja_bin), **backend.toolchain()}
    launcher = cmake.ccache_program() if ccache else None
    ident = identity(the_lock, recipe, backend_name, tools, ccache=launcher)
    out = out or builds.build_root(builds_dir, recipe.name, backend_name)
    current = builds.manifest(out)
    if not force and current and current.get("identity") == ident and all((out / f).exists() for f in current.get("files", {})):
        return BuildResult(recipe.name, backend_name, out, ident, True, current)

    console.step(f"{recipe.name}: preparing the source tree")
    prepared = stack.prepare(recipe, the_lock)  # warns when a PR head moved since locking
    prepare_s = time.monotonic() - started
    stamp = stamp_of(prepared)
    bdir = work_dir(recipe, backend_name)
    entries = cmake.cache_entries(recipe.spec.build, backend, stamp, prepared.tree, bdir, ccache=launcher)
    configure = cmake.configure_command(prepared.tree, bdir, entries, ninja_bin, cmake_bin)
    targets = list(recipe.spec.build.targets)
    ninja_cmd = cmake.build_command(bdir, targets, ninja_bin, jobs)
    env = cmake.build_env(backend, git.commit_time(prepared.tree, prepared.base), paths.cache_root(), ccache=launcher)
    log = bdir / "harness-build.log"
    with atomic.lock(bdir.with_name(bdir.name + ".lock"), timeout=7200):
        bdir.mkdir(parents=True, exist_ok=True)
        log.write_text("")
        t0 = time.monotonic()
        state = bdir / "harness-configure.json"
        if force or not (bdir / "CMakeCache.txt").exists() or not state.exists() or json.loads(state.read_text()) != configure:
            console.step(f"{recipe.name}/{backend_name}: configuring")
            state.unlink(missing_ok=True)
            runner.stream(configure, log_path=log, env=env, append=True)
            atomic.write_json(state, configure)
        configure_s = time.monotonic() - t0
        console.step(f"{recipe.name}/{backend_name}: building {', '.join(targets)}")
        t1 = time.monotonic()
        steps = cmake.run_ninja(ninja_cmd, log, env)
        build_s = time.monotonic() - t1
        manifest = _publish(recipe, the_lock, prepared, backend_name, out, bdir, targets, stamp, {
            "identity": ident, "configure": configure, "build": ninja_cmd, "toolchain": tools, "ninja_steps": steps,
            "log": str(log),
            "timings": {"prepare_s": round(prepare_s, 3), "configure_s": round(configure_s, 3), "build_s": round(build_s, 3)},
        }, started)
    return BuildResult(recipe.name, backend_name, out, ident, False, manifest)


def _publish(
    recipe: Recipe, the_lock: Lock, prepared: Prepared, backend: str, out: Path, bdir: Path,
    targets: list[str], stamp: cmake.Stamp, extra: dict[str, Any], started: float,
) -> dict[str, Any]:
    with atomic.temp_dir_beside(out) as tmp:
        try:
            publish.collect(bdir, prepared.tree, targets, tmp)
        except FileNotFoundError as exc:
            raise StepError(str(exc)) from None
        smoke = publish.smoke(tmp / "bin", targets, stamp.commit)
        failed = [t for t, r in smoke.items() if not r["ok"]]
        if failed:
            details = "\n".join(f"  {t}: exit {smoke[t].get('returncode')}: {smoke[t].get('version') or smoke[t].get('output')}" for t in failed)
            raise StepError(f"smoke test failed, nothing published (the previous build stays):\n{details}")
        manifest = {
            "schema": SCHEMA,
            "identity": extra.pop("identity"),
            "recipe": {"name": recipe.name, "path": str(recipe.path), "sha256": atomic.sha256_file(recipe.path)},
            "lock": {"path": str(recipe.lock_path), "digest": the_lock.digest, **the_lock.to_json()},
            "patched_commit": prepared.commit,
            "stack": [i.to_json() for i in prepared.items],
            "drift": [d.to_json() for d in prepared.drift],
            "backend": {"name": backend, **options_of(recipe, backend)},
            "targets": targets,
            "stamp": {"number": stamp.number, "commit": stamp.commit},
            "cmake": {"configure": extra.pop("configure"), "build": extra.pop("build")},
            **extra,
            "smoke": smoke,
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            "files": publish.file_digests(tmp),
        }
        manifest["timings"]["total_s"] = round(time.monotonic() - started, 3)
        atomic.write_json(tmp / publish.MANIFEST, manifest)
        atomic.replace_dir(tmp, out)
    return manifest
