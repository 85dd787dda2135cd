"""harness patches export RECIPE: write a resolved conflict back as a patch and update recipe and lock."""

from __future__ import annotations

import argparse

from harness import console


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("patches", help="manage the recipe's patches")
    verbs = p.add_subparsers(dest="patches_command", required=True, metavar="ACTION")
    e = verbs.add_parser("export", help="turn the resolved conflict tree into patches/<name>.patch")
    e.add_argument("recipe", metavar="RECIPE")
    e.add_argument("--json", action="store_true")


def run(args: argparse.Namespace) -> int:
    from harness.recipe.load import load_recipe
    from harness.source.patch_export import export_conflict

    recipe = load_recipe(args.recipe)
    done = export_conflict(recipe)
    if args.json:
        console.emit_json({"patch": str(done.patch), "replaced": done.replaced, "index": done.index, "lock_moves": done.moves})
    else:
        moved = f": {'; '.join(done.moves)}" if done.moves else ""
        console.out(f"wrote {done.patch}; stack[{done.index}] ({done.replaced}) now uses it; lock updated{moved}")
    return 0
