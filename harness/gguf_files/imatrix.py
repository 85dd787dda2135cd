"""Importance matrix files in both formats llama-quantize reads, told apart by their content.

- **GGUF** (llama.cpp since 2025, ``llama-imatrix`` by default): a tensor pair
  ``<name>.in_sum2`` / ``<name>.counts`` (both F32) per weight, and the metadata
  ``imatrix.datasets``, ``imatrix.chunk_count``, ``imatrix.chunk_size`` that llama-quantize
  requires ("missing imatrix metadata").
- **legacy .dat** (older pins, forks such as ik_llama.cpp, ``--output-format dat``):
  ``int32 n_entries``, then per entry ``int32 len, name[len], int32 ncall, int32 nval,
  float32[nval]``, then optionally ``int32 chunks, int32 len, dataset[len]``.

This mirrors ``common_imatrix_load`` (common/imatrix-loader.cpp): a file that does not parse
as GGUF is read as legacy.  Every count is checked against the bytes left before it is used.
"""

from __future__ import annotations

import mmap
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.errors import InputError
from harness.gguf_files.contents import Array
from harness.gguf_files.ggml_types import type_name
from harness.gguf_files.reader import MAGIC, open_gguf

SUM_SUFFIX, COUNT_SUFFIX = ".in_sum2", ".counts"
METADATA = ("imatrix.datasets", "imatrix.chunk_count", "imatrix.chunk_size")
MAX_NAME = 1 << 16


@dataclass(frozen=True)
class Imatrix:
    path: str
    format: str  # "gguf" or "dat"
    entries: int  # weights with importance data
    chunks: int | None
    datasets: list[str]

    def to_json(self) -> dict[str, Any]:
        return {"imatrix_format": self.format, "imatrix_tensors": self.entries, "imatrix_chunks": self.chunks,
                "imatrix_datasets": self.datasets}  # fmt: skip


def read(path: Path) -> Imatrix:
    """Detect the format of ``path`` and check it; an InputError says what is wrong."""
    with open(path, "rb") as f:
        head = f.read(4)
    return _gguf(path) if head == MAGIC else _legacy(path)


def _gguf(path: Path) -> Imatrix:
    with open_gguf(path) as gf:
        sums = {t.name.removesuffix(SUM_SUFFIX): t for t in gf.tensors if t.name.endswith(SUM_SUFFIX)}
        counts = {t.name.removesuffix(COUNT_SUFFIX): t for t in gf.tensors if t.name.endswith(COUNT_SUFFIX)}
        if not sums:
            raise InputError(f"{path}: an imatrix GGUF without importance data (no *{SUM_SUFFIX} tensors)")
        unpaired = sorted(set(sums) ^ set(counts))
        if unpaired:
            raise InputError(f"{path}: mismatched sums and counts for {', '.join(unpaired[:5])}")
        bad = sorted(n for n in sums if sums[n].type_name != "F32" or counts[n].type_name != "F32")
        if bad:
            kinds = {type_name(sums[n].type) for n in bad}
            raise InputError(f"{path}: sums and counts must be F32 ({', '.join(bad[:5])} are {', '.join(kinds)})")
        missing = [key for key in METADATA if key not in gf.kv]
        if missing:
            raise InputError(f"{path}: missing imatrix metadata {', '.join(missing)} (llama-quantize refuses it)")
        datasets = gf.value("imatrix.datasets")
        chunks = gf.value("imatrix.chunk_count")
        return Imatrix(
            str(path), "gguf", len(sums), chunks if isinstance(chunks, int) else None,
            [d for d in datasets if isinstance(d, str)] if isinstance(datasets, (list, Array)) else [],
        )  # fmt: skip


def _legacy(path: Path) -> Imatrix:
    if os.path.getsize(path) < 4:
        raise InputError(f"{path}: not an importance matrix (GGUF or legacy .dat): {os.path.getsize(path)} bytes")
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
        return _parse_legacy(path, data)


def _parse_legacy(path: Path, data: mmap.mmap) -> Imatrix:
    pos = 0

    def i32(what: str) -> int:
        nonlocal pos
        if pos + 4 > len(data):
            raise InputError(f"{path}: not an importance matrix (GGUF or legacy .dat): truncated at {what}")
        (value,) = struct.unpack_from("<i", data, pos)
        pos += 4
        return int(value)

    n_entries = i32("the entry count")
    if n_entries < 1 or n_entries * 12 > len(data) - pos:
        raise InputError(f"{path}: not an importance matrix (GGUF or legacy .dat): {n_entries} entries in {len(data)} bytes")
    for i in range(n_entries):
        n = i32(f"the name length of entry {i + 1}")
        if not 0 < n <= min(MAX_NAME, len(data) - pos):
            raise InputError(f"{path}: legacy imatrix entry {i + 1} has a name of {n} bytes")
        name = data[pos : pos + n]
        pos += n
        i32(f"the call count of entry {i + 1}")
        nval = i32(f"the value count of entry {i + 1}")
        if nval < 1 or nval * 4 > len(data) - pos:
            raise InputError(
                f"{path}: legacy imatrix entry {name.decode(errors='replace')!r} claims {nval} values, "
                f"{len(data) - pos} bytes are left"
            )
        pos += nval * 4
    chunks: int | None = None
    datasets: list[str] = []
    if pos + 4 <= len(data):
        chunks = i32("the chunk count")
        if pos + 4 <= len(data):
            n = i32("the dataset name length")
            if 0 < n <= len(data) - pos:
                datasets.append(data[pos : pos + n].decode("utf-8", errors="replace"))
    return Imatrix(str(path), "dat", n_entries, chunks, datasets)
