"""Does a GGUF keep the MTP promise its metadata makes?

Statuses, and what ``harness gguf audit`` exits with:

``ok`` (0)
    ``<arch>.nextn_predict_layers`` = N > 0 and each of the last N blocks holds every tensor
    llama.cpp's loader requires for an MTP block of this architecture (the full decoder block
    plus ``nextn.eh_proj/enorm/hnorm``; see :mod:`harness.gguf_files.mtp`).
``not-applicable`` (0)
    The architecture has no MTP graph in llama.cpp and the metadata declares no MTP layers.
``no-mtp-heads`` (1)
    The architecture supports MTP in llama.cpp but the metadata declares none
    (``nextn_predict_layers`` absent or 0): converted with ``--no-mtp``, or a quant made from
    such a file.  Speculative decoding with ``--spec-type draft-mtp`` is impossible.
``heads-dropped`` (1)
    The metadata promises N MTP layers but none of their tensors are in the file: the
    "community quant silently dropped the MTP heads" case.  For qwen35/qwen35moe/qwen3next
    llama.cpp then refuses to load the file at all; for glm4moe it loads without MTP.
``incomplete`` (1)
    Some MTP tensors are present, some required ones are missing or have the wrong shape.
``inconsistent`` (1)
    The metadata and the tensors disagree in another way: MTP tensors present although no
    MTP layers are declared, tensors in blocks past ``block_count``, or per-layer metadata
    arrays whose length is not ``block_count``.

Warnings never change the exit code: MTP matrices quantized below Q8_0 while the trunk's
matrices have more bits per weight (low-precision heads lower the draft acceptance rate),
and MTP layers declared for an architecture without an MTP graph.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from harness.gguf_files import mtp
from harness.gguf_files.reader import GGUFFile, TensorInfo, bits_per_weight, type_name

PASSING = frozenset({"ok", "not-applicable"})
Q8_0_BPW = 8.5


@dataclass(frozen=True)
class LayerReport:
    block: int
    missing: list[str] = field(default_factory=list)  # full tensor names
    bad_shapes: list[str] = field(default_factory=list)
    tensors: int = 0


@dataclass(frozen=True)
class Audit:
    path: str
    arch: str
    block_count: int
    nextn: int
    status: str
    checked: str  # "full" (llama.cpp's full MTP block) or "nextn" (only the NextN projections)
    problems: list[str]
    warnings: list[str]
    layers: list[LayerReport]

    @property
    def ok(self) -> bool:
        return self.status in PASSING

    def to_json(self) -> dict[str, Any]:
        return {
            "file": self.path,
            "ok": self.ok,
            "status": self.status,
            "architecture": self.arch,
            "block_count": self.block_count,
            "nextn_predict_layers": self.nextn,
            "checked": self.checked,
            "problems": self.problems,
            "warnings": self.warnings,
            "layers": [vars(layer) for layer in self.layers],
        }


def audit(gf: GGUFFile) -> Audit:
    lay = mtp.layout(gf)
    reqs, full = mtp.layer_requirements(gf, lay)
    problems: list[str] = []
    warnings: list[str] = []
    layers: list[LayerReport] = []
    status = "ok"

    by_block: dict[int, set[str]] = {}
    for t in gf.tensors:
        block = mtp.block_index(t.name)
        if block is not None:
            by_block.setdefault(block, set()).add(t.name.split(".", 2)[2])

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
        for block in lay.mtp_layers:
            present = by_block.get(block, set())
            report = LayerReport(block, tensors=len(present))
            for req in reqs:
                if not req.satisfied(present):
                    report.missing.extend(f"blk.{block}.{name}" for name in req.missing(present))
            report.bad_shapes.extend(_nextn_shape_problems(gf, block))
            layers.append(report)
        if all(r.tensors == 0 for r in layers):
            status = "heads-dropped"
            problems.append(_dropped_message(lay))
        else:
            for r in layers:
                if r.missing:
                    problems.append(f"MTP block {r.block} is missing {_names(r.missing)}")
                problems.extend(r.bad_shapes)
            if problems and status == "ok":
                status = "incomplete"

    array_problems = mtp.per_layer_array_problems(gf, lay)
    problems.extend(array_problems)
    if problems and status in PASSING:
        status = "inconsistent"

    warnings.extend(_precision_warnings(gf, lay))
    return Audit(
        path=str(gf.path),
        arch=lay.arch,
        block_count=lay.block_count,
        nextn=lay.nextn,
        status=status,
        checked="full" if full else "nextn",
        problems=problems,
        warnings=warnings,
        layers=layers,
    )


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


def _nextn_shape_problems(gf: GGUFFile, block: int) -> list[str]:
    n_embd = gf.value(f"{gf.value('general.architecture')}.embedding_length")
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


def _precision_warnings(gf: GGUFFile, lay: mtp.Layout) -> list[str]:
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


def _names(names: list[str], limit: int = 8) -> str:
    shown = ", ".join(names[:limit])
    return shown if len(names) <= limit else f"{shown} and {len(names) - limit} more"


def _ranges(blocks: list[int]) -> str:
    if len(blocks) == 1:
        return str(blocks[0])
    if blocks == list(range(blocks[0], blocks[-1] + 1)):
        return f"{blocks[0]}-{blocks[-1]}"
    return ", ".join(map(str, blocks))
