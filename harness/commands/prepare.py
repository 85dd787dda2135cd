"""harness prepare RECIPE: the patched source tree for a recipe's lock."""

from __future__ import annotations

import argparse

from harness import console

DESCRIPTION = """\
Fetch the lock's commits into the shared mirrors and apply the stack onto the upstream base in the
recipe's tree: PRs and branches squash-merged, commits cherry-picked, patches applied as `git am -3`
would, each committed with a fixed identity and date, so the same lock gives the same patched commit
everywhere. Items upstream already has are skipped as already-merged. The first conflict stops with
exit 1, naming the item, each file and hunk, and keeps the conflicted worktree for
`harness patches export`. The lock is written first when missing or behind the recipe (not with --frozen)."""

EXAMPLE = """\
example:
  harness prepare recipes/demo.yaml                   # print each item's status and the tree
  harness prepare recipes/demo.yaml --frozen --json   # in CI: the lock must match the recipe"""


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("prepare", help="fetch and apply the stack; print the patched tree", description=DESCRIPTION,
                       epilog=EXAMPLE, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("recipe", metavar="RECIPE")
    p.add_argument("--frozen", action="store_true", help="fail instead of updating a lock that disagrees with the recipe, "
                   "or whose retired mark the base no longer bears out")
    p.add_argument("--offline", action="store_true", help="do not ask remotes whether PR heads moved")
    p.add_argument("--skip-conflicts", action="store_true", help="leave out items that conflict instead of stopping")
    p.add_argument("--json", action="store_true")


def run(args: argparse.Namespace) -> int:
    from harness.build import disk
    from harness.recipe.load import load_recipe
    from harness.source import locking, stack

    recipe = load_recipe(args.recipe)
    the_lock = locking.ensure(recipe, frozen=args.frozen, fetch=True)
    disk.check(disk.for_prepare(recipe, the_lock))
    # a conflict is a ConflictError: with --json, the CLI prints it with the report under error.conflict
    prepared = stack.prepare(recipe, the_lock, check_remote=not args.offline, skip_conflicts=args.skip_conflicts,
                             frozen=args.frozen)
    if args.json:
        console.emit_json({"status": "ok", **prepared.to_json()})
        return 0
    for item in prepared.items:
        console.out(f"  {item.status:15} {item.kind} {item.ref}" + (f"  ({item.detail})" if item.detail else ""))
    console.out(f"tree:   {prepared.tree}")
    console.out(f"commit: {prepared.commit}" + ("  (cached)" if prepared.cached else ""))
    return 0
