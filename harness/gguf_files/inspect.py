"""A summary of one GGUF model (a file or a split set): architecture, MTP layout, every tensor, trunk/MTP totals."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from harness.gguf_files import mtp
from harness.gguf_files.contents import Array, TensorInfo
from harness.gguf_files.split import GGUFModel


@dataclass(frozen=True)
class Part:
    """Totals over a set of tensors."""

    tensors: int = 0
    params: int = 0
    bytes: int = 0

    def add(self, t: TensorInfo) -> Part:
        return Part(self.tensors + 1, self.params + t.n_elements, self.bytes + t.nbytes)


@dataclass(frozen=True)
class Inspection:
    path: str
    shards: list[tuple[str, int, int]]  # (path, bytes, tensors) of each file
    draft: bool  # an MTP-only draft or assistant file
    file_size: int
    version: int
    alignment: int
    layout: mtp.Layout
    embedding_length: int | None
    vocab_size: int | None
    metadata_count: int
    tensors: tuple[TensorInfo, ...]
    mtp_names: frozenset[str]
    trunk: Part = field(default_factory=Part)
    mtp: Part = field(default_factory=Part)

    def to_json(self) -> dict[str, Any]:
        lay = self.layout
        return {
            "file": self.path,
            "shards": [{"file": p, "size": size, "tensors": n} for p, size, n in self.shards],
            "draft": self.draft,
            "file_size": self.file_size,
            "gguf_version": self.version,
            "alignment": self.alignment,
            "architecture": lay.arch,
            "block_count": lay.block_count,
            "nextn_predict_layers": lay.nextn,
            "trunk_layers": lay.trunk_layers,
            "mtp_layers": list(lay.mtp_layers),
            "arch_supports_mtp": lay.arch_supports_mtp,
            "embedding_length": self.embedding_length,
            "vocab_size": self.vocab_size,
            "metadata_count": self.metadata_count,
            "tensors": [
                {
                    "name": t.name,
                    "type": t.type_name,
                    "shape": list(t.shape),
                    "params": t.n_elements,
                    "bytes": t.nbytes,
                    "mtp": t.name in self.mtp_names,
                    **({"shard": t.shard + 1} if len(self.shards) > 1 else {}),
                }
                for t in self.tensors
            ],
            "totals": {
                "trunk": vars(self.trunk),
                "mtp": vars(self.mtp),
                "all": {
                    "tensors": self.trunk.tensors + self.mtp.tensors,
                    "params": self.trunk.params + self.mtp.params,
                    "bytes": self.trunk.bytes + self.mtp.bytes,
                },
            },
        }


def inspect(gf: GGUFModel) -> Inspection:
    lay = mtp.layout(gf)
    trunk, head = Part(), Part()
    mtp_names = set()
    for t in gf.tensors:
        if lay.is_mtp(t.name):
            mtp_names.add(t.name)
            head = head.add(t)
        else:
            trunk = trunk.add(t)
    counts = [0] * len(gf.shards)
    for t in gf.tensors:
        counts[t.shard] += 1
    return Inspection(
        path=str(gf.path),
        shards=[(str(s.path), s.size, n) for s, n in zip(gf.shards, counts, strict=True)],
        draft=mtp.is_draft_only(gf, lay),
        file_size=gf.size,
        version=gf.version,
        alignment=gf.alignment,
        layout=lay,
        embedding_length=_int_or_none(gf.value(f"{lay.arch}.embedding_length")),
        vocab_size=vocab_size(gf),
        metadata_count=len(gf.kv),
        tensors=gf.tensors,
        mtp_names=frozenset(mtp_names),
        trunk=trunk,
        mtp=head,
    )


def vocab_size(gf: GGUFModel) -> int | None:
    """Rows of token_embd (what the weights need), else the tokenizer's token count."""
    embd = gf.tensor("token_embd.weight")
    if embd is not None and len(embd.shape) >= 2:
        return embd.shape[1]
    tokens = gf.value("tokenizer.ggml.tokens")
    return len(tokens) if isinstance(tokens, (list, Array)) else None


def _int_or_none(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None
