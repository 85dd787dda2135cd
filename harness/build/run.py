"""Locked recipe -> builds/<recipe>/<backend>/: one CMake+Ninja build per backend.

The identity of a build is a digest of everything that goes into it (lock, backend and
options, the CPU instruction-set policy, targets, CMake arguments, toolchain versions, smoke
checks).  When the published build has that identity, nothing runs.  Source and build
directories live in the cache per (recipe, backend, options) and are moved to each new
patched commit, so only what changed is recompiled.  The result is assembled beside the
published one and swapped in only after the smoke checks passed (by default ``--version``
and a real decode, harness/smoke/): a failed or interrupted build leaves the previous good
build.

A decode that crashes (SIGILL at the first matmul, say) is answered by rebuilding without
the instruction-set extension at fault (harness/build/isa.py: ``next_exclusion``), said on the
console, recorded in the manifest and remembered for this CPU and compiler; ``strict``
refuses instead.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from harness import atomic, backends, console, faults, lifetime, paths, runner, smoke
from harness.build import cmake, disk, isa, isa_audit, publish, published, toolchain
from harness.build import manifest as manifest_mod
from harness.build import stamp as stamp_mod
from harness.build.cache import Transport
from harness.build.cache import pull as cache_pull
from harness.build.manifest import CacheKey, Manifest
from harness.errors import InputError, StepError
from harness.recipe.load import Recipe
from harness.serve.rpc import build as rpc_build
from harness.smoke.decode import DecodeCrash
from harness.smoke.results import DecodeResult
from harness.source import git, locking, stack
from harness.source.lock import Lock
from harness.source.stack import Prepared
from harness.source.tree import Tree

SCHEMA = 3  # 3: the CPU instruction-set policy and the decode smoke (2: ccache namespace)


@dataclass(frozen=True)
class BuildResult:
    recipe: str
    backend: str
    root: Path
    identity: str
    noop: bool
    manifest: Manifest


def _digest(data: Any) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()


def options_of(recipe: Recipe, backend: str) -> dict[str, Any]:
    b = recipe.spec.build
    own = getattr(b, backend).model_dump()
    return {"backend": backend, "options": own, "cpu": b.cpu.model_dump(), "cmake_args": dict(b.cmake_args),
            "build_type": b.build_type, "schema": SCHEMA, **({"rpc": True} if b.rpc else {})}


def identity(the_lock: Lock, recipe: Recipe, backend: str, tools: dict[str, str], *, ccache: str | None,
             plan: isa.Plan) -> str:
    """Everything that goes into a build, paths aside: a change to any of it means a new build.

    The smoke checks are not part of it: a published build is current when it has this
    identity *and* passed every check asked for now (see ``_current``)."""
    # the CMake entries this harness version computes, with placeholder paths and stamp
    flags = cmake.cache_entries(recipe.spec.build, backends.get(backend), cmake.Stamp(0, "-"), Path("/src"),
                                Path("/build"), ccache="ccache" if ccache else None, isa=plan)
    return _digest({
        "schema": SCHEMA,
        "lock": the_lock.digest,
        **options_of(recipe, backend),
        "targets": sorted(recipe.spec.build.targets),
        "toolchain": tools,
        "flags": flags,
        "isa": plan.identity(),
    })


def cache_key(the_lock: Lock, recipe: Recipe, backend: str, tools: dict[str, str], plan: isa.Plan) -> CacheKey:
    """What makes this build the same build on any machine (harness/build/manifest.py says what and why)."""
    flags = cmake.cache_entries(recipe.spec.build, backends.get(backend), cmake.Stamp(0, "-"), Path("/src"),
                                Path("/build"), ccache=None, isa=plan)
    options = {k: v for k, v in options_of(recipe, backend).items() if k != "schema"}
    ident = plan.identity()
    if plan.variant == "native":  # -march=native: the code depends on every feature of the CPU it was compiled on
        ident.pop("cpu", None)
        ident["features"] = sorted(plan.cpu.flags or plan.cpu.extensions)
    gpu: dict[str, Any] = {}
    if backend == "cuda":
        gpu = {"cuda_archs": flags.get("CMAKE_CUDA_ARCHITECTURES", "native"),
               "cuda_major": manifest_mod.cuda_major(tools.get("nvcc", ""))}
    return CacheKey(lock=the_lock.digest, backend=backend, options=options,
                    targets=sorted(recipe.spec.build.targets), cmake=flags, isa=ident, gpu=gpu, toolchain=tools)


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


def _check_toolchain(backend: backends.Backend, recipe: Recipe) -> None:
    """Refuse before anything is fetched or configured when this machine lacks the backend's
    toolchain (what ``harness doctor`` reports), instead of CMake's own error half-way."""
    det = backend.detect()
    if det.available:
        return
    # what is missing is the reason; notes (no GPU seen...) only where nothing is named missing
    why = [f"{t.program} ({t.purpose}) not found: {t.install}" for t in det.missing] or det.notes
    raise InputError(f"{recipe.name}: this machine cannot build the {backend.name} backend: "
                     + ("; ".join(why) or "its toolchain is missing"),
                     hint=f"harness doctor {recipe.path} says what each backend needs; "
                          f"harness build {recipe.path} --backend {backend.name} --dry-run shows the plan without it")


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
    checks: Sequence[str] | None = None,
    smoke_model: Path | None = None,
    strict: bool = False,
    cache: Transport | None = None,
    push: bool = False,
) -> BuildResult:
    """Build one backend; ``lock_override`` and ``out`` let nightly build a candidate lock elsewhere.

    ``checks``: the smoke checks to pass before publishing (default: the recipe's
    ``build.smoke``); ``smoke_model`` the real model of the quantize/serve checks.  With a
    ``cache``, the build is pulled from it and proven here when it has this key (see
    harness/build/cache/pull.py), and ``push`` stores a proven build there.
    """
    started = time.monotonic()
    backend = backends.get(backend_name)
    on_disk = published.manifest(out or published.build_root(builds_dir, recipe.name, backend_name))
    if on_disk is None:  # nothing to be up to date with: refuse before locking or fetching
        _check_toolchain(backend, recipe)
    the_lock = lock_override or locking.ensure(recipe, frozen=frozen, fetch=True)
    cmake_bin, ninja_bin = cmake.program("cmake"), cmake.program("ninja")
    tools = {**toolchain.versions(cmake_bin, ninja_bin), **backend.toolchain()}
    launcher = cmake.ccache_program() if ccache else None
    plan = isa.plan(recipe.spec.build, toolchain.compiler())
    checks = rpc_build.smoke_checks(recipe.spec.build, list(checks if checks is not None else recipe.spec.build.smoke))
    ident = identity(the_lock, recipe, backend_name, tools, ccache=launcher, plan=plan)
    out = out or published.build_root(builds_dir, recipe.name, backend_name)
    atomic.sweep(atomic.under(out, published.root_of(builds_dir)))  # what a killed build left beside it
    current = published.manifest(out)
    if not force and current and _current(current, ident, checks, out):
        if push and cache is not None:
            _push(cache, out, backend_name)
        return BuildResult(recipe.name, backend_name, out, ident, True, current)
    if cache is not None and not force:
        key = cache_key(the_lock, recipe, backend_name, tools, plan)
        with atomic.lock(cache_pull.lock_path(out), timeout=3600):
            current = published.manifest(out)  # another process may have pulled it meanwhile
            if current and _current(current, ident, checks, out):
                return BuildResult(recipe.name, backend_name, out, ident, True, current)
            pulled = cache_pull.pull(cache, key, recipe=recipe.name, backend=backend_name, out=out,
                                     root=published.root_of(builds_dir), ident=ident, checks=checks, smoke_model=smoke_model)
        if pulled is not None:
            return BuildResult(recipe.name, backend_name, out, ident, False, pulled)

    if on_disk is not None:
        _check_toolchain(backend, recipe)
    bdir = work_dir(recipe, backend_name)
    cmake.check_paths(bdir)  # the source tree is its sibling
    disk.check(disk.for_build(recipe, the_lock, backend_name, out, bdir))
    console.step(f"{recipe.name}: preparing the source tree")
    prepared = stack.prepare(recipe, the_lock, frozen=frozen)  # warns when a PR head moved since locking
    prepare_s = time.monotonic() - started
    stamp = stamp_of(prepared)
    configured = stamp_mod.for_cmake(stamp, prepared.tree)  # stable across patch edits: see harness/build/stamp.py
    if configured == stamp and stamp.number and (why := stamp_mod.support(prepared.tree)):
        console.info(f"{recipe.name}: the stamp goes whole through CMake ({why}): a patch edit recompiles "
                     "libllama and ggml")
    targets = rpc_build.targets(recipe.spec.build, prepared.tree)
    ninja_cmd = cmake.build_command(bdir, targets, ninja_bin, jobs)
    env = cmake.build_env(backend, git.commit_time(prepared.tree, prepared.base), paths.cache_root(), ccache=launcher)
    log = bdir / "harness-build.log"
    fallbacks: list[dict[str, Any]] = []
    with atomic.lock(bdir.with_name(bdir.name + ".lock"), timeout=7200):
        lifetime.wait_for_writers(bdir, what=f"{recipe.name}/{backend_name}")  # a killed build's compiles
        bdir.mkdir(parents=True, exist_ok=True)
        log.write_text("")
        while True:
            entries = cmake.cache_entries(recipe.spec.build, backend, configured, prepared.tree, bdir, ccache=launcher,
                                          isa=plan)
            configure = cmake.configure_command(prepared.tree, bdir, entries, ninja_bin, cmake_bin)
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
            stamp_mod.settle_index(prepared.tree, bdir)  # a new patched commit alone does not re-run CMake
            steps = stamp_mod.ninja(ninja_cmd, log, env, bdir, stamp, configured, late_ok=True)  # _publish finishes it
            build_s = time.monotonic() - t1
            try:
                manifest = _publish(recipe, the_lock, prepared, backend_name, out, published.root_of(builds_dir), bdir,
                                    targets, stamp, plan, checks, smoke_model, None if force else current, {
                    "identity": ident, "key": cache_key(the_lock, recipe, backend_name, tools, plan), "configure": configure, "build": ninja_cmd, "toolchain": tools,
                    "ninja_steps": steps, "log": str(log), "isa_fallbacks": fallbacks,
                    "timings": {"prepare_s": round(prepare_s, 3), "configure_s": round(configure_s, 3),
                                "build_s": round(build_s, 3)},
                }, started)
            except DecodeCrash as crash:
                plan = _fall_back(crash, plan, prepared.tree, strict, fallbacks)
                ident = identity(the_lock, recipe, backend_name, tools, ccache=launcher, plan=plan)
                continue
            except OSError as exc:  # a full disk the preflight did not foresee, say
                raise StepError(f"cannot publish {out}: {exc.strerror or exc}" + (f": {exc.filename}" if exc.filename else ""),
                                hint="nothing was published (the previous build stays)") from None
            break
    if push and cache is not None:
        _push(cache, out, backend_name)
    return BuildResult(recipe.name, backend_name, out, ident, False, manifest)


def _push(cache: Transport, out: Path, backend: str) -> None:
    """Store the published (proven) build at ``out`` in ``cache``: a StepError when that fails
    (the build stays published)."""
    console.step(f"{out}: pushing to {cache.url}")
    key = cache_pull.push(cache, out, bundle_cuda=backend == "cuda")
    console.info(f"pushed {key[:12]} to {cache.url}")


def _current(manifest: Manifest, ident: str, checks: Sequence[str], out: Path) -> bool:
    """The published build is this identity, passed every check asked for, and is all there."""
    return (manifest.identity == ident and set(checks) <= manifest.smoke.names()
            and all((out / f).exists() for f in manifest.files))


def _fall_back(crash: DecodeCrash, plan: isa.Plan, tree: Path, strict: bool, fallbacks: list[dict[str, Any]]) -> isa.Plan:
    """The plan without the extension the crash points at; a StepError when there is none or ``strict``."""
    variant_features = isa_audit.cpu_variants(tree).get(crash.variant or "", []) if crash.variant else []
    ext = isa.next_exclusion(plan, repack_only=crash.no_repack_ok is True, variant_features=variant_features)
    where = f"this CPU ({plan.cpu.model}), {plan.compiler}, variant {plan.variant}"
    if crash.crash.returncode == -signal.SIGABRT:  # abort(): the code's own check (GGML_ASSERT), not the CPU
        crash.hint = ("nothing was published (the previous build stays): an abort is a failed assert in the code, "
                      "not an instruction this CPU refused, so no extension is excluded; see the log")
        raise crash
    if ext is None:
        crash.hint = (f"nothing was published (the previous build stays): {where} uses no extension left to "
                      f"exclude ({', '.join(plan.enabled) or 'none'}); try build.cpu.variant: portable, "
                      "or report the crash upstream")
        raise crash
    path = "the repacked-weight path (llama-server --no-repack avoids it)" if crash.no_repack_ok else "its CPU kernels"
    why = f"{crash.details['signal']} decoding {crash.qtype} ({crash.placement}) in {path}"
    if strict:
        crash.hint = (f"nothing was published (the previous build stays); likely cause: {ext} code miscompiled or "
                      f"unsupported on {where}.  --strict: not rebuilding; set build.cpu.disable: [{ext}], or "
                      "build without --strict to rebuild without it automatically")
        raise crash
    console.warn(f"decode smoke: {why}; rebuilding without {ext} (recorded in the manifest, remembered for {where})")
    isa.learn(plan.cpu, plan.compiler, plan.variant, ext, why)
    fallbacks.append({"disabled": ext, "why": why, "details": {k: v for k, v in crash.details.items() if k != "log"},
                      "date": datetime.now(UTC).isoformat(timespec="seconds")})
    return plan.without(ext, f"learned: {why}")


def _publish(
    recipe: Recipe, the_lock: Lock, prepared: Prepared, backend: str, out: Path, root: Path, bdir: Path,
    targets: list[str], stamp: cmake.Stamp, plan: isa.Plan, checks: Sequence[str], smoke_model: Path | None,
    previous: Manifest | None, extra: dict[str, Any], started: float,
) -> Manifest:
    """Collect, prove and publish.  ``previous``: the build published at ``out`` before (None with
    --force), whose decode proof lets the decode check narrow to one type (harness/smoke/decode.py)."""
    out = atomic.under(out, root)  # the recipe name may not lead out of the builds dir
    t0 = time.monotonic()
    with atomic.temp_dir_beside(out) as tmp:
        try:
            publish.collect(bdir, prepared.tree, targets, tmp)
        except FileNotFoundError as exc:
            raise StepError(str(exc)) from None
        faults.point("build:collected")
        dropped = publish.drop_cpu_variants(tmp / "bin", isa_audit.dropped_variants(plan, prepared.tree))
        late = stamp_mod.late(stamp, stamp_mod.for_cmake(stamp, prepared.tree))
        if late:
            stamp_mod.finish(tmp / "bin", stamp)  # the stamp's digest over its placeholder (harness/build/stamp.py)
        work = bdir / "harness-smoke"
        atomic.remove_tree(work, root=bdir)
        collect_s = time.monotonic() - t0
        ctx = smoke.Context(bin_dir=tmp / "bin", backend=backend, targets=targets, stamp=stamp.commit, work=work,
                            model=smoke_model, proven=previous.smoke.decode if previous else None)
        try:
            results = smoke.run(checks, ctx)
        except smoke.SmokeFailure as exc:
            if not isinstance(exc, DecodeCrash):
                exc.hint = f"nothing was published (the previous build stays); logs in {work}"
            if exc.check == "version" and (why := stamp_mod.support(prepared.tree)):
                exc.hint = f"{exc.hint}; the stamp cannot reach --version in this tree: {why}"
            raise
        decode = results.decode if isinstance(results.decode, DecodeResult) else None
        features = decode.features.get("CPU") if decode else None
        disagree = isa_audit.mismatch(plan, features)
        if disagree:
            console.warn(f"{recipe.name}/{backend}: ggml's feature line disagrees with the CPU policy: "
                         + "; ".join(f"{k}: {', '.join(v)}" for k, v in disagree.items())
                         + (f" ({plan.notes[-1]})" if plan.notes else ""))
        key = extra.pop("key")
        timings = extra.pop("timings")
        timings["collect_s"] = round(collect_s, 3)
        timings.update({f"smoke_{name}_s": s for name, s in ctx.seconds.items()})
        t1 = time.monotonic()
        files = publish.file_digests(tmp)
        timings["digests_s"] = round(time.monotonic() - t1, 3)
        timings["total_s"] = round(time.monotonic() - started, 3)  # the swap into place below not counted
        manifest = Manifest(
            identity=extra.pop("identity"), key=key, key_digest=key.digest,
            recipe=manifest_mod.RecipeRef(name=recipe.name, path=str(recipe.path), sha256=atomic.sha256_file(recipe.path)),
            lock={"path": str(recipe.lock_path), "digest": the_lock.digest, **the_lock.to_json()},
            patched_commit=prepared.commit,
            stack=[i.to_json() for i in prepared.items],
            drift=[d.to_json() for d in prepared.drift],
            backend={"name": backend, **options_of(recipe, backend)},
            targets=targets,
            rpc=manifest_mod.Rpc(**rpc) if (rpc := rpc_build.manifest_entry(recipe.spec.build, prepared.tree)) else None,
            stamp=manifest_mod.Stamp(number=stamp.number, commit=stamp.commit, late=late),
            cmake=manifest_mod.Commands(configure=extra.pop("configure"), build=extra.pop("build")),
            isa={**plan.to_json(), "dropped_variants": dropped, "fallbacks": extra.pop("isa_fallbacks"),
                 "ggml_features": features, "mismatch": disagree, "cpu_variant_loaded": decode.cpu_variant if decode else None},
            toolchain=extra.pop("toolchain"), ninja_steps=extra.pop("ninja_steps"), log=extra.pop("log"),
            timings=timings, smoke=results, origin=manifest_mod.Origin(how="built", built_on=os.uname().nodename),
            created=datetime.now(UTC).isoformat(timespec="seconds"),
            files=files,
        )
        manifest.write(tmp)
        atomic.replace_dir(tmp, out, root=root)
        atomic.remove_tree(work, root=bdir)
    return manifest
