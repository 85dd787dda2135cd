"""harness build RECIPE [--backend B]...: stamped, manifest-backed llama.cpp binaries."""

from __future__ import annotations

import argparse
from pathlib import Path

from harness import build, console
from harness.recipe import load_recipe


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("build", help="build the recipe's backends into builds/<recipe>/<backend>/")
    p.add_argument("recipe", metavar="RECIPE")
    p.add_argument("--backend", action="append", dest="backends", metavar="B", help="only this backend (repeatable)")
    p.add_argument("--jobs", "-j", type=int, help="parallel compile jobs (ninja's default otherwise)")
    p.add_argument("--force", action="store_true", help="rebuild and republish even when nothing changed")
    p.add_argument("--frozen", action="store_true", help="fail instead of updating a lock that disagrees with the recipe")
    p.add_argument("--no-ccache", action="store_true", help="do not use ccache even when installed")
    p.add_argument("--builds-dir", type=Path, help="where builds/<recipe>/<backend> go (default: ./builds)")
    p.add_argument("--json", action="store_true")


def run(args: argparse.Namespace) -> int:
    recipe = load_recipe(args.recipe)
    results = []
    for backend in args.backends or recipe.spec.build.backends:
        result = build.build(recipe, backend, builds_dir=args.builds_dir, jobs=args.jobs, force=args.force,
                             frozen=args.frozen, ccache=not args.no_ccache)
        m = result.manifest
        results.append({"recipe": result.recipe, "backend": result.backend, "path": str(result.root),
                        "identity": result.identity, "noop": result.noop, "stamp": m.get("stamp"),
                        "timings": m.get("timings"), "patched_commit": m.get("patched_commit")})
        if not args.json:
            what = "up to date" if result.noop else f"built in {m['timings']['total_s']:.1f}s"
            console.out(f"{result.recipe}/{result.backend}: {what} -> {result.root} ({m['stamp']['commit']})")
    if args.json:
        console.emit_json(results)
    return 0
