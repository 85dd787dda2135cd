"""``harness build --dry-run``: what a build would do, computed without running it.

The lock as it stands (nothing is resolved or fetched), the stack, the CPU instruction-set
policy, the exact configure and build commands, the smoke checks and where the result would
go.  It works for any backend on any machine, its toolchain present or not, so a CUDA plan
can be read on a laptop; detection probes (``cc --version``, ``nvidia-smi``) are the only
programs it runs.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from harness import backends
from harness.build import cmake, isa, published, toolchain
from harness.build import run as build
from harness.build import stamp as stamp_mod
from harness.errors import InputError
from harness.recipe.load import Recipe
from harness.serve.rpc import build as rpc_build
from harness.source import lock, locking
from harness.source.tree import Tree


def _program(name: str) -> str:
    try:
        return cmake.program(name)
    except InputError:
        return name


def dry_run(recipe: Recipe, backend_name: str, *, builds_dir: Path | None, checks: Sequence[str] | None,
            jobs: int | None = None, ccache: bool = True, frozen: bool = False) -> dict[str, Any]:
    """The plan (see the module doc).  A lock that disagrees with the recipe (an edited patch, a
    new item) is shown as it stands, with ``lock.stale`` saying why; with ``frozen`` it is an
    InputError (exit 2), as the real build would give."""
    backend = backends.get(backend_name)
    the_lock = lock.read(recipe.lock_path)
    stale = locking.check(recipe, the_lock) if the_lock is not None else []
    if frozen and (the_lock is None or stale):
        raise locking.frozen_error(recipe, stale if the_lock is not None else None)  # the real build's error
    plan = isa.plan(recipe.spec.build, toolchain.compiler())
    tree = Tree.for_recipe(recipe)
    bdir = build.work_dir(recipe, backend_name)
    if the_lock is not None:
        active = [i for i in the_lock.items if not (i.retired or i.skipped)]
        short = the_lock.base_sha[:7]
        stamp = cmake.Stamp(len(active), f"{short}+stack.{the_lock.digest[:8]}" if active else short)
        stack: list[dict[str, Any]] = [{"item": i.label(), "pin": i.pin, **({"retired": i.retired} if i.retired else {}),
                  **({"skipped": i.skipped} if i.skipped else {})} for i in the_lock.items]
        locked: dict[str, Any] | None = {"path": str(recipe.lock_path), "base": the_lock.base_sha,
                                         "digest": the_lock.digest, "stale": stale}
    else:
        stamp = cmake.Stamp(len(recipe.spec.stack), "<base>+stack.<lock digest>" if recipe.spec.stack else "<base>")
        stack = [{"item": item.label(recipe.spec.upstream.repo), "pin": None} for item in recipe.spec.stack]
        locked = None
    launcher = cmake.ccache_program() if ccache else None
    configured = stamp_mod.for_cmake(stamp, tree.src) if tree.src.exists() else stamp
    entries = cmake.cache_entries(recipe.spec.build, backend, configured, tree.src, bdir, ccache=launcher, isa=plan)
    ninja = _program("ninja")
    src = tree.src if tree.src.exists() else None  # the tree of an earlier prepare, if any
    targets = rpc_build.targets(recipe.spec.build, src)
    det = backend.detect()
    return {
        "recipe": recipe.name,
        "backend": backend_name,
        "lock": locked,
        "stack": stack,
        "stamp": {"number": stamp.number, "commit": stamp.commit},
        "isa": plan.to_json(),
        "configure": cmake.configure_command(tree.src, bdir, entries, ninja, _program("cmake")),
        "build": cmake.build_command(bdir, targets, ninja, jobs),
        "smoke": rpc_build.smoke_checks(recipe.spec.build, list(checks if checks is not None else recipe.spec.build.smoke)),
        "rpc": ({"server": rpc_build.server_target(src), "cmake": rpc_build.cache_entries(recipe.spec.build),
                 "protocol": rpc_build.protocol(src) if src else None} if recipe.spec.build.rpc else None),
        "out": str(published.build_root(builds_dir, recipe.name, backend_name)),
        "toolchain": {"available": det.available, "missing": [f"{t.program}: {t.install}" for t in det.missing]},
    }


def describe(p: dict[str, Any]) -> list[str]:
    """The plan for people: one screen per backend."""
    import shlex

    isa_ = p["isa"]
    lines = [f"{p['recipe']}/{p['backend']} -> {p['out']}"]
    lines.append(f"  lock:      {p['lock']['path'] + ' (base ' + p['lock']['base'][:12] + ')' if p['lock'] else 'none yet: harness build resolves and writes it first'}")
    for problem in (p["lock"] or {}).get("stale", []):
        lines.append(f"  stale:     {problem} (harness build relocks first: the pins and stamp below are the lock's)")
    for s in p["stack"]:
        lines.append(f"  stack:     {s['item']}" + (f" @ {s['pin'][:12]}" if s.get("pin") else "")
                     + (" (retired)" if s.get("retired") else "") + (" (skipped)" if s.get("skipped") else ""))
    lines.append(f"  stamp:     build {p['stamp']['number']}, commit {p['stamp']['commit']}"
                 + (" if every item applies (one git finds already merged at prepare is not counted; none applied: "
                    f"build 0, commit {p['lock']['base'][:7]})" if p["stamp"]["number"] and p["lock"] else ""))
    lines.append(f"  cpu:       {isa_['variant']} on {isa_['cpu']} ({isa_['arch']}), {isa_['compiler']}")
    lines.append(f"  uses:      {', '.join(isa_['enabled']) or '-'}")
    for ext, why in isa_["disabled"].items():
        lines.append(f"  excluded:  {ext}: {why}")
    for note in isa_["notes"]:
        lines.append(f"  note:      {note}")
    lines.append(f"  configure: {shlex.join(p['configure'])}")
    lines.append(f"  build:     {shlex.join(p['build'])}")
    if p.get("rpc"):
        rpc = p["rpc"]
        lines.append(f"  rpc:       {' '.join(f'-D{k}={v}' for k, v in rpc['cmake'].items())}, target {rpc['server']}"
                     + (f", wire protocol {rpc['protocol']}" if rpc["protocol"] else ""))
    lines.append(f"  smoke:     {', '.join(p['smoke'])}")
    if not p["toolchain"]["available"]:
        lines.append(f"  toolchain: missing here: {'; '.join(p['toolchain']['missing']) or 'see harness doctor'}")
    return lines
