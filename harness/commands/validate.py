"""harness validate RECIPE...: check recipes; every problem at once as FILE:LINE: key.path: message."""

from __future__ import annotations

import argparse

from harness import console
from harness.errors import InputError
from harness.recipe import load_recipe


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("validate", help="check recipes (exit 2 on any problem)")
    p.add_argument("recipes", nargs="+", metavar="RECIPE")
    p.add_argument("--json", action="store_true", help="machine-readable result")


def run(args: argparse.Namespace) -> int:
    results = []
    failed = False
    for path in args.recipes:
        try:
            recipe = load_recipe(path)
        except InputError as exc:
            failed = True
            results.append({"recipe": path, "ok": False, "problems": str(exc).splitlines()})
            if not args.json:
                console.err_console().print(str(exc), highlight=False, markup=False)
            continue
        results.append({"recipe": path, "ok": True, "name": recipe.name, "problems": []})
        if not args.json:
            console.out(f"{path}: ok ({recipe.name}: {len(recipe.spec.stack)} stack item(s), backends {', '.join(recipe.spec.build.backends)})")
    if args.json:
        console.emit_json(results)
    return 2 if failed else 0
