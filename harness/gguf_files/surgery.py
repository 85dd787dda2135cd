"""MTP tensor surgery: extract a file's MTP layers into a donor GGUF, graft them into a base GGUF.

The donor has the layout of llama.cpp's own MTP-only files (``convert_hf_to_gguf.py --mtp``):
every metadata key of the source (architecture, hyperparameters, tokenizer, with
``block_count`` and ``nextn_predict_layers`` unchanged), the global tensors (``token_embd``,
``output_norm``, ``output`` when present) and the tensors of the MTP blocks, but no trunk
block.  llama.cpp's loaders (qwen35, qwen35moe, qwen3next, glm4moe, deepseek2, ...) detect
such a file by the missing ``blk.0.attn_norm.weight`` and load it as a draft model, so the
donor works with ``llama-server -m BASE -md DONOR`` (the speculative type is inferred from
``blk.{block_count-1}.nextn.eh_proj.weight``).  With ``heads_only`` the global tensors are
left out: a donor a fraction of the size (the embeddings dominate small models), fine for
grafting but not loadable on its own.  Provenance goes in ``harness.mtp_donor.*``.

Grafting copies the base file, drops any partial MTP tensors it has, appends the donor's
MTP block tensors, sets ``block_count`` to trunk + donor MTP layers and
``nextn_predict_layers`` to the donor's, and extends every per-layer metadata array (an
array as long as the base's ``block_count`` whose donor counterpart is as long as the
donor's ``block_count``) with the donor's entries for the MTP blocks.  It refuses (exit 2)
when architecture, hidden size, vocabulary size, trunk layer count or any other
hyperparameter differ.

Split inputs are read as whole sets (:mod:`harness.gguf_files.split`); the output is one
file, or a split set (``split``: at most so many tensors or bytes per shard, as
``llama-gguf-split`` does) whose shards carry consistent ``split.*`` keys.  The writer
checks the tensor count of what it wrote against what it was given, and the graft's
output is audited before it is published.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gguf import GGUFValueType

from harness import console
from harness.errors import InputError, StepError
from harness.gguf_files import audit, mtp
from harness.gguf_files.contents import KV
from harness.gguf_files.inspect import vocab_size
from harness.gguf_files.split import GGUFModel, model_kvs, open_model
from harness.gguf_files.writer import NO_SPLIT, Split, TensorSource, sha256, write_gguf

PROVENANCE_PREFIX = "harness."


@dataclass(frozen=True)
class SurgeryResult:
    output: str
    files: list[str]  # the output, or its shards
    size: int
    architecture: str
    block_count: int
    nextn_predict_layers: int
    mtp_tensors: list[str]
    tensors: int

    def to_json(self) -> dict[str, Any]:
        return vars(self)


def extract_mtp(src_path: Path, out: Path, *, heads_only: bool = False, split: Split = NO_SPLIT) -> SurgeryResult:
    """Write ``src_path``'s MTP layers to ``out``; ``heads_only`` leaves out the global tensors
    (a much smaller donor that can still be grafted, but no longer loads with ``-md``)."""
    with open_model(src_path) as src:
        lay = mtp.layout(src)
        report = audit.audit(src)
        if lay.nextn == 0:
            raise InputError(f"{src_path}: has no MTP layers to extract ({report.status})")
        if not report.ok:
            raise InputError(
                f"{src_path}: its MTP layers are not complete:\n  " + "\n  ".join(report.problems)
            )
        console.step(f"hashing {src.path.name} for the donor's provenance")
        digest = sha256(src.paths)
        kvs = [kv for kv in model_kvs(src) if not kv.key.startswith(PROVENANCE_PREFIX)]
        kvs += [
            KV("harness.mtp_donor.source_file", GGUFValueType.STRING, src.path.name),
            KV("harness.mtp_donor.source_sha256", GGUFValueType.STRING, digest),
            KV("harness.mtp_donor.trunk_layers", GGUFValueType.UINT32, lay.trunk_layers),
        ]
        keep = [
            t
            for t in src.tensors
            if lay.is_mtp(t.name) or (not heads_only and mtp.block_index(t.name) is None)
        ]
        heads = [t.name for t in keep if lay.is_mtp(t.name)]
        console.step(f"writing {len(heads)} MTP tensors (+{len(keep) - len(heads)} global) to {out}")
        written = write_gguf(
            out,
            arch=lay.arch,
            kvs=kvs,
            tensors=[TensorSource(t, src) for t in keep],
            alignment=src.alignment,
            inputs=src.paths,
            split=split,
        )
    return _result(written, lay.arch, lay.block_count, lay.nextn, heads)


def _result(written: GGUFModel, arch: str, block_count: int, nextn: int, heads: list[str]) -> SurgeryResult:
    files = [str(p) for p in written.paths]
    return SurgeryResult(files[0], files, written.size, arch, block_count, nextn, heads, len(written.tensors))


def graft(base_path: Path, donor_path: Path, out: Path, *, split: Split = NO_SPLIT) -> SurgeryResult:
    with open_model(base_path) as base, open_model(donor_path) as donor:
        bl, dl = mtp.layout(base), mtp.layout(donor)
        _check_donor(donor, dl)
        base_report = audit.audit(base)
        if base_report.status == "ok" and bl.nextn > 0:
            raise InputError(f"{base_path}: already has complete MTP layers; nothing to graft")
        _check_match(base, bl, donor, dl)

        trunk = bl.trunk_layers
        new_count = trunk + dl.nextn
        kvs = _grafted_kvs(base, bl, donor, dl, new_count)
        dropped = [t.name for t in base.tensors if _is_head(bl, t.name)]
        if dropped:
            console.warn(f"replacing {len(dropped)} partial MTP tensors of {base_path.name}")
        heads = [t for t in donor.tensors if _is_head(dl, t.name)]
        tensors = [TensorSource(t, base) for t in base.tensors if not _is_head(bl, t.name)]
        tensors += [TensorSource(t, donor) for t in heads]
        shards = f" ({len(base.shards)} shards)" if len(base.shards) > 1 else ""
        console.step(f"grafting {len(heads)} MTP tensors of {donor.path.name} into {base.path.name}{shards} -> {out}")
        written = write_gguf(
            out,
            arch=bl.arch,
            kvs=kvs,
            tensors=tensors,
            alignment=base.alignment,
            inputs=[*base.paths, *donor.paths],
            verify=_verify_graft,
            split=split,
        )
    return _result(written, bl.arch, new_count, dl.nextn, [t.name for t in heads])


def _is_head(lay: mtp.Layout, name: str) -> bool:
    """An MTP tensor, or any tensor in a block at or past the trunk's end."""
    block = mtp.block_index(name)
    return lay.is_mtp(name) or (block is not None and block >= lay.trunk_layers)


def _check_donor(donor: GGUFModel, dl: mtp.Layout) -> None:
    if dl.nextn == 0:
        raise InputError(f"{donor.path}: not an MTP donor: {dl.arch}.nextn_predict_layers is 0 or absent")
    report = audit.audit(donor)
    if not report.heads_complete:
        raise InputError(
            f"{donor.path}: the donor's MTP layers are not complete:\n  " + "\n  ".join(report.problems)
        )


def _check_match(base: GGUFModel, bl: mtp.Layout, donor: GGUFModel, dl: mtp.Layout) -> None:
    b, d = base.path.name, donor.path.name
    if bl.arch != dl.arch:
        raise InputError(f"architecture mismatch: {b} is {bl.arch}, {d} is {dl.arch}")
    key = f"{bl.arch}.embedding_length"
    if base.value(key) != donor.value(key):
        raise InputError(
            f"hidden size mismatch ({key}): {b} has {base.value(key)}, {d} has {donor.value(key)}"
        )
    bv, dv = vocab_size(base), vocab_size(donor)
    if bv != dv:
        raise InputError(f"vocabulary size mismatch: {b} has {bv} tokens, {d} has {dv}")
    if bl.trunk_layers != dl.trunk_layers:
        raise InputError(
            f"trunk layer count mismatch: {b} has {bl.trunk_layers} trunk layers, "
            f"{d} was cut from a model with {dl.trunk_layers}"
        )
    skip = {f"{bl.arch}.block_count", f"{bl.arch}.nextn_predict_layers"}
    differ = [
        f"{kv.key} ({kv.value!r} vs {donor.kv[kv.key].value!r})"
        for kv in base.kv.values()
        if kv.key.startswith(f"{bl.arch}.")
        and kv.key not in skip
        and not kv.is_array
        and kv.key in donor.kv
        and donor.kv[kv.key].value != kv.value
    ]
    if differ:
        raise InputError(f"hyperparameters differ between {b} and {d}: " + "; ".join(differ))
    if base.value("tokenizer.ggml.tokens") != donor.value("tokenizer.ggml.tokens"):
        console.warn(
            f"the tokenizers of {b} and {d} differ (same size); the MTP head predicts {d}'s token ids"
        )


def _grafted_kvs(base: GGUFModel, bl: mtp.Layout, donor: GGUFModel, dl: mtp.Layout, new_count: int) -> list[KV]:
    trunk = bl.trunk_layers
    count_key, nextn_key = f"{bl.arch}.block_count", f"{bl.arch}.nextn_predict_layers"
    out: list[KV] = []
    for kv in model_kvs(base):
        if kv.key == count_key:
            out.append(KV(kv.key, kv.type, new_count))
        elif kv.key == nextn_key:
            out.append(KV(kv.key, kv.type, dl.nextn))
        elif kv.is_array and len(kv.value) == bl.block_count:
            out.append(_extend_per_layer(base, kv, donor, dl, trunk))
        else:
            out.append(kv)
    if nextn_key not in base.kv:
        out.append(donor.kv[nextn_key])
    donor_digest = donor.value("harness.mtp_donor.source_sha256")
    out = [kv for kv in out if not kv.key.startswith("harness.mtp_graft.")]
    out.append(KV("harness.mtp_graft.donor_file", GGUFValueType.STRING, donor.path.name))
    if isinstance(donor_digest, str):
        out.append(KV("harness.mtp_graft.donor_source_sha256", GGUFValueType.STRING, donor_digest))
    return out


def _extend_per_layer(base: GGUFModel, kv: KV, donor: GGUFModel, dl: mtp.Layout, trunk: int) -> KV:
    theirs = donor.kv.get(kv.key)
    if theirs is None or not theirs.is_array or len(theirs.value) != dl.block_count:
        if kv.key.removeprefix(f"{dl.arch}.") in mtp.PER_LAYER_KEYS:
            raise InputError(
                f"cannot extend per-layer array {kv.key} ({len(kv.value)} entries): "
                f"{donor.path.name} has no {dl.block_count}-entry array for it"
            )
        return kv  # as long as block_count by coincidence (e.g. rope.dimension_sections): not per layer
    if theirs.sub_type != kv.sub_type or list(theirs.value[:trunk]) != list(kv.value[:trunk]):
        raise InputError(
            f"per-layer array {kv.key} differs between {base.path.name} and {donor.path.name} "
            "in the trunk layers: they are not the same model"
        )
    return KV(kv.key, kv.type, list(kv.value[:trunk]) + list(theirs.value[trunk:]), kv.sub_type)


def _verify_graft(gf: GGUFModel) -> None:
    report = audit.audit(gf)
    if report.status != "ok":
        raise StepError("the grafted file fails its MTP audit:\n  " + "\n  ".join(report.problems))
