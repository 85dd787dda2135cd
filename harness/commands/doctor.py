"""harness doctor: which backends this machine can build, what is missing and how to get it."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from harness import console


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("doctor", help="check the toolchains for each backend, or what one recipe needs")
    p.add_argument("recipe", nargs="?", metavar="RECIPE",
                   help="check only what this recipe needs (exit 1 when something required is missing)")  # fmt: skip
    p.add_argument("--builds-dir", type=Path, default=None, metavar="D",
                   help="where builds/<recipe>/<backend> are (default: ./builds): the converter's pins come from there")  # fmt: skip
    p.add_argument("--json", action="store_true")


def run(args: argparse.Namespace) -> int:
    if args.recipe:
        return _recipe(args.recipe, as_json=args.json, builds_dir=args.builds_dir)
    import shutil

    from harness import backends
    from harness.build import cmake
    from harness.errors import InputError

    common: dict[str, str | None] = {}
    for name in ("cmake", "ninja"):
        try:
            common[name] = cmake.program(name)
        except InputError:
            common[name] = None
    for name in ("cc", "c++", "git", "ccache"):
        common[name] = shutil.which(name)
    report: list[dict[str, Any]] = []
    for name, backend in backends.REGISTRY.items():
        det = backend.detect()
        base_missing = [n for n in ("cmake", "ninja", "cc", "c++", "git") if not common[n]]
        report.append({
            "backend": name,
            "available": det.available and not base_missing,
            "found": det.found,
            "missing": base_missing + [f"{t.program} ({t.purpose}): {t.install}" for t in det.missing],
            "notes": det.notes,
        })
    cpu = _cpu()
    if args.json:
        console.emit_json({"common": common, "cpu": cpu, "backends": report})
        return 0
    for name, path in common.items():
        console.out(f"{name:8} {path or 'MISSING'}" + ("  (optional: caches compiles, C/C++/CUDA)" if name == "ccache" else ""))
    console.out("")
    console.out(f"cpu      {cpu['model']} ({cpu['arch']}), compiler {cpu['compiler']}")
    console.out(f"         extensions: {', '.join(cpu['extensions']) or '-'}")
    for variant, plan in cpu["policy"].items():
        console.out(f"         {variant}: uses {', '.join(plan['enabled']) or 'baseline only'}")
        for ext, why in plan["disabled"].items():
            console.out(f"           without {ext}: {why}")
    console.out("")
    for entry in report:
        mark = "yes" if entry["available"] else "no "
        console.out(f"{mark}  {entry['backend']}")
        for k, v in entry["found"].items():
            console.out(f"       found {k}: {v}")
        for m in entry["missing"]:
            console.out(f"       missing {m}")
        for n in entry["notes"]:
            console.out(f"       {n}")
    return 0


def _cpu() -> dict[str, Any]:
    """This CPU, its extensions, and what each CPU variant would use and exclude here (harness/build/isa.py)."""
    from harness.build import isa, toolchain
    from harness.recipe.schema import Build

    compiler = toolchain.compiler()
    cpu = isa.detect_cpu()
    policy = {v: isa.plan(Build.model_validate({"cpu": {"variant": v}}), compiler, cpu).to_json() for v in isa.VARIANTS}
    return {"model": cpu.model, "arch": cpu.arch, "flags": sorted(cpu.flags), "extensions": sorted(cpu.extensions),
            "compiler": str(compiler),
            "policy": {v: {"enabled": p["enabled"], "disabled": p["disabled"], "cmake": p["cmake"], "cflags": p["cflags"]}
                       for v, p in policy.items()}}


def _recipe(path: str, *, as_json: bool, builds_dir: Path | None = None) -> int:
    """``harness doctor RECIPE``: the checks of harness/build/needs.py; exit 1 when a required one failed."""
    from dataclasses import asdict

    from harness.build import needs
    from harness.recipe.load import load_recipe

    recipe = load_recipe(path)
    checks = needs.check(recipe, builds_dir=builds_dir)
    ok = all(c.ok for c in checks if c.required)
    if as_json:
        console.emit_json({"recipe": str(recipe.path), "ok": ok, "checks": [asdict(c) for c in checks]})
    else:
        for c in checks:
            mark = "ok  " if c.ok else ("MISSING" if c.required else "warn")
            console.out(f"{mark:8}{c.what:22}{c.detail}")
        console.out(f"{recipe.name}: " + ("ready" if ok else "something required is missing"))
    return 0 if ok else 1
