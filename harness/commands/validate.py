"""harness validate RECIPE...: check recipes; every problem at once as FILE:LINE: key.path: message."""

from __future__ import annotations

import argparse
from typing import Any

from harness import console
from harness.errors import InputError, Problem


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("validate", help="check recipes (exit 2 on any problem)")
    p.add_argument("recipes", nargs="+", metavar="RECIPE")
    p.add_argument("--json", action="store_true", help="machine-readable result")


def run(args: argparse.Namespace) -> int:
    """Every recipe is checked; the problems of all of them make one InputError (exit 2)."""
    from harness.recipe.load import load_recipe

    results: list[dict[str, Any]] = []
    problems: list[Problem] = []
    for path in args.recipes:
        try:
            recipe = load_recipe(path)
        except InputError as exc:
            found = [Problem(**p) for p in exc.details.get("problems", [])] or [
                Problem(exc.file or str(path), exc.line, exc.key, exc.message)
            ]
            problems.extend(found)
            results.append({"recipe": path, "ok": False, "problems": [str(p) for p in found]})
            continue
        results.append({"recipe": path, "ok": True, "name": recipe.name, "problems": []})
        if not args.json:
            console.out(f"{path}: ok ({recipe.name}: {len(recipe.spec.stack)} stack item(s), backends {', '.join(recipe.spec.build.backends)})")
    if problems:
        error = InputError.of(problems)
        error.details["recipes"] = results
        raise error
    if args.json:
        console.emit_json(results)
    return 0
