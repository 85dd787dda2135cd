"""harness build RECIPE [--backend B]...: stamped, manifest-backed llama.cpp binaries."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness import console

if TYPE_CHECKING:
    from harness.recipe import Recipe


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
    from harness import uptodate

    # the no-op fast path: nothing the last build depended on changed (see harness/uptodate.py)
    record_key = uptodate.key(args.recipe, args.backends, args.builds_dir, ccache=not args.no_ccache)
    if not args.force and (done := uptodate.check(record_key)) is not None:
        return _report(done, as_json=args.json)
    from harness import build
    from harness.recipe import load_recipe

    recipe_path = Path(args.recipe).resolve()
    files = uptodate.digests([recipe_path])  # before parsing: an edit from now on is a miss next time
    recipe = load_recipe(recipe_path)
    files.update(uptodate.digests([recipe.lock_path, *_patch_files(recipe)]))
    before = uptodate.inputs(files, ccache=not args.no_ccache)
    results = []
    for backend in args.backends or recipe.spec.build.backends:
        result = build.build(recipe, backend, builds_dir=args.builds_dir, jobs=args.jobs, force=args.force,
                             frozen=args.frozen, ccache=not args.no_ccache)
        m = result.manifest
        results.append({"recipe": result.recipe, "backend": result.backend, "path": str(result.root),
                        "identity": result.identity, "noop": result.noop, "stamp": m.get("stamp"),
                        "timings": m.get("timings"), "patched_commit": m.get("patched_commit")})
    uptodate.record(record_key, before, results)
    return _report(results, as_json=args.json)


def _report(results: list[dict[str, Any]], *, as_json: bool) -> int:
    if as_json:
        console.emit_json(results)
        return 0
    for r in results:
        what = "up to date" if r["noop"] else f"built in {r['timings']['total_s']:.1f}s"
        console.out(f"{r['recipe']}/{r['backend']}: {what} -> {r['path']} ({r['stamp']['commit']})")
    return 0


def _patch_files(recipe: Recipe) -> list[Path]:
    """Both places a local patch may be found (recipe.py's ``_local``): a file appearing at the
    first one would shadow the second."""
    rels = [i.patch for i in recipe.spec.stack if i.patch and "://" not in i.patch]
    return [p for rel in rels for p in (recipe.path.parent / rel, recipe.root / rel)]
