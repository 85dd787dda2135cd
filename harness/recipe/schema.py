"""The recipe schema (YAML): its sections and their checks.

A recipe pins a llama.cpp upstream, a stack of PRs / fork branches / patches
(harness/recipe/stack_items.py), a build matrix, a model pipeline, serve flags and the
nightly's gates.  ``harness.recipe.load.load_recipe`` validates a file against
``RecipeModel`` and reports every problem at once.
"""

from __future__ import annotations

import difflib
import re
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import AfterValidator, Field, create_model, field_validator, model_validator

from harness import backends
from harness.backends.cpu import CpuOptions
from harness.hosts import parse as parse_endpoint
from harness.recipe.section import Section
from harness.recipe.stack_items import StackItem, Upstream
from harness.smoke import registry as smoke_registry

# a recipe's name is a directory name under builds/ and the cache: one plain path component
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
NAME_RULE = "letters, digits, '.', '_' or '-', starting with a letter or digit, at most 100 characters"


def valid_name(name: str) -> bool:
    return bool(_NAME.match(name))


BACKENDS = tuple(backends.REGISTRY)  # harness/backends/__init__.py: the one list
DEFAULT_TARGETS = ("llama-server", "llama-cli", "llama-quantize", "llama-imatrix", "llama-gguf-split")


# a smoke check's name (harness/smoke/registry.py: the one list)
if TYPE_CHECKING:
    SmokeTest = str
else:
    SmokeTest = Literal[smoke_registry.NAMES]


# List elements are validated one by one (Annotated), so every bad element is reported, each at its line.
def _one_of(kind: str, choices: tuple[str, ...]) -> Any:
    def check(value: str) -> str:
        if value not in choices:
            close = difflib.get_close_matches(value, choices, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ValueError(f"unknown {kind} {value!r}{hint}; one of {', '.join(choices)}")
        return value
    return AfterValidator(check)


def _target(value: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9_.+-]+", value):
        raise ValueError(f"not a CMake target name: {value!r}")
    return value


BackendName = Annotated[str, _one_of("backend", BACKENDS)]
TargetName = Annotated[str, AfterValidator(_target)]


class BuildCommon(Section):
    """The keys of ``build`` every recipe has; ``Build`` adds one section ``build.<name>`` per
    registered backend (its ``options`` model: harness/backends/)."""

    backends: list[BackendName] = Field(default_factory=lambda: ["cpu"])
    cpu: CpuOptions = CpuOptions()  # the CPU code of every backend (harness/build/isa.py), also the cpu backend's own
    targets: list[TargetName] = Field(default_factory=lambda: list(DEFAULT_TARGETS))
    cmake_args: dict[str, str | int | bool] = Field(default_factory=dict)
    build_type: Literal["Release", "RelWithDebInfo", "Debug", "MinSizeRel"] = "Release"
    smoke: list[SmokeTest] = Field(default_factory=lambda: list(smoke_registry.BUILD_DEFAULT))  # checked before publishing
    rpc: bool = False  # GGML_RPC=ON and the rpc-server target (harness/serve/rpc/)
    cache: str | None = None  # a binary cache to pull from before compiling (harness/build/cache/); not in the identity

    @field_validator("backends")
    @classmethod
    def _backends(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("at least one backend")
        twice = sorted({b for b in value if value.count(b) > 1})
        if twice:
            raise ValueError(f"listed twice: {', '.join(twice)}")
        return value

    def options(self, backend: str) -> Any:
        """The section ``build.<backend>``: an instance of that backend's ``options`` model."""
        return getattr(self, backend)


def _with_backend_sections() -> type[BuildCommon]:
    sections: dict[str, Any] = {name: (b.options, b.options()) for name, b in backends.REGISTRY.items()}
    return create_model("Build", __base__=BuildCommon, __module__=__name__, **sections)


# The recipe's ``build``: the common keys and a section per registered backend.  Type checkers see
# the common keys (a backend's section is read through ``options(name)``, typed by the backend).
if TYPE_CHECKING:
    Build = BuildCommon
else:
    Build = _with_backend_sections()


class ModelConvert(Section):
    outtype: Literal["f32", "f16", "bf16", "q8_0", "auto"] = "bf16"
    mtp: Literal["keep", "drop", "separate"] = "keep"
    split_max_size: str | None = Field(default=None, pattern=r"^[1-9][0-9]*[MG]$")  # converter's --split-max-size
    split_max_tensors: int | None = Field(default=None, gt=0)  # converter's --split-max-tensors


class ModelImatrix(Section):
    calibration: str | None = None
    chunks: int = Field(default=100, gt=0)
    ctx: int = Field(default=512, gt=0)
    format: Literal["gguf", "dat"] | None = None  # llama-imatrix --output-format (None: the tool's default)


class ModelQuantize(Section):
    types: list[str] = Field(default_factory=lambda: ["Q4_K_M"])
    mtp_type: str | None = "Q8_0"
    tensor_types: dict[str, str] = Field(default_factory=dict)
    keep_split: bool = False  # llama-quantize --keep-split: a split input gives a split output


def _check_scored(ctx: int, chunks: int) -> None:
    """llama-perplexity prints KL divergence statistics only over 100 scored tokens or more."""
    if chunks * (ctx - 1 - ctx // 2) < 100:
        raise ValueError(f"{chunks} chunk(s) of {ctx} tokens score {chunks * (ctx - 1 - ctx // 2)} tokens; "
                         "llama-perplexity prints no KL divergence statistics for fewer than 100: raise chunks or ctx")


class ModelQuality(Section):
    """The quality step: KL divergence of every quant against the reference (harness.quality.measure)."""

    enabled: bool = True
    chunks: int = Field(default=4, gt=0)  # most chunks of the evaluation text to score
    ctx: int = Field(default=512, ge=16)  # tokens per chunk
    text: str | None = None  # the evaluation text (default: data/evaluation.txt), never the calibration text
    reference: str | None = None  # a quant type of this run (e.g. Q8_0) instead of the converted file
    mtp: bool = True  # with MTP layers: draft acceptance at depth 1 and 3 per quant (harness.quality.mtp_acceptance)
    mtp_min_ratio: float = Field(default=0.5, gt=0, le=1)  # flag a quant accepting less than this x the reference's

    @model_validator(mode="after")
    def _enough_tokens(self) -> ModelQuality:
        _check_scored(self.ctx, self.chunks)
        return self


class ModelSection(Section):
    source: str
    revision: str | None = None
    name: str | None = None
    convert: ModelConvert = ModelConvert()
    imatrix: ModelImatrix | None = None
    quantize: ModelQuantize = ModelQuantize()
    quality: ModelQuality = ModelQuality()
    python: str | None = None  # interpreter that runs convert_hf_to_gguf.py (needs torch, transformers)


def tensor_override_problem(rule: str) -> str | None:
    """Why ``rule`` is not a ``-ot`` rule llama.cpp reads as meant, or None.

    common/arg.cpp (parse_tensor_buffer_overrides) splits the value at ``,`` into rules and
    each rule at its first ``=`` into a tensor-name regex (std::regex, searched) and a buffer
    type name (CPU, CUDA0, Vulkan1, ...): so the regex can hold neither.
    """
    pattern, sep, buffer = rule.partition("=")
    if not sep:
        return "expected REGEX=BUFFER, e.g. 'exps=CPU' or 'mtp\\..*=CUDA0'"
    if "," in rule:
        return "llama.cpp splits -ot values at ',': write one rule per list item, and no ',' in the regex"
    if not pattern:
        return "empty tensor-name regex"
    if "=" in buffer:
        return "more than one '=' (the regex ends at the first one)"
    if not _BUFFER.match(buffer):
        return f"buffer type {buffer!r} is not a buffer name (CPU, CUDA0, Vulkan1, ...)"
    try:
        re.compile(pattern)
    except re.error as exc:
        return f"not a regular expression: {exc}"
    return None


_BUFFER = re.compile(r"^[A-Za-z][\w.:\[\]-]*$")


def _check_override(rule: str) -> str:
    problem = tensor_override_problem(rule)
    if problem:
        shown = f"'{rule}'" if rule.isprintable() else repr(rule)  # a regex as written, backslashes single
        raise ValueError(f"{shown}: {problem}")
    return rule


TensorOverride = Annotated[str, AfterValidator(_check_override)]


class Serve(Section):
    spec_type: str | None = None  # e.g. draft-mtp, ngram-mod; None = no speculation
    draft_n_max: int | None = Field(default=None, gt=0)
    ngl: int | str | None = None
    ctx: int | None = Field(default=None, gt=0)
    tensor_overrides: list[TensorOverride] = Field(default_factory=list)  # -ot REGEX=BUFFER, one per item
    cache_type_k: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_]+$")  # -ctk (checked against the binary)
    cache_type_v: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_]+$")  # -ctv
    n_cpu_moe: int | None = Field(default=None, ge=0)  # --n-cpu-moe N
    args: list[str] = Field(default_factory=list)
    rpc: list[str] = Field(default_factory=list)  # rpc-server endpoints, host:port[@stamp] (harness/hosts.py)

    @field_validator("rpc")
    @classmethod
    def _rpc(cls, value: list[str]) -> list[str]:
        problems = []
        for text in value:
            try:
                parse_endpoint(text)
            except ValueError as exc:
                problems.append(str(exc))
        if problems:
            raise ValueError("; ".join(problems))
        return value


class DraftModel(Section):
    """The draft / assistant model served with ``-md``: a GGUF in a Hugging Face model
    repository (``source`` + ``file``, a name or a glob; ``harness lock`` pins the revision
    and the file names), or a local GGUF file (``source`` a path)."""

    source: str
    file: str | None = None
    revision: str | None = None

    @property
    def is_local(self) -> bool:
        return is_local_path(self.source)

    @model_validator(mode="after")
    def _where(self) -> DraftModel:
        if self.is_local:
            if self.file is not None or self.revision is not None:
                raise ValueError("file and revision apply to a Hugging Face repository, not to a local path")
            if not self.source.endswith(".gguf"):
                raise ValueError(f"source {self.source!r}: a local draft is a .gguf file")
            return self
        if not _REPO_ID.match(self.source):
            raise ValueError(f"source {self.source!r}: neither a Hugging Face repo id (owner/name) nor a path "
                             "(start local paths with ./, ../, / or ~)")
        if self.file is None:
            raise ValueError("a Hugging Face draft needs file: the GGUF's name or a glob, e.g. '*Q8_0.gguf'")
        if not self.file.endswith(".gguf") or self.file.startswith("/") or ".." in self.file.split("/"):
            raise ValueError(f"file {self.file!r}: a .gguf file name or glob inside the repository")
        if self.revision is not None and not self.revision.strip():
            raise ValueError("empty revision")
        return self


_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def is_local_path(source: str) -> bool:
    """A draft source written as a path: ``./x.gguf``, ``/m/x.gguf``, ``~/x.gguf`` or anything ending in ``.gguf``
    (``models/x.gguf``); otherwise it is a Hugging Face repo id (``owner/name``)."""
    return source.startswith((".", "/", "~")) or source.endswith(".gguf")


class GateHubModel(Section):
    """A gate model on the Hugging Face Hub, pinned: a commit of the repository and the file's sha256."""

    source: str  # owner/name
    file: str  # the GGUF's name in the repository
    revision: str = Field(pattern=r"^[0-9a-f]{40}$")  # a commit SHA, never a branch: the gates compare nights
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")

    @model_validator(mode="after")
    def _where(self) -> GateHubModel:
        if not _REPO_ID.match(self.source):
            raise ValueError(f"source {self.source!r}: not a Hugging Face repo id (owner/name)")
        if not self.file.endswith(".gguf") or self.file.startswith("/") or ".." in self.file.split("/"):
            raise ValueError(f"file {self.file!r}: a .gguf file name inside the repository")
        return self


class NightlyGates(Section):
    """Quality a bump must keep (harness.nightly.gates): the gate model quantized and measured with the candidate build."""

    # a local GGUF (relative to the recipe's repository) or a pinned Hub file: the reference the quants are measured against
    model: str | GateHubModel
    types: list[str] = Field(default_factory=lambda: ["Q4_K_M"], min_length=1)
    ctx: int = Field(default=128, ge=16)
    chunks: int = Field(default=2, gt=0)
    text: str | None = None  # default: data/evaluation.txt
    max_kld_increase: float = Field(default=0.005, ge=0)  # nats of mean KLD over the last good night's, per type
    # MTP draft acceptance (depth 1 and 3) may fall by at most this much from the last good night's, per type
    max_mtp_acceptance_drop: float | None = Field(default=None, ge=0, le=1)
    # tokens/s of the candidate over the last good build's (paired rounds): refused only when the whole
    # interval lies below this ratio
    min_tokens_per_s_ratio: float | None = Field(default=None, gt=0, le=1)
    speed_rounds: int = Field(default=3, ge=2, le=20)  # rounds of the tokens/s comparison, old and new build alternating

    @model_validator(mode="after")
    def _enough_tokens(self) -> NightlyGates:
        _check_scored(self.ctx, self.chunks)
        return self


class Nightly(Section):
    gates: NightlyGates | None = None
    skip_conflicts: bool = False
    smoke: list[SmokeTest] = Field(default_factory=lambda: list(smoke_registry.NIGHTLY_DEFAULT))
    backends: list[BackendName] | None = None
    bisect_steps: int = Field(default=8, ge=0)  # a failed night bisects upstream for the culprit (0: never)


class RecipeModel(Section):
    name: str | None = None
    description: str | None = None
    upstream: Upstream = Upstream()
    stack: list[StackItem] = Field(default_factory=list)
    build: Build = Build()
    model: ModelSection | None = None
    draft: DraftModel | None = None  # the draft / assistant model for -md (serve, bench, pipeline)
    serve: Serve = Serve()
    nightly: Nightly = Nightly()

    @field_validator("name")
    @classmethod
    def _name(cls, value: str | None) -> str | None:
        if value is not None and not _NAME.match(value):
            raise ValueError(f"name {value!r} must be {NAME_RULE}")
        return value


