"""harness verify RECIPE [--backend B]: rebuild elsewhere and compare every artifact with the manifest."""

from __future__ import annotations

import argparse
from pathlib import Path

from harness import console


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("verify", help="check a published build is reproducible (exit 1 if not)")
    p.add_argument("recipe", metavar="RECIPE")
    p.add_argument("--backend", default="cpu")
    p.add_argument("--jobs", "-j", type=int)
    p.add_argument("--ccache", action="store_true", help="allow ccache (faster, proves less)")
    p.add_argument("--keep", action="store_true", help="keep the scratch build for inspection (until the next verify)")
    p.add_argument("--builds-dir", type=Path)
    p.add_argument("--json", action="store_true")


def run(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from harness.build import verify
    from harness.recipe.load import load_recipe

    recipe = load_recipe(args.recipe)
    verdict = verify.verify(recipe, args.backend, builds_dir=args.builds_dir, jobs=args.jobs, ccache=args.ccache, keep=args.keep)
    if args.json:
        console.emit_json({"ok": verdict.identical, **asdict(verdict)})
    elif verdict.identical:
        console.out(f"reproducible: {verdict.compared} files identical to the published manifest")
    else:
        console.out(f"NOT reproducible: {len(verdict.differing)} differ, {len(verdict.missing)} missing, {len(verdict.extra)} extra")
        for f in verdict.differing:
            console.out(f"  differs: {f}")
        for f in verdict.missing:
            console.out(f"  missing: {f}")
        for f in verdict.extra:
            console.out(f"  extra:   {f}")
    return 0 if verdict.identical else 1
