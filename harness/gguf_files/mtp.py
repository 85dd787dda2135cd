"""Which tensors of a GGUF are MTP (multi-token prediction, "NextN") tensors, per architecture.

llama.cpp (checked at upstream 0c1e570) stores the MTP heads as extra decoder blocks after
the trunk: ``<arch>.block_count`` counts them and ``<arch>.nextn_predict_layers`` says how
many of the last blocks are MTP blocks, so blocks ``i >= block_count - nextn`` hold them.
Besides an ordinary decoder block, each such block carries ``blk.{i}.nextn.eh_proj``,
``nextn.enorm`` and ``nextn.hnorm`` (required by every MTP graph) and optionally
``nextn.embed_tokens``, ``nextn.shared_head_head`` and ``nextn.shared_head_norm`` (the
graph falls back to ``token_embd``, ``output`` and ``output_norm``).  Tensors named
``nextn.*`` or ``mtp.*`` outside the blocks count as MTP tensors too.

For the architectures in :data:`FULL_SPECS` the whole tensor set llama.cpp's loader requires
for an MTP block is known (from ``src/models/<arch>.cpp``); for the other architectures
with an MTP graph only the NextN projections are checked.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from gguf import GGUFValueType

from harness.errors import InputError
from harness.gguf_files.reader import INTEGER_TYPES, GGUFFile

# Architectures with an MTP draft graph (LLM_GRAPH_TYPE_DECODER_MTP) at 0c1e570.
MTP_ARCHS = frozenset(
    {
        "bailingmoe3",
        "cohere2moe",
        "deepseek2",
        "deepseek32",
        "deepseek4",
        "glm-dsa",
        "glm4moe",
        "glm5-next",
        "hy_v3",
        "mimo2",
        "nemotron_h_moe",
        "qwen35",
        "qwen35moe",
        "qwen3next",
        "step35",
    }
)

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

_BLOCK = re.compile(r"^blk\.(\d+)\.")


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


def _choice(*alternatives: tuple[str, ...]) -> Requirement:
    return Requirement(tuple(alternatives))


NEXTN_REQUIRED = _req("nextn.eh_proj.weight", "nextn.enorm.weight", "nextn.hnorm.weight")
NEXTN_OPTIONAL = (
    "nextn.embed_tokens.weight",
    "nextn.shared_head_head.weight",
    "nextn.shared_head_norm.weight",
)
_QKV = _choice(("attn_qkv.weight",), ("attn_q.weight", "attn_k.weight", "attn_v.weight"))
_GATED_ATTENTION = [
    *_req("attn_norm.weight", "post_attention_norm.weight"),
    _QKV,
    *_req("attn_output.weight", "attn_q_norm.weight", "attn_k_norm.weight"),
]
_QWEN_MOE_FFN = [
    *_req("ffn_gate_inp.weight", "ffn_down_exps.weight"),
    _choice(("ffn_gate_up_exps.weight",), ("ffn_gate_exps.weight", "ffn_up_exps.weight")),
    *_req(
        "ffn_gate_inp_shexp.weight", "ffn_gate_shexp.weight", "ffn_up_shexp.weight", "ffn_down_shexp.weight"
    ),
]


def _qwen35(gf: GGUFFile, arch: str) -> list[Requirement]:
    return [*_GATED_ATTENTION, *_req("ffn_gate.weight", "ffn_down.weight", "ffn_up.weight"), *NEXTN_REQUIRED]


def _qwen_moe(gf: GGUFFile, arch: str) -> list[Requirement]:
    return [*_GATED_ATTENTION, *_QWEN_MOE_FFN, *NEXTN_REQUIRED]


def _glm4moe(gf: GGUFFile, arch: str) -> list[Requirement]:
    reqs = [
        *_req("attn_norm.weight"),
        _QKV,
        *_req("attn_output.weight", "post_attention_norm.weight"),
        *_req("ffn_gate_inp.weight", "exp_probs_b.bias"),
        *_req("ffn_gate_exps.weight", "ffn_down_exps.weight", "ffn_up_exps.weight"),
    ]
    if int(gf.value(f"{arch}.expert_shared_count", 0) or 0) > 0:
        reqs += _req("ffn_gate_shexp.weight", "ffn_down_shexp.weight", "ffn_up_shexp.weight")
    return [*reqs, *NEXTN_REQUIRED]


# arch -> (the tensors its loader requires in an MTP block, whether a file whose metadata
# promises MTP blocks but lacks their tensors still loads (without MTP))
FULL_SPECS: dict[str, tuple[Callable[[GGUFFile, str], list[Requirement]], bool]] = {
    "qwen35": (_qwen35, False),
    "qwen35moe": (_qwen_moe, False),
    "qwen3next": (_qwen_moe, False),
    "glm4moe": (_glm4moe, True),
}


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
        return self.arch in MTP_ARCHS

    def is_mtp(self, name: str) -> bool:
        block = block_index(name)
        if block is not None:
            return block >= self.trunk_layers or ".nextn." in name
        return name.startswith(("nextn.", "mtp."))


def block_index(name: str) -> int | None:
    m = _BLOCK.match(name)
    return int(m.group(1)) if m else None


def layout(gf: GGUFFile) -> Layout:
    """The file's MTP layout; an InputError when the metadata it rests on is missing or inconsistent."""
    arch = gf.value("general.architecture")
    if not isinstance(arch, str) or not arch:
        raise InputError(f"{gf.path}: general.architecture is missing or not a string")
    block_count = uint_kv(gf, f"{arch}.block_count", required=True)
    nextn_declared = f"{arch}.nextn_predict_layers" in gf.kv
    nextn = uint_kv(gf, f"{arch}.nextn_predict_layers", required=False)
    if nextn > block_count:
        raise InputError(
            f"{gf.path}: {arch}.nextn_predict_layers is {nextn} but {arch}.block_count is only {block_count}"
        )
    return Layout(arch, block_count, nextn, nextn_declared)


def uint_kv(gf: GGUFFile, key: str, *, required: bool) -> int:
    entry = gf.kv.get(key)
    if entry is None:
        if required:
            raise InputError(f"{gf.path}: metadata key {key} is missing")
        return 0
    if entry.type not in INTEGER_TYPES or entry.value < 0:
        raise InputError(f"{gf.path}: metadata key {key} must be a non-negative integer, got {entry.value!r}")
    return int(entry.value)


def layer_requirements(gf: GGUFFile, lay: Layout) -> tuple[list[Requirement], bool]:
    """What one MTP block must hold, and whether that is llama.cpp's full list for this arch."""
    spec = FULL_SPECS.get(lay.arch)
    if spec is None:
        reqs = list(NEXTN_REQUIRED)
        if lay.arch == "nemotron_h_moe":
            reqs += _req("nextn.shared_head_norm.weight")
        return reqs, False
    return spec[0](gf, lay.arch), True


def loads_without_heads(arch: str) -> bool | None:
    """Whether llama.cpp loads a file whose promised MTP tensors are missing (None: not known)."""
    spec = FULL_SPECS.get(arch)
    return None if spec is None else spec[1]


def per_layer_array_problems(gf: GGUFFile, lay: Layout) -> list[str]:
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
