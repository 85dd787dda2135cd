"""Which tensors of a GGUF are MTP (multi-token prediction, "NextN") tensors, and what an MTP block must hold.

llama.cpp stores the MTP heads as extra decoder blocks after the trunk: ``<arch>.block_count``
counts them and ``<arch>.nextn_predict_layers`` says how many of the last blocks are MTP
blocks, so blocks ``i >= block_count - nextn`` hold them.  Tensors named ``nextn.*`` or
``mtp.*`` outside the blocks count as MTP tensors too.

What an MTP block must hold comes from two places, so that a new architecture needs no code:

- **the pinned tree** (``harness/data/mtp_archs.json``, written by
  :mod:`harness.gguf_files.mtp_table` from ``src/models/*.cpp``): which architectures load
  MTP blocks, whether they draft with them (an MTP graph), the tensors the MTP-only code
  creates as required (``nextn.eh_proj/enorm/hnorm``, and the whole block where MTP blocks
  have a loader of their own, e.g. qwen35, nemotron_h_moe), those it marks optional, and
  whether a file whose MTP tensors are missing still loads;
- **the file itself**, where the MTP blocks are built by the trunk's own code (deepseek2/4,
  glm4moe, mimo2, hy_v3, ...): an MTP block mirrors the trunk blocks of its own kind (dense or
  MoE, attention or recurrent): it must hold every tensor all of them hold (what varies from
  layer to layer, such as DeepSeek V4's compressors or hash-routed gates, is left out) plus
  the NextN projections, less what the loader marks optional.

Architectures a build's gguf-py lists with NextN tensors but the table does not know get
the NextN projections and the mirror (:func:`register_architectures`).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from gguf import GGUFValueType

from harness.errors import InputError
from harness.gguf_files import mtp_table
from harness.gguf_files.contents import INTEGER_TYPES, KV, TensorInfo

# llama.cpp's limits (src/llama-hparams.h): block_count above this aborts the loader
LLAMA_MAX_LAYERS = 512

# Metadata arrays llama.cpp reads with one entry per block, MTP blocks included (n_layer_all).
PER_LAYER_KEYS = (
    "feed_forward_length",
    "expert_feed_forward_length",
    "expert_used_count",
    "swiglu_clamp_exp",
    "swiglu_clamp_shexp",
    "attention.head_count",
    "attention.head_count_kv",
    "attention.recurrent_layers",
    "attention.compress_ratios",
)
NEXTN_REQUIRED = ("nextn.eh_proj.weight", "nextn.enorm.weight", "nextn.hnorm.weight")

_BLOCK = re.compile(r"^blk\.(\d+)\.")


class Model(Protocol):
    """What the MTP code reads of a model (:class:`harness.gguf_files.split.GGUFModel`)."""

    @property
    def path(self) -> Any: ...
    @property
    def kv(self) -> dict[str, KV]: ...
    @property
    def tensors(self) -> tuple[TensorInfo, ...]: ...
    def tensor(self, name: str) -> TensorInfo | None: ...
    def value(self, key: str, default: Any = None) -> Any: ...


@dataclass(frozen=True)
class ArchSpec:
    """What the pinned tree says about one architecture's MTP blocks (see :mod:`mtp_table`)."""

    arch: str
    graph: bool  # drafts with its MTP blocks (LLM_GRAPH_TYPE_DECODER_MTP, or an assistant)
    blocks: str  # trunk (MTP blocks mirror trunk blocks) | separate | assistant
    loads_without_heads: bool | None
    required: frozenset[str]
    choices: tuple[tuple[tuple[str, ...], ...], ...]
    optional: frozenset[str]
    global_required: frozenset[str]
    source: str  # where the facts come from

    @classmethod
    def from_json(cls, arch: str, data: dict[str, Any], source: str) -> ArchSpec:
        return cls(
            arch=arch,
            graph=bool(data["graph"]),
            blocks=str(data["blocks"]),
            loads_without_heads=bool(data["loads_without_heads"]),
            required=frozenset(data["required"]),
            choices=tuple(tuple(tuple(alt) for alt in choice) for choice in data["choices"]),
            optional=frozenset(data["optional"]),
            global_required=frozenset(data["global_required"]),
            source=f"{data['file']} at {source}",
        )


@functools.cache
def _table() -> dict[str, ArchSpec]:
    data = mtp_table.load()
    source = str(data.get("source", "the pinned tree"))
    return {arch: ArchSpec.from_json(arch, spec, source) for arch, spec in data["architectures"].items()}


_registered: dict[str, ArchSpec] = {}


def register_architectures(names: Iterable[str]) -> None:
    """MTP architectures of a build's gguf-py that the pinned table does not know: NextN + mirror."""
    for arch in names:
        if arch not in _table() and arch not in _registered:
            _registered[arch] = ArchSpec(
                arch, True, "trunk", None, frozenset(NEXTN_REQUIRED), (), frozenset(), frozenset(),
                "the build's gguf-py (MODEL_TENSORS lists NextN tensors)",
            )  # fmt: skip


def spec(arch: str) -> ArchSpec | None:
    return _table().get(arch) or _registered.get(arch)


def mtp_architectures() -> set[str]:
    """Architectures with an MTP draft graph in the pinned tree (or a registered build)."""
    return {a for a, s in {**_table(), **_registered}.items() if s.graph}


@dataclass(frozen=True)
class Requirement:
    """One tensor a block needs, or a choice: any one of ``alternatives`` (each a set of names)."""

    alternatives: tuple[tuple[str, ...], ...]

    @property
    def label(self) -> str:
        return " or ".join("+".join(alt) for alt in self.alternatives)

    def satisfied(self, present: set[str]) -> bool:
        return any(all(name in present for name in alt) for alt in self.alternatives)

    def missing(self, present: set[str]) -> list[str]:
        """The names to report when unsatisfied: the closest alternative's missing names."""

        def rank(alt: tuple[str, ...]) -> tuple[int, int]:  # the most-present alternative, then the smallest
            found = sum(name in present for name in alt)
            return (-found, len(alt) - found)

        best = min(self.alternatives, key=rank)
        return [name for name in best if name not in present]


def _req(*names: str) -> list[Requirement]:
    return [Requirement(((name,),)) for name in names]


@dataclass(frozen=True)
class Layout:
    """Where the MTP layers of a file are, from its metadata."""

    arch: str
    block_count: int
    nextn: int  # <arch>.nextn_predict_layers, 0 when absent
    nextn_declared: bool

    @property
    def trunk_layers(self) -> int:
        return self.block_count - self.nextn

    @property
    def mtp_layers(self) -> range:
        return range(self.trunk_layers, self.block_count)

    @property
    def arch_supports_mtp(self) -> bool:
        s = spec(self.arch)
        return s is not None and s.graph

    def is_mtp(self, name: str) -> bool:
        block = block_index(name)
        if block is not None:
            return block >= self.trunk_layers or ".nextn." in name
        return name.startswith(("nextn.", "mtp."))


def block_index(name: str) -> int | None:
    m = _BLOCK.match(name)
    return int(m.group(1)) if m else None


def layout(gf: Model) -> Layout:
    """The file's MTP layout; an InputError when the metadata it rests on is missing, inconsistent or out of bounds."""
    arch = gf.value("general.architecture")
    if not isinstance(arch, str) or not arch:
        raise InputError(f"{gf.path}: general.architecture is missing or not a string")
    block_count = uint_kv(gf, f"{arch}.block_count", required=True)
    if block_count > LLAMA_MAX_LAYERS:
        raise InputError(
            f"{gf.path}: {arch}.block_count is {block_count}; llama.cpp allows at most {LLAMA_MAX_LAYERS} "
            "(LLAMA_MAX_LAYERS)"
        )
    nextn_declared = f"{arch}.nextn_predict_layers" in gf.kv
    nextn = uint_kv(gf, f"{arch}.nextn_predict_layers", required=False)
    if nextn > block_count:
        raise InputError(
            f"{gf.path}: {arch}.nextn_predict_layers is {nextn} but {arch}.block_count is only {block_count}"
        )
    return Layout(arch, block_count, nextn, nextn_declared)


def uint_kv(gf: Model, key: str, *, required: bool) -> int:
    entry = gf.kv.get(key)
    if entry is None:
        if required:
            raise InputError(f"{gf.path}: metadata key {key} is missing")
        return 0
    if entry.type not in INTEGER_TYPES or entry.value < 0:
        raise InputError(f"{gf.path}: metadata key {key} must be a non-negative integer, got {entry.value!r}")
    return int(entry.value)


def blocks_of(gf: Model) -> dict[int, set[str]]:
    """Block index -> the names (after ``blk.N.``) of the tensors the file has in it."""
    out: dict[int, set[str]] = {}
    for t in gf.tensors:
        block = block_index(t.name)
        if block is not None:
            out.setdefault(block, set()).add(t.name.split(".", 2)[2])
    return out


def is_draft_only(gf: Model, lay: Layout) -> bool:
    """An MTP-only file: MTP blocks and no trunk block (an assistant, ``convert --mtp``, ``extract-mtp``).

    llama.cpp's loaders call such a file ``mtp_only`` (``blk.0.attn_norm.weight`` absent) and
    load it as a draft model for ``-md``.
    """
    s = spec(lay.arch)
    if s is not None and s.blocks == "assistant":
        return True
    if lay.nextn == 0 or lay.trunk_layers == 0:
        return lay.nextn > 0 and lay.trunk_layers == 0
    blocks = blocks_of(gf)
    return not any(b < lay.trunk_layers for b in blocks) and any(b >= lay.trunk_layers for b in blocks)


@dataclass(frozen=True)
class BlockRule:
    """What MTP block ``block`` must hold, and where that comes from."""

    requirements: list[Requirement]
    basis: str  # "mirror of blk.N", "llama.cpp's loader (...)", "the NextN projections only"
    full: bool  # the whole block was checked, not only the NextN projections
    reference: tuple[Model, int] | None = None  # the trunk block mirrored (model, block), for shapes


def block_rule(gf: Model, lay: Layout, block: int, *, trunk: Model | None = None) -> BlockRule:
    """The requirements of MTP block ``block`` of ``gf``.

    ``trunk`` is a model whose trunk blocks may be mirrored when ``gf`` has none of its own
    (an MTP-only draft checked against its target).
    """
    s = spec(lay.arch)
    if s is None:
        return BlockRule(_req(*NEXTN_REQUIRED), "the NextN projections only (no MTP loader known for this arch)", False)
    table = [*_req(*(sorted(s.required) or NEXTN_REQUIRED)), *(Requirement(c) for c in s.choices)]
    if s.blocks != "trunk":
        return BlockRule(table, f"llama.cpp's loader ({s.source})", True)
    present = blocks_of(gf).get(block, set())
    for model in (gf, trunk):
        if model is None:
            continue
        model_lay = lay if model is gf else layout(model)
        core = _trunk_core(blocks_of(model), model_lay.trunk_layers, present)
        if core is not None:
            refs, names = core
            mirrored = sorted(n for n in names if n not in s.optional and not n.startswith("nextn."))
            where = "" if model is gf else f" of {_name(model)}"
            return BlockRule(
                [*_req(*mirrored), *[r for r in table if not r.satisfied(set(mirrored))]],
                f"mirror of trunk block(s) {_span(refs)}{where} + llama.cpp's NextN tensors ({s.source})",
                True,
                (model, refs[-1]),
            )
    return BlockRule(table, "the NextN projections only (no trunk block to mirror; check against a target)", False)


def trunk_reference(model: Model, present: set[str]) -> int | None:
    """The last trunk block of ``model`` of the kind ``present`` is (shapes of a draft against its target)."""
    core = _trunk_core(blocks_of(model), layout(model).trunk_layers, present)
    return None if core is None else core[0][-1]


def kind(names: set[str]) -> tuple[bool, bool]:
    """A block's kind: (MoE: it routes to experts, recurrent: it has SSM/linear-attention state)."""
    return "ffn_gate_inp.weight" in names, any(n.startswith("ssm_") for n in names)


def _trunk_core(blocks: dict[int, set[str]], trunk_layers: int, present: set[str]) -> tuple[list[int], set[str]] | None:
    """The trunk blocks of ``present``'s kind (all trunk blocks when none is), and the names all of them hold."""
    trunk = {b: names for b, names in blocks.items() if b < trunk_layers}
    if not trunk:
        return None
    same = {b: names for b, names in trunk.items() if kind(names) == kind(present)} or trunk
    refs = sorted(same)
    return refs, set.intersection(*(same[b] for b in refs))


def _span(blocks: list[int]) -> str:
    if len(blocks) > 1 and blocks == list(range(blocks[0], blocks[-1] + 1)):
        return f"{blocks[0]}-{blocks[-1]}"
    return ", ".join(map(str, blocks))


def global_requirements(lay: Layout) -> list[str]:
    """Tensors outside the blocks that an MTP file of this arch needs (e.g. an assistant's projections)."""
    s = spec(lay.arch)
    return sorted(s.global_required) if s is not None else []


def loads_without_heads(arch: str) -> bool | None:
    """Whether llama.cpp loads a file whose promised MTP tensors are missing (None: not known)."""
    s = spec(arch)
    return None if s is None else s.loads_without_heads


def per_layer_array_problems(gf: Model, lay: Layout) -> list[str]:
    """Per-layer metadata arrays whose length is not block_count (llama.cpp refuses to load those)."""
    problems = []
    for suffix in PER_LAYER_KEYS:
        entry = gf.kv.get(f"{lay.arch}.{suffix}")
        if entry is not None and entry.type == GGUFValueType.ARRAY and len(entry.value) != lay.block_count:
            problems.append(
                f"{entry.key} has {len(entry.value)} entries but block_count is {lay.block_count} "
                "(llama.cpp: 'wrong array length')"
            )
    return problems


def _name(model: Model) -> str:
    path = model.path
    return getattr(path, "name", str(path))
