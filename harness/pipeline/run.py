"""Run the pipeline for a recipe: preflight, then each step in order, under one lock.

The model directory's lock (``<out>/.lock``) keeps two runs from writing the same files;
the second waits and then finds everything up to date.  Temp files a killed run left
behind are removed first.  Nothing is downloaded or converted before the preflight passed.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness import atomic, console
from harness.gguf_files import gguf_py
from harness.pipeline import cache, plan, preflight, qtypes, source, tools
from harness.pipeline.plan import Context, Options, Outcome
from harness.pipeline.steps import STEPS
from harness.recipe.load import Recipe, load_recipe
from harness.recipe.stack_items import SHA40


@dataclass(frozen=True)
class Report:
    name: str
    out: Path
    source: str
    revision: str | None
    build: str
    estimate: dict[str, Any]
    outcomes: list[Outcome]

    @property
    def did_nothing(self) -> bool:
        return all(o.skipped for o in self.outcomes)

    def to_json(self) -> dict[str, Any]:
        from harness.pipeline import summary

        return {
            "model": self.name,
            "out": str(self.out),
            "source": self.source,
            "revision": self.revision,
            "build": self.build,
            "did_nothing": self.did_nothing,
            "disk_estimate": self.estimate,
            "steps": [o.to_json() for o in self.outcomes],
            "summary": summary.rows(self.outcomes),
        }


def pipeline(options: Options, *, free_space: preflight.FreeSpace = preflight.free_space) -> Report:
    recipe = load_recipe(options.recipe)
    section = plan.effective_section(recipe, options)
    src = source.parse(section.source)
    name = plan.model_name(section, src)
    out = (options.out or plan.DEFAULT_MODELS_DIR / name).absolute()
    build = tools.find(recipe, backend=options.backend, builds_dir=options.builds_dir, python=section.python)
    if (build.root / "gguf-py" / gguf_py.CONSTANTS).is_file():
        gguf_py.use_build(build.root)  # the tree's own weight types and MTP architectures
    out.mkdir(parents=True, exist_ok=True)
    with _exclusive(out):
        for stale in cache.remove_stale_temps(out):
            console.info(f"removed {stale.name}, left by an interrupted run")
        ctx = Context(recipe, section, src, name, out, build, options, cache.Digests(out / cache.DIGESTS))
        if options.until == "quantize":
            ctx.type_bpw = tools.quant_types(build)
            ctx.types = qtypes.check(section.quantize.types, ctx.type_bpw, what="model.quantize.types")
            if not ctx.types:
                raise_no_types(recipe)
        ctx.use_imatrix = options.until == "imatrix" or section.imatrix is not None or any(
            qtypes.needs_imatrix(t) for t in ctx.types
        )
        if ctx.use_imatrix and section.imatrix is None and options.until == "quantize":
            console.info(f"{', '.join(t for t in ctx.types if qtypes.needs_imatrix(t))} need an importance matrix: "
                         f"computing one from {ctx.calibration()}")  # fmt: skip
        if not src.is_local:
            ctx.revision = revision_for(recipe, section.source, section.revision)
        estimate = preflight.run(ctx, free_space)
        for step_name, step in STEPS.items():
            if ctx.wants(step_name):
                ctx.outcomes += step().run(ctx)
        ctx.digests.save()
    return Report(name, out, section.source, ctx.revision, f"{build.root} ({build.identity or 'no manifest'})",
                  estimate.to_json(), ctx.outcomes)  # fmt: skip


@contextlib.contextmanager
def _exclusive(out: Path) -> Iterator[None]:
    """Hold the model directory's lock (a wait says which run holds it)."""
    with atomic.lock(out / ".lock"):
        yield


def revision_for(recipe: Recipe, repo: str, revision: str | None) -> str | None:
    """The lock's revision for ``repo``, else the recipe's SHA, else what the Hub says now."""
    locked = source.locked_revision(recipe, repo)
    if locked is not None:
        if revision is not None and SHA40.match(revision) and revision != locked:
            console.warn(f"model.revision {revision[:12]} differs from the lock's {locked[:12]}: using the recipe's")
            return revision
        return locked
    return source.resolve_revision(repo, revision)


def raise_no_types(recipe: Recipe) -> None:
    from harness.errors import InputError

    raise InputError(f"{recipe.path}: model.quantize.types is empty", hint="name a type, e.g. --type Q4_K_M")
