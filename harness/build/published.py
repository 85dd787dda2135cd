"""Where published builds live: ``builds/<recipe>/<backend>/{bin/, manifest.json}``."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import TYPE_CHECKING

from harness.errors import InputError

if TYPE_CHECKING:
    from harness.build.manifest import Manifest
    from harness.recipe.load import Recipe

DEFAULT_BUILDS_DIR = Path("builds")


def root_of(builds_dir: Path | None) -> Path:
    """The directory every published build lives under (``--builds-dir``, else ./builds)."""
    return builds_dir or DEFAULT_BUILDS_DIR


def build_root(builds_dir: Path | None, recipe_name: str, backend: str) -> Path:
    """``<builds dir>/<recipe>/<backend>``; each part one plain path component (see atomic.under)."""
    for part in (recipe_name, backend):
        if part in ("", ".", "..") or "/" in part or "\\" in part or "\0" in part:
            raise InputError(f"{part!r} cannot name a directory under {root_of(builds_dir)}")
    return root_of(builds_dir) / recipe_name / backend


def manifest(root: Path) -> Manifest | None:
    """The published build's manifest; None when there is none or it is not one this harness
    reads (another schema: a build replaces it).  Readers that cannot rebuild use ``read_manifest``."""
    from harness.build import manifest as manifest_mod

    return manifest_mod.read_or_none(root)


def read_manifest(root: Path) -> Manifest | None:
    """The published build's manifest, None when there is none; a ManifestError (a clean message
    naming the file and the rebuild) when it is of another schema or not ours."""
    from harness.build import manifest as manifest_mod

    return manifest_mod.read(root)


def find_tool(recipe: Recipe, tool: str, *, backend: str | None = None, builds_dir: Path | None = None) -> Path:
    """The published ``bin/<tool>`` of the recipe's build (first backend that has one, unless given)."""
    backends = [backend] if backend else list(recipe.spec.build.backends)
    for b in backends:
        candidate = build_root(builds_dir, recipe.name, b) / "bin" / tool
        if candidate.exists():
            return candidate.resolve()
    raise not_built(recipe, tool, backend=backend, builds_dir=builds_dir)


def not_built(recipe: Recipe, tool: str, *, backend: str | None, builds_dir: Path | None) -> InputError:
    """The error for a missing published tool: the absolute place searched (``builds/`` is
    relative to the current directory) and both ways out."""
    where = build_root(builds_dir, recipe.name, backend or recipe.spec.build.backends[0]).absolute()
    build = f"harness build {shlex.quote(str(recipe.path))}" + (f" --backend {backend}" if backend else "")
    if builds_dir is not None:
        build += f" --builds-dir {shlex.quote(str(builds_dir))}"
    hint = f"build it first: {build}"
    if builds_dir is None:
        hint += "; or, if it was built from another directory, pass --builds-dir <that directory>/builds"
    return InputError(f"no {tool} in {where}/bin", hint=hint)
