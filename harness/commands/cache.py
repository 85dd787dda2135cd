"""harness cache ls RECIPE [--cache URL]: what a binary cache holds for a recipe."""

from __future__ import annotations

import argparse

from harness import console


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("cache", help="the binary cache of builds (harness build --cache/--push)")
    verbs = p.add_subparsers(dest="cache_command", required=True, metavar="ACTION")
    ls = verbs.add_parser("ls", help="list the builds a cache holds for the recipe")
    ls.add_argument("recipe", metavar="RECIPE")
    ls.add_argument("--cache", metavar="URL", help="default: $HARNESS_BUILD_CACHE, else the recipe's build.cache")
    ls.add_argument("--json", action="store_true")


def run(args: argparse.Namespace) -> int:
    from harness.build import cache
    from harness.errors import InputError
    from harness.recipe.load import load_recipe

    recipe = load_recipe(args.recipe)
    url = cache.configured(args.cache, recipe.spec.build.cache)
    if url is None:
        raise InputError("no cache: give --cache URL, set $HARNESS_BUILD_CACHE, or set build.cache in the recipe",
                         key="--cache")
    entries = cache.open_cache(url).list(recipe.name)
    if args.json:
        console.emit_json([e.to_json() for e in entries])
        return 0
    if not entries:
        console.out(f"{url}: nothing for {recipe.name}")
    for e in entries:
        a = e.annotations
        size = f"{e.size / 1e6:.1f} MB" if e.size is not None else "?"
        console.out(f"{e.backend:6} {e.key[:12]}  {console.literal(str(a.get('stamp', '?')))}  "
                    f"{a.get('isa_variant', '?')}  {size}  {a.get('created', '?')}")
    return 0
