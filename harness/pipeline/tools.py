"""The recipe's published build as the pipeline uses it.

``builds/<recipe>/<backend>/`` holds ``bin/llama-quantize``, ``bin/llama-imatrix`` and,
from the same source tree, ``convert_hf_to_gguf.py`` with ``conversion/`` and ``gguf-py/``.
Its ``manifest.json`` ``identity`` names the build in every sidecar (a root without a
manifest, e.g. hand-made, is named by the sha256 of the tool instead).
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from pathlib import Path

from harness import builds, runner
from harness.recipe import Recipe

QUANTIZE, IMATRIX = "llama-quantize", "llama-imatrix"
CONVERTER = "convert_hf_to_gguf.py"
_MAP_ENTRY = re.compile(r'^\s*"([\w.-]+)"\s*:\s*"[\w.]+"\s*,?\s*$', re.M)
_REGISTER = re.compile(r"@ModelBase\.register\(([^)]*)\)")
_QUOTED = re.compile(r"""["']([\w.-]+)["']""")


@dataclass(frozen=True)
class Build:
    root: Path  # builds/<recipe>/<backend>
    backend: str
    identity: str | None  # manifest.json "identity"; None for a root without a manifest
    python: str  # the interpreter that runs the converter

    @property
    def bin(self) -> Path:
        return self.root / "bin"

    @property
    def quantize(self) -> Path:
        return self.bin / QUANTIZE

    @property
    def imatrix(self) -> Path:
        return self.bin / IMATRIX

    @property
    def converter(self) -> Path:
        return self.root / CONVERTER


def find(recipe: Recipe, *, backend: str | None, builds_dir: Path | None, python: str | None) -> Build:
    """The first backend of the recipe (or ``backend``) with a published llama-quantize."""
    backends = [backend] if backend else list(recipe.spec.build.backends)
    for b in backends:
        root = builds.build_root(builds_dir, recipe.name, b)
        if (root / "bin" / QUANTIZE).exists():
            manifest = builds.manifest(root)  # none, or another schema: named by the tool's digest
            ident = manifest.identity if manifest else None
            interpreter = python or (recipe.spec.model.python if recipe.spec.model else None) or sys.executable
            return Build(root.absolute(), b, ident if isinstance(ident, str) else None, interpreter)
    raise builds.not_built(recipe, QUANTIZE, backend=backend, builds_dir=builds_dir)


def missing(build: Build, *, convert: bool, imatrix: bool) -> list[str]:
    """What the steps about to run need but the build lacks."""
    need = [build.quantize]
    if imatrix:
        need.append(build.imatrix)
    if convert:
        need += [build.converter, build.root / "conversion", build.root / "gguf-py"]
    return [str(p) for p in need if not p.exists()]


def supported_architectures(build: Build) -> set[str]:
    """HF architecture names this tree's converter registers (``TEXT_MODEL_MAP`` or decorators)."""
    names: set[str] = set()
    package = build.root / "conversion" / "__init__.py"
    if package.exists():
        text = package.read_text(encoding="utf-8", errors="replace")
        start = text.find("TEXT_MODEL_MAP")
        end = text.find("}", start)
        if start >= 0 and end > start:
            names.update(_MAP_ENTRY.findall(text[start:end]))
    sources = [build.converter, *sorted((build.root / "conversion").glob("*.py"))]
    for src in sources:
        if src.exists():
            for args in _REGISTER.findall(src.read_text(encoding="utf-8", errors="replace")):
                names.update(_QUOTED.findall(args))
    return names


def quant_types(build: Build) -> dict[str, float | None]:
    """The types ``llama-quantize --help`` lists as allowed, with the bits per weight it states."""
    from harness.pipeline import qtypes

    res = runner.run([build.quantize, "--help"], check=False, timeout=60)
    return qtypes.parse_help(res.stdout + res.stderr)


def identity(build: Build, digest_of_tool: str) -> str:
    """The build's manifest identity, or one made from the tool's digest."""
    return build.identity or f"sha256:{digest_of_tool}"
