"""harness lock RECIPE [--update] [--check]: pin every ref to a full SHA, every patch to a sha256."""

from __future__ import annotations

import argparse

from harness import console


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("lock", help="resolve refs to SHAs and write RECIPE.lock")
    p.add_argument("recipe", metavar="RECIPE")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--update", action="store_true", help="re-resolve floating refs (shows old -> new)")
    mode.add_argument("--check", action="store_true",
                      help="exit 1 when recipe and lock disagree (URL patches are downloaded again and compared)")
    p.add_argument("--json", action="store_true")


def run(args: argparse.Namespace) -> int:
    from harness import lock
    from harness.recipe import load_recipe

    recipe = load_recipe(args.recipe)
    existing = lock.read(recipe.lock_path)
    if args.check:
        problems = ["no lock file"] if existing is None else lock.check(recipe, existing, remote=True)
        if args.json:
            console.emit_json({"lock": str(recipe.lock_path), "ok": not problems, "problems": problems})
        elif problems:
            console.error(f"{recipe.lock_path} disagrees with {recipe.path}:")
            for problem in problems:
                console.info(f"  {problem}")
        else:
            console.out(f"{recipe.lock_path}: up to date")
        return 1 if problems else 0
    new, moves = lock.resolve(recipe, existing, update=args.update)
    changed = existing is None or new.to_json() != existing.to_json()
    if changed:
        lock.write(recipe.lock_path, new)
    if args.json:
        console.emit_json({"lock": str(recipe.lock_path), "changed": changed, "moves": [vars(m) for m in moves], **new.to_json()})
        return 0
    for move in moves:
        console.out(str(move))
    console.out(f"{recipe.lock_path}: {'written' if changed else 'unchanged'}")
    return 0
