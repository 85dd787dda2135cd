"""harness lock RECIPE [--update] [--check]: pin every ref to a full SHA, every patch to a sha256."""

from __future__ import annotations

import argparse

from harness import console

DESCRIPTION = """\
Resolve the recipe's refs (upstream branch or tag, PR heads, branches) to full commit SHAs and its
patches to sha256 digests, and write them to RECIPE.lock beside the recipe (commit it). Pins already
in the lock are kept unless --update; every move is printed as old -> new. Only ref names are asked
of the remotes (git ls-remote). A `retired` mark (an item nightly found merged upstream) is
re-verified against the base: one that no longer holds is dropped, so the item is built again."""

EXAMPLE = """\
example:
  harness lock recipes/demo.yaml            # pin what is new, keep the rest
  harness lock recipes/demo.yaml --update   # move every floating ref to where it points now
  harness lock recipes/demo.yaml --check    # in CI: exit 1 when recipe and lock disagree"""


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("lock", help="resolve refs to SHAs and write RECIPE.lock", description=DESCRIPTION,
                       epilog=EXAMPLE, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("recipe", metavar="RECIPE")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--update", action="store_true", help="re-resolve floating refs (shows old -> new)")
    mode.add_argument("--check", action="store_true",
                      help="exit 1 when recipe and lock disagree (URL patches are downloaded again and compared; "
                      "retired marks are re-verified against the base)")
    p.add_argument("--json", action="store_true")


def run(args: argparse.Namespace) -> int:
    import shlex

    from harness.recipe.load import load_recipe
    from harness.source import lock, locking, stack

    recipe = load_recipe(args.recipe)
    existing = lock.read(recipe.lock_path)
    command = f"harness lock {shlex.quote(str(recipe.path))}"
    if args.check:
        problems = ["no lock file"] if existing is None else locking.check(recipe, existing, remote=True)
        if existing is not None:
            problems += [stack.stale_problem(existing, *s) for s in stack.stale_retired(recipe, existing)]
        step = (f"run `{command}` to bring the lock in line with the recipe (pins of unchanged items are kept; "
                "retired marks are re-verified)") if problems else None
        if args.json:
            console.emit_json({"lock": str(recipe.lock_path), "ok": not problems, "problems": problems, "next": step})
        elif problems:
            console.error(f"{recipe.lock_path} disagrees with {recipe.path}:")
            for problem in problems:
                console.info(f"  {problem}")
            console.info(f"next: {step}")
        else:
            console.out(f"{recipe.lock_path}: up to date")
        return 1 if problems else 0
    new, moves = locking.resolve(recipe, existing, update=args.update)
    stale = stack.stale_retired(recipe, new)  # marks the base no longer bears out are dropped
    dropped = [stack.stale_problem(new, *s) for s in stale]
    if stale:
        gone = {n for n, _, _ in stale}
        new = new.replace(stack=tuple(i.replace(retired=None) if n in gone else i for n, i in enumerate(new.items, start=1)))
    changed = existing is None or new.to_json() != existing.to_json()
    if changed:
        lock.write(recipe.lock_path, new)
    if args.json:
        console.emit_json({"lock": str(recipe.lock_path), "changed": changed, "moves": [vars(m) for m in moves],
                           "dropped_retired": dropped, **new.to_json()})
        return 0
    for move in moves:
        console.out(str(move))
    for line in dropped:
        console.out(f"{line}: mark dropped")
    console.out(f"{recipe.lock_path}: {'written' if changed else 'unchanged'}")
    return 0
