"""The recipe's published build as the pipeline uses it.

``builds/<recipe>/<backend>/`` holds ``bin/llama-quantize``, ``bin/llama-imatrix`` and,
from the same source tree, ``convert_hf_to_gguf.py`` with ``conversion/`` and ``gguf-py/``.
Its ``manifest.json`` ``identity`` names the build in every sidecar (a root without a
manifest, e.g. hand-made, is named by the sha256 of the tool instead).
"""

from __future__ import annotations

import functools
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from harness import runner
from harness.build import published
from harness.recipe.load import Recipe

QUANTIZE, IMATRIX, PERPLEXITY = "llama-quantize", "llama-imatrix", "llama-perplexity"
CONVERTER = "convert_hf_to_gguf.py"
_MAP_ENTRY = re.compile(r'^\s*"([\w.-]+)"\s*:\s*"[\w.]+"\s*,?\s*$', re.M)
_REGISTER = re.compile(r"@ModelBase\.register\(([^)]*)\)")
_QUOTED = re.compile(r"""["']([\w.-]+)["']""")


@dataclass(frozen=True)
class Build:
    root: Path  # builds/<recipe>/<backend>
    backend: str
    identity: str | None  # manifest.json "identity"; None for a root without a manifest
    python: str | None  # model.python / --python; None: the venv made from the tree's requirements

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
    def perplexity(self) -> Path:
        return self.bin / PERPLEXITY

    @property
    def converter(self) -> Path:
        return self.root / CONVERTER

    def converter_python(self) -> str:
        """The interpreter that runs the converter: the user's, else the venv made from the tree's own
        requirements (made now if need be), else (a build published without them) this one."""
        from harness.pipeline import converter_env

        if self.python:
            return self.python
        env = converter_env.ensure(self.root)
        return env.python if env is not None else sys.executable

    def converter_python_key(self) -> str:
        """What names the converter's interpreter in cache keys, without making its venv."""
        from harness.pipeline import converter_env

        if self.python:
            return self.python
        reqs = converter_env.read_requirements(self.root)
        return f"requirements:{converter_env.requirements_digest(reqs)}" if reqs is not None else sys.executable


def find(recipe: Recipe, *, backend: str | None, builds_dir: Path | None, python: str | None) -> Build:
    """The first backend of the recipe (or ``backend``) with a published llama-quantize."""
    backends = [backend] if backend else list(recipe.spec.build.backends)
    for b in backends:
        root = published.build_root(builds_dir, recipe.name, b)
        if (root / "bin" / QUANTIZE).exists():
            manifest = published.manifest(root)  # none, or another schema: named by the tool's digest
            ident = manifest.identity if manifest else None
            interpreter = python or (recipe.spec.model.python if recipe.spec.model else None)
            return Build(root.absolute(), b, ident if isinstance(ident, str) else None, interpreter)
    raise published.not_built(recipe, QUANTIZE, backend=backend, builds_dir=builds_dir)


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


_OUTPUT_FORMAT = re.compile(r"--output-format\s+\{gguf,dat\}[^\n]*\n?[^\n]*?\(default: (gguf|dat)\)")


def imatrix_format(build: Build) -> str:
    """The format the build's llama-imatrix writes when not told: ``gguf``, or ``dat`` for a pin or
    fork from before GGUF importance matrices (its ``--help`` has no ``--output-format``)."""
    tool = build.imatrix
    return _imatrix_format(tool, tool.stat().st_mtime_ns) if tool.exists() else "gguf"


@functools.cache
def _imatrix_format(tool: Path, mtime_ns: int) -> str:
    res = runner.run([tool, "--help"], check=False, timeout=60)
    return imatrix_format_from_help(res.stdout + res.stderr)


def imatrix_format_from_help(text: str) -> str:
    if "--output-format" not in text:
        return "dat"
    m = _OUTPUT_FORMAT.search(text)
    return m.group(1) if m else "gguf"
