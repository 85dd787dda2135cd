"""harness build RECIPE [--backend B]...: stamped, manifest-backed llama.cpp binaries, proven by a decode."""

from __future__ import annotations

import argparse
from pathlib import Path

from harness import build, console
from harness.errors import InputError
from harness.recipe import SMOKE_TESTS, load_recipe


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("build", help="build the recipe's backends into builds/<recipe>/<backend>/")
    p.add_argument("recipe", metavar="RECIPE")
    p.add_argument("--backend", action="append", dest="backends", metavar="B", help="only this backend (repeatable)")
    p.add_argument("--jobs", "-j", type=int, help="parallel compile jobs (ninja's default otherwise)")
    p.add_argument("--force", action="store_true", help="rebuild and republish even when nothing changed")
    p.add_argument("--frozen", action="store_true", help="fail instead of updating a lock that disagrees with the recipe")
    p.add_argument("--no-ccache", action="store_true", help="do not use ccache even when installed")
    p.add_argument("--builds-dir", type=Path, help="where builds/<recipe>/<backend> go (default: ./builds)")
    p.add_argument("--smoke", metavar="LIST",
                   help=f"smoke checks before publishing, comma-separated from {','.join(SMOKE_TESTS)} "
                        "(default: the recipe's build.smoke, version,decode)")
    p.add_argument("--smoke-model", type=Path, help="GGUF for the quantize/serve checks (default: SmolLM2-135M from PyPI)")
    p.add_argument("--strict", action="store_true",
                   help="when the decode smoke crashes, fail instead of rebuilding without the extension at fault")
    p.add_argument("--dry-run", action="store_true", help="print the plan (lock, stack, CPU policy, commands); run nothing")
    p.add_argument("--json", action="store_true")


def _checks(value: str | None) -> list[str] | None:
    if value is None:
        return None
    checks = [c.strip() for c in value.split(",") if c.strip()]
    unknown = [c for c in checks if c not in SMOKE_TESTS]
    if unknown:
        raise InputError(f"--smoke: unknown check {', '.join(map(repr, unknown))}; one of {', '.join(SMOKE_TESTS)}")
    return checks


def run(args: argparse.Namespace) -> int:
    recipe = load_recipe(args.recipe)
    checks = _checks(args.smoke)
    wanted = args.backends or recipe.spec.build.backends
    if args.dry_run:
        from harness import build_plan

        plans = [build_plan.dry_run(recipe, b, builds_dir=args.builds_dir, checks=checks, jobs=args.jobs,
                                    ccache=not args.no_ccache) for b in wanted]
        if args.json:
            console.emit_json(plans)
        else:
            for p in plans:
                for line in build_plan.describe(p):
                    console.out(line)
        return 0
    results = []
    for backend in wanted:
        result = build.build(recipe, backend, builds_dir=args.builds_dir, jobs=args.jobs, force=args.force,
                             frozen=args.frozen, ccache=not args.no_ccache, checks=checks,
                             smoke_model=args.smoke_model, strict=args.strict)
        m = result.manifest
        isa = m.get("isa", {})
        results.append({"recipe": result.recipe, "backend": result.backend, "path": str(result.root),
                        "identity": result.identity, "noop": result.noop, "stamp": m.get("stamp"),
                        "timings": m.get("timings"), "patched_commit": m.get("patched_commit"),
                        "isa": {k: isa.get(k) for k in ("variant", "enabled", "disabled", "fallbacks", "ggml_features")}})
        if not args.json:
            what = "up to date" if result.noop else f"built in {m['timings']['total_s']:.1f}s"
            console.out(f"{result.recipe}/{result.backend}: {what} -> {result.root} ({m['stamp']['commit']})")
            for ext, why in isa.get("disabled", {}).items():
                console.out(f"  cpu: without {ext}: {why}")
    if args.json:
        console.emit_json(results)
    return 0
