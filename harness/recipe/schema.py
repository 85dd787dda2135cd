"""The recipe schema (YAML) and its loader.

A recipe pins a llama.cpp upstream, a stack of PRs / fork branches / patches, a build
matrix, a model pipeline and serve flags.  ``load_recipe`` reports every problem at
once as ``FILE:LINE: key.path: message`` (exit code 2), with "did you mean" for
unknown keys.
"""

from __future__ import annotations

import difflib
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    create_model,
    field_validator,
    model_validator,
)

from harness import backends, console, journal
from harness.backends.cpu import CpuOptions
from harness.errors import InputError, Problem
from harness.hosts import parse as parse_endpoint
from harness.recipe import yamlpos
from harness.recipe.yamlpos import KeyPath
from harness.smoke import registry as smoke_registry

SHA40 = re.compile(r"^[0-9a-f]{40}$")
SHA256 = re.compile(r"^[0-9a-f]{64}$")
_URL = re.compile(r"^(https?|ssh|git|file)://\S+$|^[\w.-]+@[\w.-]+:\S+$", re.IGNORECASE)
# a recipe's name is a directory name under builds/ and the cache: one plain path component
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
NAME_RULE = "letters, digits, '.', '_' or '-', starting with a letter or digit, at most 100 characters"


def valid_name(name: str) -> bool:
    return bool(_NAME.match(name))

DEFAULT_UPSTREAM = "https://github.com/ggml-org/llama.cpp"
BACKENDS = tuple(backends.REGISTRY)  # harness/backends/__init__.py: the one list
DEFAULT_TARGETS = ("llama-server", "llama-cli", "llama-quantize", "llama-imatrix", "llama-gguf-split")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def normalize_repo_url(url: str) -> str:
    """The one spelling of a repository URL, applied when a recipe or lock is loaded.

    Whitespace and trailing slashes go, scheme and host become lower-case, and an http(s) URL
    loses a trailing ``.git`` (GitHub and GitLab serve both); a path ending in ``.git`` on disk
    or over ssh is a real directory name and is kept.  Mirrors, locks and drift checks all use
    this spelling, so two recipes naming one repository share one mirror.
    """
    url = url.strip().rstrip("/")
    m = re.match(r"^([A-Za-z][A-Za-z0-9+.-]*://)([^/]*)(.*)$", url)
    if not m:
        return url
    scheme, host, rest = m.group(1).lower(), m.group(2).lower(), m.group(3)
    if scheme in ("http://", "https://") and rest.endswith(".git"):
        rest = rest[:-4]
    return scheme + host + rest


def _check_repo(value: str) -> str:
    if not _URL.match(value):
        raise ValueError(f"not a git URL: {value!r} (use https://..., ssh://..., git@host:path or file://...)")
    return normalize_repo_url(value)


class Upstream(_Model):
    repo: str = DEFAULT_UPSTREAM
    ref: str = "master"

    _repo = field_validator("repo")(_check_repo)

    @field_validator("ref")
    @classmethod
    def _ref(cls, value: str) -> str:
        if re.fullmatch(r"[0-9a-f]{7,39}", value):
            raise ValueError(f"abbreviated commit {value!r}: write the full 40-hex SHA, or a branch or tag")
        if not value.strip():
            raise ValueError("empty ref")
        return value


KINDS = ("pr", "branch", "commit", "patch", "patches")


class StackItem(_Model):
    """One of ``pr``, ``branch``, ``commit``, ``patch`` (a file or an http(s) URL: a diff, a
    ``git format-patch`` mail or an mbox of several) or ``patches`` (a directory whose
    ``*.patch`` files are applied in name order, each its own commit); ``repo`` for the first three."""

    pr: int | None = Field(default=None, gt=0)
    branch: str | None = None
    commit: str | None = None
    patch: str | None = None
    patches: str | None = None
    repo: str | None = None
    sha256: str | None = None
    note: str | None = None

    _repo = field_validator("repo")(lambda v: v if v is None else _check_repo(v))

    @field_validator("patch", "patches")
    @classmethod
    def _where(cls, value: str | None, info: ValidationInfo) -> str | None:
        scheme = _scheme(value) if value is not None else None
        if scheme is not None and (info.field_name == "patches" or scheme not in ("http", "https")):
            if info.field_name == "patches":
                raise ValueError(f"{value!r}: patches: names a directory in the repository, not a URL")
            raise ValueError(f"{value!r}: only http(s):// URLs are downloaded; use a path in the repository")
        return value

    @model_validator(mode="after")
    def _one_kind(self) -> StackItem:
        kinds = [k for k in KINDS if getattr(self, k) is not None]
        if len(kinds) != 1:
            raise ValueError(
                "each stack item needs exactly one of pr, branch, commit, patch, patches"
                + (f" (got {', '.join(kinds)})" if kinds else "")
            )
        if self.commit is not None and not SHA40.match(self.commit):
            raise ValueError(f"commit must be a full 40-hex SHA, got {self.commit!r}")
        for key in ("patch", "patches"):
            if getattr(self, key) is not None and self.repo is not None:
                raise ValueError(f"repo does not apply to a {key} item")
        if self.patch is not None:
            if _is_url(self.patch) and self.sha256 is None:
                raise ValueError("a URL patch needs sha256 (the digest of the file at that URL)")
        elif self.sha256 is not None:
            raise ValueError("sha256 applies only to patch items")
        if self.sha256 is not None and not SHA256.match(self.sha256):
            raise ValueError("sha256 must be 64 lowercase hex digits")
        return self

    @property
    def kind(self) -> str:
        for k in KINDS:
            if getattr(self, k) is not None:
                return k
        raise AssertionError("validated item has a kind")

    @property
    def ref(self) -> str:
        return str(getattr(self, self.kind))

    def label(self, upstream: str) -> str:
        repo = self.repo or upstream
        if self.kind == "pr":
            return f"PR #{self.pr} of {repo}"
        if self.kind == "branch":
            return f"branch {self.branch} of {repo}"
        if self.kind == "commit":
            return f"commit {self.commit} of {repo}"
        if self.kind == "patches":
            return f"patch series {self.patches}"
        return f"patch {self.patch}"


# a smoke check's name (harness/smoke/registry.py: the one list)
if TYPE_CHECKING:
    SmokeTest = str
else:
    SmokeTest = Literal[smoke_registry.NAMES]


# List elements are validated one by one (Annotated), so every bad element is reported, each at its line.
def _one_of(kind: str, choices: tuple[str, ...], *, fold: bool = False) -> Any:
    def check(value: str) -> str:
        if value not in choices:
            close = difflib.get_close_matches(value.lower() if fold else value, choices, n=1)
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


class BuildCommon(_Model):
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


class ModelConvert(_Model):
    outtype: Literal["f32", "f16", "bf16", "q8_0", "auto"] = "bf16"
    mtp: Literal["keep", "drop", "separate"] = "keep"
    split_max_size: str | None = Field(default=None, pattern=r"^[1-9][0-9]*[MG]$")  # converter's --split-max-size
    split_max_tensors: int | None = Field(default=None, gt=0)  # converter's --split-max-tensors


class ModelImatrix(_Model):
    calibration: str | None = None
    chunks: int = Field(default=100, gt=0)
    ctx: int = Field(default=512, gt=0)
    format: Literal["gguf", "dat"] | None = None  # llama-imatrix --output-format (None: the tool's default)


class ModelQuantize(_Model):
    types: list[str] = Field(default_factory=lambda: ["Q4_K_M"])
    mtp_type: str | None = "Q8_0"
    tensor_types: dict[str, str] = Field(default_factory=dict)
    keep_split: bool = False  # llama-quantize --keep-split: a split input gives a split output


def _check_scored(ctx: int, chunks: int) -> None:
    """llama-perplexity prints KL divergence statistics only over 100 scored tokens or more."""
    if chunks * (ctx - 1 - ctx // 2) < 100:
        raise ValueError(f"{chunks} chunk(s) of {ctx} tokens score {chunks * (ctx - 1 - ctx // 2)} tokens; "
                         "llama-perplexity prints no KL divergence statistics for fewer than 100: raise chunks or ctx")


class ModelQuality(_Model):
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


class ModelSection(_Model):
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


class Serve(_Model):
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


class DraftModel(_Model):
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


class GateHubModel(_Model):
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


class NightlyGates(_Model):
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


class Nightly(_Model):
    gates: NightlyGates | None = None
    skip_conflicts: bool = False
    smoke: list[SmokeTest] = Field(default_factory=lambda: list(smoke_registry.NIGHTLY_DEFAULT))
    backends: list[BackendName] | None = None
    bisect_steps: int = Field(default=8, ge=0)  # a failed night bisects upstream for the culprit (0: never)


class RecipeModel(_Model):
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


@dataclass(frozen=True)
class Recipe:
    """A validated recipe and where it came from."""

    path: Path
    spec: RecipeModel
    root: Path  # the repository (or directory) the recipe lives in; relative paths may not leave it

    def __post_init__(self) -> None:
        if not valid_name(self.name):  # whichever source the name came from (name:, or the file's stem)
            raise InputError(f"{self.path}: recipe name {self.name!r} must be {NAME_RULE}",
                             hint="set name: in the recipe", file=str(self.path), key="name")

    @property
    def name(self) -> str:
        return self.spec.name or self.path.stem

    @property
    def lock_path(self) -> Path:
        return self.path.with_suffix(".lock")

    def draft_path(self) -> Path | None:
        """The local draft file named by ``draft.source`` (absolute, ``~``, or relative like a patch); None otherwise."""
        draft = self.spec.draft
        if draft is None or not draft.is_local:
            return None
        if draft.source.startswith(("/", "~")):
            return Path(draft.source).expanduser().resolve()
        return self.resolve_local(draft.source)

    def resolve_local(self, rel: str) -> Path:
        """A path named in the recipe, checked to stay in the repository (see ``_local``)."""
        return _local(self.path.parent, self.root, rel)


def _inside(path: Path, root: Path, rel: str) -> Path:
    resolved = path.resolve()
    if not resolved.is_relative_to(root):
        raise ValueError(f"path {rel!r} is outside the recipe's repository ({root})")
    return resolved


def _local(directory: Path, root: Path, rel: str) -> Path:
    """``rel`` relative to the recipe's directory; failing that, to the repository root
    (so ``patches/x.patch`` works from ``recipes/``).  Never outside the repository."""
    near = _inside(directory / rel, root, rel)
    if near.exists():
        return near
    at_root = _inside(root / rel, root, rel)
    return at_root if at_root.exists() else near


def _scheme(value: str) -> str | None:
    m = re.match(r"^([A-Za-z][A-Za-z0-9+.-]*)://", value)
    return m.group(1).lower() if m else None


def is_url(value: str) -> bool:
    """Is a patch item's value a URL to download?  Only http(s):// (validation refuses other schemes)."""
    return _scheme(value) in ("http", "https")


_is_url = is_url


def _repo_root(directory: Path) -> Path:
    for candidate in (directory, *directory.parents):
        if (candidate / ".git").exists():
            return candidate
    return directory


def _fields(model: type[BaseModel], path: KeyPath) -> list[str]:
    """The field names allowed at ``path`` below ``model`` (for "did you mean")."""
    current: Any = model
    for part in path:
        if isinstance(part, int):
            continue
        field_info = current.model_fields.get(part) if hasattr(current, "model_fields") else None
        if field_info is None:
            return []
        current = _model_of(field_info.annotation)
        if current is None:
            return []
    return list(current.model_fields) if hasattr(current, "model_fields") else []


def _model_of(annotation: Any) -> Any:
    import typing

    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = _model_of(arg)
        if found is not None:
            return found
    return None


def journal_path(path: Path) -> Path:
    """Where a multi-file write of the recipe and its lock (``patches export``) keeps its journal."""
    return path.parent / f".{path.name}.journal.json"


def files_root(path: Path) -> Path:
    """The directory that holds everything a write of the recipe at ``path`` touches (recipe, lock,
    ``patches/``): its repository, else its directory (the parent of a ``recipes/`` directory)."""
    directory = path.resolve().parent
    root = _repo_root(directory)
    return directory.parent if root == directory and directory.name == "recipes" else root


def load_recipe(path: str | Path) -> Recipe:
    """Load and validate a recipe; raise InputError listing every problem.  A multi-file write of
    recipe and lock that a kill left half done is finished first (rolled back or forward)."""
    path = Path(path)
    if os.path.lexists(journaled := journal_path(path)):
        done = journal.recover(journaled, files_root(path))
        if done is not None:
            console.info(f"{path}: {done} the write of recipe and lock that a killed run left half done")
    pos = yamlpos.load(path, what="recipe")
    problems: list[tuple[int, str, str]] = []  # (line, key path, message)
    for dup_path, line in pos.duplicates:
        problems.append((line, yamlpos.format_path(dup_path), "duplicate key"))
    data = pos.data
    spec: RecipeModel | None = None
    if data is None or data == {}:
        problems.append((1, "(top)", "the recipe is empty; a recipe is a mapping of keys (name, upstream, stack, "
                                     "build, ...)"))
    elif not isinstance(data, dict):
        problems.append((1, "(top)", "a recipe is a mapping of keys (name, upstream, stack, build, ...)"))
    else:
        if data.get("name") is None and not valid_name(path.stem):
            problems.append((1, "(top)", f"the file name gives the recipe name {path.stem!r}, which must be "
                                         f"{NAME_RULE}; set name:"))
        try:
            spec = RecipeModel.model_validate(data)
        except ValidationError as exc:
            for err in exc.errors():
                loc: KeyPath = tuple(err["loc"])
                problems.append(_describe(err, loc, pos))
    root = _repo_root(path.resolve().parent)
    if spec is not None:
        for i, item in enumerate(spec.stack):
            if item.patch is not None and not _is_url(item.patch):
                try:
                    target = _local(path.resolve().parent, root, item.patch)
                except ValueError as exc:
                    problems.append((pos.line(("stack", i, "patch")), f"stack[{i}].patch", str(exc)))
                    continue
                if not target.is_file():
                    problems.append((pos.line(("stack", i, "patch")), f"stack[{i}].patch", f"no such file: {item.patch}"))
            if item.patches is not None:
                where = ("stack", i, "patches")
                try:
                    target = _local(path.resolve().parent, root, item.patches)
                except ValueError as exc:
                    problems.append((pos.line(where), f"stack[{i}].patches", str(exc)))
                    continue
                if not target.is_dir():
                    problems.append((pos.line(where), f"stack[{i}].patches", f"no such directory: {item.patches}"))
                elif not any(target.glob("*.patch")):
                    problems.append((pos.line(where), f"stack[{i}].patches", f"no *.patch files in {item.patches}"))
        if spec.model and spec.model.imatrix and spec.model.imatrix.calibration:
            cal = spec.model.imatrix.calibration
            try:
                _local(path.resolve().parent, root, cal)
            except ValueError as exc:
                problems.append((pos.line(("model", "imatrix", "calibration")), "model.imatrix.calibration", str(exc)))
        if spec.draft is not None and spec.draft.is_local and not spec.draft.source.startswith(("/", "~")):
            try:
                _local(path.resolve().parent, root, spec.draft.source)
            except ValueError as exc:
                problems.append((pos.line(("draft", "source")), "draft.source", str(exc)))
    if problems:
        problems.sort(key=lambda p: p[0])
        raise InputError.of([Problem(str(path), line, key, msg) for line, key, msg in problems])
    assert spec is not None
    return Recipe(path=path.resolve(), spec=spec, root=root)


def _describe(err: Any, loc: KeyPath, pos: yamlpos.Positioned) -> tuple[int, str, str]:
    # pydantic puts model-validator errors at the item; drop pydantic's internal loc parts
    loc = tuple(p for p in loc if not (isinstance(p, str) and p.startswith("function-")))
    where = yamlpos.format_path(loc)
    line = pos.line(loc)
    kind = err["type"]
    if kind == "extra_forbidden":
        key = str(loc[-1])
        allowed = _fields(RecipeModel, loc[:-1])
        close = difflib.get_close_matches(key, allowed, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else (f" (allowed: {', '.join(allowed)})" if allowed else "")
        return line, where, f"unknown key{hint}"
    msg = err["msg"]
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, ") :]
    if kind == "missing":
        msg = "required key missing"
    return line, where, msg
