"""Does a GGUF keep the MTP promise its metadata makes?  Is a draft file fit for its target?

A split model is audited as the set llama.cpp loads (:mod:`harness.gguf_files.split`).
Statuses, and what ``harness gguf audit`` exits with:

``ok`` (0)
    ``<arch>.nextn_predict_layers`` = N > 0 and each of the last N blocks holds every tensor
    llama.cpp's loader requires of an MTP block of this architecture (see
    :mod:`harness.gguf_files.mtp`: the tree's list, or the mirrored trunk block + NextN).
``draft`` (0)
    An MTP draft file: a Gemma 4 style assistant (``gemma4-assistant``: MTP blocks only) or an
    MTP-only head (``convert_hf_to_gguf.py --mtp``, ``harness gguf extract-mtp``), complete as
    its loader requires, to be loaded with ``-md`` next to its target.
``not-applicable`` (0)
    The architecture has no MTP graph in llama.cpp and the metadata declares no MTP layers.
``no-mtp-heads`` (1)
    The architecture supports MTP in llama.cpp but the metadata declares none
    (``nextn_predict_layers`` absent or 0): converted with ``--no-mtp``, or a quant made from
    such a file.  Speculative decoding with ``--spec-type draft-mtp`` is impossible.
``heads-dropped`` (1)
    The metadata promises N MTP layers but none of their tensors are in the file: the
    "community quant silently dropped the MTP heads" case.  Whether llama.cpp then refuses
    the file or loads it without MTP depends on the architecture (the pinned tree says).
``incomplete`` (1)
    Some MTP tensors are present, some required ones are missing or have the wrong shape.
``inconsistent`` (1)
    The metadata and the tensors disagree in another way: MTP tensors present although no
    MTP layers are declared, tensors in blocks past ``block_count``, or per-layer metadata
    arrays whose length is not ``block_count``.
``wrong-target`` (1)
    With ``--target``: the draft does not fit the target (architecture, the hidden width the
    MTP head reads, the vocabulary llama.cpp's speculative decoding compares, tensor shapes).

Warnings never change the exit code: MTP matrices quantized below Q8_0 while the trunk's
matrices have more bits per weight (low-precision heads lower the draft acceptance rate),
and MTP layers declared for an architecture without an MTP graph.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.gguf_files import mtp
from harness.gguf_files.contents import Array, TensorInfo
from harness.gguf_files.ggml_types import bits_per_weight, type_name
from harness.gguf_files.split import GGUFModel, open_model

PASSING = frozenset({"ok", "draft", "not-applicable"})
Q8_0_BPW = 8.5
# common/speculative.cpp: a draft's vocabulary may differ in size by this much, and token
# texts are compared from this id on
SPEC_VOCAB_MAX_SIZE_DIFFERENCE = 128
SPEC_VOCAB_CHECK_START_TOKEN_ID = 5


@dataclass(frozen=True)
class LayerReport:
    block: int
    missing: list[str] = field(default_factory=list)  # full tensor names
    bad_shapes: list[str] = field(default_factory=list)
    tensors: int = 0
    basis: str = ""


@dataclass(frozen=True)
class Audit:
    path: str
    shards: list[str]
    arch: str
    block_count: int
    nextn: int
    kind: str  # "model" or "draft"
    status: str
    checked: str  # "full" (the whole MTP block) or "nextn" (only the NextN projections)
    problems: list[str]
    warnings: list[str]
    layers: list[LayerReport]
    target: str | None = None

    @property
    def ok(self) -> bool:
        return self.status in PASSING

    @property
    def heads_complete(self) -> bool:
        """Every MTP block the metadata promises is there, whole (what a graft donor needs)."""
        return self.nextn > 0 and all(r.tensors and not r.missing and not r.bad_shapes for r in self.layers)

    def to_json(self) -> dict[str, Any]:
        return {
            "file": self.path,
            "shards": self.shards,
            "ok": self.ok,
            "status": self.status,
            "kind": self.kind,
            "architecture": self.arch,
            "block_count": self.block_count,
            "nextn_predict_layers": self.nextn,
            "checked": self.checked,
            "target": self.target,
            "problems": self.problems,
            "warnings": self.warnings,
            "layers": [vars(layer) for layer in self.layers],
        }


def audit_path(path: Path, target: Path | None = None) -> Audit:
    """:func:`audit` of the model at ``path`` (every shard of a split set), against the one at
    ``target`` when given; an InputError names a file that cannot be read."""
    with open_model(path) as gf:
        if target is None:
            return audit(gf)
        with open_model(target) as tgt:
            return audit(gf, target=tgt)


def audit(gf: GGUFModel, *, target: GGUFModel | None = None) -> Audit:
    lay = mtp.layout(gf)
    draft = mtp.is_draft_only(gf, lay)
    spec = mtp.spec(lay.arch)
    assistant = spec is not None and spec.blocks == "assistant"  # its own width: nothing to compare shapes with
    problems: list[str] = []
    warnings: list[str] = []
    layers: list[LayerReport] = []
    misfit: list[str] = []  # ways the draft does not fit --target
    status = "ok"
    full = True
    by_block = mtp.blocks_of(gf)

    beyond = sorted(b for b in by_block if b >= lay.block_count)
    if beyond:
        problems.append(
            f"tensors in block(s) {_ranges(beyond)} past block_count {lay.block_count} "
            "(llama.cpp: 'wrong number of tensors')"
        )

    if lay.nextn == 0:
        stray = [t.name for t in gf.tensors if lay.is_mtp(t.name)]
        if stray:
            problems.append(
                f"no MTP layers declared ({_nextn_text(lay)}) but MTP tensors are present: {_names(stray)}"
            )
        elif lay.arch_supports_mtp:
            status = "no-mtp-heads"
            problems.append(
                f"no MTP heads: {lay.arch} supports MTP in llama.cpp but {_nextn_text(lay)}; "
                "the file was converted with --no-mtp or made from such a file "
                "(graft heads back with `harness gguf graft`)"
            )
        else:
            status = "not-applicable"
    else:
        if not lay.arch_supports_mtp:
            warnings.append(
                f"{lay.arch} has no MTP graph in llama.cpp; its {lay.nextn} MTP layer(s) go unused"
            )
        trunk = target if draft else None
        for block in lay.mtp_layers:
            present = by_block.get(block, set())
            rule = mtp.block_rule(gf, lay, block, trunk=trunk)
            full = full and rule.full
            report = LayerReport(block, tensors=len(present), basis=rule.basis)
            for req in rule.requirements:
                if not req.satisfied(present):
                    report.missing.extend(f"blk.{block}.{name}" for name in req.missing(present))
            report.missing.sort()
            report.bad_shapes.extend(_nextn_shape_problems(gf, block))
            if draft and target is not None and not assistant and mtp.layout(target).arch == lay.arch:
                ref = mtp.trunk_reference(target, present)
                if ref is not None:
                    misfit.extend(_target_shape_problems(gf, block, target, ref))
            layers.append(report)
        if all(r.tensors == 0 for r in layers):
            status = "heads-dropped"
            problems.append(_dropped_message(lay))
        else:
            for r in layers:
                if r.missing:
                    problems.append(f"MTP block {r.block} is missing {_names(r.missing)}")
                problems.extend(r.bad_shapes)
            if draft:
                problems.extend(_draft_global_problems(gf, lay))
            if problems and status == "ok":
                status = "incomplete"
            elif status == "ok" and draft:
                status = "draft"

    problems.extend(mtp.per_layer_array_problems(gf, lay))
    if problems and status in PASSING:
        status = "inconsistent"
    if target is not None:
        mismatch = fit_problems(gf, lay, target, draft_only=draft) + misfit
        if mismatch:
            problems.extend(mismatch)
            if status in PASSING:
                status = "wrong-target"

    warnings.extend(_precision_warnings(gf, lay))
    return Audit(
        path=str(gf.path),
        shards=[str(p) for p in gf.paths],
        arch=lay.arch,
        block_count=lay.block_count,
        nextn=lay.nextn,
        kind="draft" if draft else "model",
        status=status,
        checked="full" if full else "nextn",
        problems=problems,
        warnings=warnings,
        layers=layers,
        target=None if target is None else str(target.path),
    )


def fit_problems(draft: GGUFModel, lay: mtp.Layout, target: GGUFModel, *, draft_only: bool) -> list[str]:
    """Ways ``draft`` cannot serve as ``-md`` for ``target`` (common/speculative.cpp's checks)."""
    problems: list[str] = []
    d, t = _name(draft), _name(target)
    t_lay = mtp.layout(target)
    spec = mtp.spec(lay.arch)
    assistant = spec is not None and spec.blocks == "assistant"
    if draft_only and not assistant and t_lay.arch != lay.arch:
        problems.append(f"architecture: {d} is {lay.arch}, the target {t} is {t_lay.arch}")
    if draft_only:
        width_d, width_t = _embd_out(draft, lay.arch), _embd_out(target, t_lay.arch)
        if width_d is not None and width_t is not None and width_d != width_t:
            problems.append(
                f"hidden width: the MTP head of {d} reads rows of {width_d} ({lay.arch}.embedding_length_out or "
                f"embedding_length), the target {t} gives {width_t} (llama.cpp: 'MTP input row width must match')"
            )
    problems.extend(vocab_problems(draft, target))
    return problems


def vocab_problems(draft: GGUFModel, target: GGUFModel) -> list[str]:
    """common_speculative_are_compatible: tokenizer model, BOS/EOS, size within 128, same token texts from id 5."""
    d, t = _name(draft), _name(target)
    problems = []
    for key in ("tokenizer.ggml.model", "tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id"):
        a, b = draft.value(key), target.value(key)
        if a != b:
            problems.append(f"vocabulary: {key} is {a!r} in {d}, {b!r} in the target {t}")
    dt, tt = draft.value("tokenizer.ggml.tokens"), target.value("tokenizer.ggml.tokens")
    if isinstance(dt, (list, Array)) and isinstance(tt, (list, Array)):
        if abs(len(dt) - len(tt)) > SPEC_VOCAB_MAX_SIZE_DIFFERENCE:
            problems.append(
                f"vocabulary size: {d} has {len(dt)} tokens, the target {t} {len(tt)} "
                f"(llama.cpp allows a difference of {SPEC_VOCAB_MAX_SIZE_DIFFERENCE})"
            )
        else:
            for i in range(SPEC_VOCAB_CHECK_START_TOKEN_ID, min(len(dt), len(tt))):
                if dt[i] != tt[i]:
                    problems.append(f"vocabulary: token {i} is {dt[i]!r} in {d}, {tt[i]!r} in the target {t}")
                    break
    return problems


def _embd_out(model: GGUFModel, arch: str) -> int | None:
    for key in (f"{arch}.embedding_length_out", f"{arch}.embedding_length"):
        value = model.value(key)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


def _draft_global_problems(gf: GGUFModel, lay: mtp.Layout) -> list[str]:
    """A draft file's loader still creates token_embd and output_norm (flag 0), and an assistant's projections."""
    need = ["token_embd.weight", "output_norm.weight", *mtp.global_requirements(lay)]
    missing = [name for name in need if gf.tensor(name) is None]
    problems = [f"the draft lacks {', '.join(missing)}, which llama.cpp's loader requires"] if missing else []
    spec = mtp.spec(lay.arch)
    if spec is not None and spec.blocks == "assistant":
        own, out = gf.value(f"{lay.arch}.embedding_length"), gf.value(f"{lay.arch}.embedding_length_out")
        if out is None or out == own:  # hparams.n_embd_out() falls back to n_embd
            problems.append(
                f"{lay.arch}.embedding_length_out is {'missing' if out is None else f'{out}, its own embedding_length'}: "
                "it must carry the target's hidden size (llama.cpp: 'Gemma 4 assistant requires "
                "embedding_length_out to carry the target hidden size')"
            )
    return problems


def _dropped_message(lay: mtp.Layout) -> str:
    blocks = _ranges(list(lay.mtp_layers))
    msg = (
        f"MTP heads dropped: {lay.arch}.nextn_predict_layers = {lay.nextn} promises MTP block(s) {blocks}, "
        "but the file holds none of their tensors"
    )
    loads = mtp.loads_without_heads(lay.arch)
    if loads is False:
        msg += f"; llama.cpp refuses to load such a {lay.arch} file (\"tensor 'blk.{lay.trunk_layers}.attn_norm.weight' not found\")"
    elif loads:
        msg += "; llama.cpp loads it, without MTP"
    return msg


def _nextn_shape_problems(gf: GGUFModel, block: int) -> list[str]:
    arch = gf.value("general.architecture")
    n_embd = gf.value(f"{arch}.embedding_length")
    if not isinstance(n_embd, int):
        return []
    expected = {
        f"blk.{block}.nextn.eh_proj.weight": (2 * n_embd, n_embd),
        f"blk.{block}.nextn.enorm.weight": (n_embd,),
        f"blk.{block}.nextn.hnorm.weight": (n_embd,),
    }
    problems = []
    for name, shape in expected.items():
        t = gf.tensor(name)
        if t is not None and t.shape != shape:
            problems.append(f"{name} has shape {list(t.shape)}, llama.cpp expects {list(shape)}")
    return problems


def _target_shape_problems(gf: GGUFModel, block: int, ref_model: GGUFModel, ref_block: int) -> list[str]:
    """Tensors of a draft's MTP block whose shapes differ from the same tensors of a target trunk block of its kind."""
    problems = []
    for t in gf.tensors:
        if mtp.block_index(t.name) != block or ".nextn." in t.name:
            continue
        ref = ref_model.tensor(f"blk.{ref_block}.{t.name.split('.', 2)[2]}")
        if ref is not None and ref.shape != t.shape:
            problems.append(
                f"{t.name} has shape {list(t.shape)}, but blk.{ref_block} of the target has {list(ref.shape)}"
            )
    return problems


def _precision_warnings(gf: GGUFModel, lay: mtp.Layout) -> list[str]:
    """MTP matrices below Q8_0 while the trunk's dominant matrix type (by weights) has more bits."""
    trunk_params: dict[int, int] = {}
    low: list[TensorInfo] = []
    for t in gf.tensors:
        if len(t.shape) < 2 or mtp.block_index(t.name) is None:
            continue  # norms and biases stay F32; embeddings and output heads are typed on their own
        if lay.is_mtp(t.name):
            if bits_per_weight(t.type) < Q8_0_BPW:
                low.append(t)
        else:
            trunk_params[t.type] = trunk_params.get(t.type, 0) + t.n_elements
    if not low or not trunk_params:
        return []
    dominant = max(trunk_params, key=lambda k: trunk_params[k])
    trunk_bpw = bits_per_weight(dominant)
    low = [t for t in low if bits_per_weight(t.type) < trunk_bpw]
    if not low:
        return []
    kinds = sorted({t.type_name for t in low})
    return [
        f"{len(low)} MTP matrices are quantized below Q8_0 ({', '.join(kinds)}) while most trunk weights are "
        f"{type_name(dominant)} ({trunk_bpw:.1f} bits per weight): {_names([t.name for t in low])}; "
        "low-precision MTP heads lower the draft acceptance rate"
    ]


def _nextn_text(lay: mtp.Layout) -> str:
    key = f"{lay.arch}.nextn_predict_layers"
    return f"{key} is 0" if lay.nextn_declared else f"{key} is absent"


def _name(model: GGUFModel) -> str:
    return model.path.name


def _names(names: list[str], limit: int = 8) -> str:
    shown = ", ".join(names[:limit])
    return shown if len(names) <= limit else f"{shown} and {len(names) - limit} more"


def _ranges(blocks: list[int]) -> str:
    if len(blocks) == 1:
        return str(blocks[0])
    if blocks == list(range(blocks[0], blocks[-1] + 1)):
        return f"{blocks[0]}-{blocks[-1]}"
    return ", ".join(map(str, blocks))
