"""One run of the pipeline: its options, and the context every step reads and extends.

The effective ``model:`` section is the recipe's, with ``--model`` replacing the source
(a recipe without a ``model:`` section takes every default) and ``--type`` the quant types.
Outputs are named after the model: ``<name>-<OUTTYPE>.gguf`` (converted),
``mtp-<name>-<OUTTYPE>.gguf`` (the MTP head with ``convert.mtp: separate``),
``<name>.imatrix.gguf``, ``<name>-<TYPE>.gguf`` (quants) and ``mtp-<name>-<MTP_TYPE>.gguf``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.errors import InputError
from harness.pipeline import checkpoint, tools
from harness.pipeline.cache import Digests
from harness.pipeline.source import Source
from harness.recipe.load import Recipe
from harness.recipe.schema import ModelImatrix, ModelSection

STEP_ORDER = ("download", "convert", "imatrix", "quantize", "quality", "draft")
DEFAULT_MODELS_DIR = Path("models")
DEFAULT_CALIBRATION = "data/calibration.txt"
DEFAULT_EVALUATION = "data/evaluation.txt"
_SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass(frozen=True)
class Options:
    recipe: Path
    until: str = "quantize"  # the last step to run: convert | imatrix | quantize
    model: str | None = None  # --model: replaces model.source
    revision: str | None = None  # --revision: replaces model.revision
    out: Path | None = None  # --out: instead of models/<name>
    backend: str | None = None
    builds_dir: Path | None = None
    python: str | None = None  # --python: replaces model.python
    types: tuple[str, ...] = ()  # --type: replaces model.quantize.types
    force: bool = False


@dataclass(frozen=True)
class Outcome:
    step: str
    label: str
    output: Path
    skipped: bool
    seconds: float
    sidecar: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {"step": self.step, "label": self.label, "output": str(self.output), "skipped": self.skipped,
                "seconds": round(self.seconds, 3), "sidecar": self.sidecar}  # fmt: skip


@dataclass
class Context:
    recipe: Recipe
    section: ModelSection
    source: Source
    name: str
    out: Path
    build: tools.Build
    options: Options
    digests: Digests
    revision: str | None = None  # the commit to download (hub sources)
    hf_dir: Path | None = None  # the checkpoint directory (after download)
    checkpoint: checkpoint.Checkpoint | None = None
    trunk_layers: int = 1  # config.json num_hidden_layers (disk estimates)
    remote_files: list[str] | None = None  # what the download will hold (the preflight's dry run)
    converted: Path | None = None
    mtp_head: Path | None = None
    imatrix: Path | None = None
    types: list[str] = field(default_factory=list)
    type_bpw: dict[str, float | None] = field(default_factory=dict)  # llama-quantize --help's table
    use_imatrix: bool = False
    outcomes: list[Outcome] = field(default_factory=list)

    @property
    def force(self) -> bool:
        return self.options.force

    def wants(self, step: str) -> bool:
        if step == "imatrix":
            return self.use_imatrix and STEP_ORDER.index(self.options.until) >= STEP_ORDER.index("imatrix")
        if step == "quality":  # KL divergence of the quants: a whole run only, unless the recipe turns it off
            return self.options.until == "quantize" and self.section.quality.enabled
        if step == "draft":  # the recipe's draft model, checked against the quants: a whole run only
            return self.options.until == "quantize" and self.recipe.spec.draft is not None
        return STEP_ORDER.index(step) <= STEP_ORDER.index(self.options.until)

    # -- output names ---------------------------------------------------------------------

    @property
    def outtype_label(self) -> str:
        return self.section.convert.outtype.upper() if self.section.convert.outtype != "auto" else "auto"

    def converted_path(self) -> Path:
        return self.out / f"{self.name}-{self.outtype_label}.gguf"

    def mtp_head_path(self) -> Path:
        return self.out / f"mtp-{self.name}-{self.outtype_label}.gguf"

    def imatrix_path(self) -> Path:
        """``<name>.imatrix.gguf``, or ``.dat`` for the legacy format: asked for, or what the build's
        llama-imatrix writes by default (an older pin or fork)."""
        imx = self.section.imatrix
        fmt = imx.format if imx is not None and imx.format else tools.imatrix_format(self.build) if self.use_imatrix else "gguf"
        return self.out / f"{self.name}.imatrix.{fmt}"

    def quant_path(self, qtype: str) -> Path:
        return self.out / f"{self.name}-{qtype}.gguf"

    def mtp_quant_path(self, qtype: str) -> Path:
        return self.out / f"mtp-{self.name}-{qtype}.gguf"

    @property
    def hf_download_dir(self) -> Path:
        return self.out / "hf"

    @property
    def log_dir(self) -> Path:
        return self.out / "logs"

    def calibration(self) -> Path:
        imx = self.section.imatrix or ModelImatrix()
        return calibration_path(self.recipe, imx.calibration)

    def evaluation(self) -> Path:
        return text_path(self.recipe, self.section.quality.text, DEFAULT_EVALUATION, "model.quality.text")

    def kld_base_path(self) -> Path:
        return self.out / f"{self.name}.kld-base.bin"

    def kld_path(self, qtype: str) -> Path:
        return self.out / f"{self.name}-{qtype}.kld.json"

    def quality_png(self) -> Path:
        return self.out / f"{self.name}.quality.png"


def effective_section(recipe: Recipe, options: Options) -> ModelSection:
    section = recipe.spec.model
    if section is None:
        if options.model is None:
            raise InputError(
                f"{recipe.path}: no model: section",
                hint="add model: {source: <repo-or-dir>} to the recipe, or pass --model SRC",
            )
        section = ModelSection(source=options.model)
    updates: dict[str, Any] = {}
    if options.model is not None and options.model != section.source:
        updates.update(source=options.model, revision=None, name=None)
    if options.revision is not None:
        updates["revision"] = options.revision
    if options.python is not None:
        updates["python"] = options.python
    if options.types:
        updates["quantize"] = section.quantize.model_copy(update={"types": list(options.types)})
    return section.model_copy(update=updates) if updates else section


def model_name(section: ModelSection, source: Source) -> str:
    name = section.name or source.default_name
    name = _SAFE_NAME.sub("-", name).strip("-.")
    if not name:
        raise InputError(f"cannot derive a file name from model source {section.source!r}; set model.name")
    return name


def calibration_path(recipe: Recipe, rel: str | None) -> Path:
    """The calibration text: the recipe's, else data/calibration.txt of its repository or of this checkout."""
    return text_path(recipe, rel, DEFAULT_CALIBRATION, "model.imatrix.calibration")


def local_file(recipe: Recipe, rel: str, key: str) -> Path:
    """A file the recipe names under ``key``, relative to the recipe: an InputError naming ``key`` unless it is one."""
    try:
        path = recipe.resolve_local(rel)
    except ValueError as exc:
        raise InputError(f"{key}: {exc}") from None
    if not path.is_file():
        raise InputError(f"{key}: no such file: {rel}")
    return path


def text_path(recipe: Recipe, rel: str | None, default: str, key: str) -> Path:
    """A text the recipe names (``key``), else ``default`` of its repository or of this checkout."""
    if rel is not None:
        return local_file(recipe, rel, key)
    for base in (recipe.root, Path(__file__).resolve().parents[2]):
        candidate = base / default
        if candidate.is_file():
            return candidate
    raise InputError(f"no text at {default}", hint=f"set {key} in the recipe")
