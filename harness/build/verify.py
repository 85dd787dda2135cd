"""Rebuild a published build from scratch at another path and compare every artifact's sha256."""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path

from harness import atomic, backends, console, paths, runner
from harness.build import cmake, disk, isa, isa_audit, publish, published, toolchain
from harness.build import stamp as stamp_mod
from harness.errors import InputError
from harness.recipe.load import Recipe
from harness.source import git, locking, stack
from harness.source.tree import Tree


@dataclass(frozen=True)
class Verdict:
    identical: bool
    compared: int
    differing: list[str]
    missing: list[str]
    extra: list[str]


def verify(recipe: Recipe, backend_name: str, *, builds_dir: Path | None = None, jobs: int | None = None,
           ccache: bool = False, keep: bool = False) -> Verdict:
    out = published.build_root(builds_dir, recipe.name, backend_name)
    on_disk = published.read_manifest(out)  # another schema: a clean message
    if on_disk is None:
        raise InputError(f"no published build at {out}", hint=f"run: harness build {shlex.quote(str(recipe.path))} --backend {backend_name}")
    backend = backends.get(backend_name)
    the_lock = locking.ensure(recipe, frozen=True)
    prepared = stack.prepare(recipe, the_lock, check_remote=False)
    if prepared.commit != on_disk.patched_commit:
        raise InputError(f"{out} was built from {on_disk.patched_commit[:12]}, the lock now gives {prepared.commit[:12]}: build it again first")
    stamp = cmake.Stamp(on_disk.stamp.number, on_disk.stamp.commit)
    # a temp name of atomic's: a scratch left by a killed verify is removed by the next one
    beside = paths.cache_dir("verify") / f"{recipe.name}-{backend_name}"
    atomic.sweep(beside)
    disk.check(disk.for_verify(recipe, the_lock, backend_name, out, beside))
    scratch = atomic.make_temp_dir_beside(beside)
    try:
        src, bdir, dest = scratch / "src", scratch / "build", scratch / "out"  # ../src, as in real builds
        git.worktree_add(Tree.for_recipe(recipe).src, src, prepared.commit)
        # Rebuild the way the published build was made: ccache rewrites and normalizes paths
        # (-I dir/.. becomes dir), which shows in __FILE__, so a build made under ccache is
        # compared with one made under ccache.  Unless --ccache, CCACHE_RECACHE makes it
        # compile every object again instead of reading the cache.
        used_ccache = any(a.startswith("-DCMAKE_C_COMPILER_LAUNCHER=") for a in on_disk.cmake.configure)
        launcher = cmake.ccache_program() if (ccache or used_ccache) else None
        if used_ccache and launcher is None:
            raise InputError(f"{out} was built with ccache, which is not installed here: install it to verify")
        plan = isa.from_manifest(on_disk.isa, toolchain.compiler())
        configured = stamp_mod.for_cmake(stamp, src)
        entries = cmake.cache_entries(recipe.spec.build, backend, configured, src, bdir, ccache=launcher, isa=plan)
        cmake_bin, ninja_bin = cmake.program("cmake"), cmake.program("ninja")
        env = cmake.build_env(backend, git.commit_time(src, prepared.base), paths.cache_root(), ccache=launcher)
        if launcher and not ccache:
            env["CCACHE_RECACHE"] = "1"
        log = scratch / "verify.log"
        how = "ccache hits allowed" if ccache else ("every object recompiled" + (" (ccache, recache)" if launcher else ""))
        console.step(f"verify: rebuilding {recipe.name}/{backend_name} in {scratch}, {how}")
        runner.stream(cmake.configure_command(src, bdir, entries, ninja_bin, cmake_bin), log_path=log, env=env)
        targets = list(on_disk.targets)
        late = on_disk.stamp.late  # the stamp made the way the published build made it (harness/build/stamp.py)
        stamp_mod.ninja(cmake.build_command(bdir, targets, ninja_bin, jobs), log, env, bdir, stamp, configured, late_ok=late)
        publish.collect(bdir, src, targets, dest)
        if late and stamp_mod.late(stamp, configured):
            stamp_mod.finish(dest / "bin", stamp)
        publish.drop_cpu_variants(dest / "bin", isa_audit.dropped_variants(plan, src))
        fresh = publish.file_digests(dest)
    finally:
        git.worktree_remove(Tree.for_recipe(recipe).src, scratch / "src")
        if not keep:
            atomic.remove_tree(scratch, root=paths.cache_root())
    old = {f: d for f, d in on_disk.files.items() if f not in on_disk.bundled}
    differing = sorted(f for f in old.keys() & fresh.keys() if old[f] != fresh[f])
    missing = sorted(old.keys() - fresh.keys())
    extra = sorted(fresh.keys() - old.keys())
    return Verdict(not (differing or missing or extra), len(old.keys() & fresh.keys()), differing, missing, extra)
