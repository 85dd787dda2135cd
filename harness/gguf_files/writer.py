"""Write a GGUF model atomically with ``gguf.GGUFWriter``: one file, or a split set.

The output is built in a temp directory beside the target (gguf-py names the shards
``<stem>-00001-of-0000N.gguf`` there, with ``split.no/count/tensors.count`` and the
metadata in the first shard only, as ``llama-gguf-split`` does), read back as a model with
:func:`harness.gguf_files.split.from_files` (every shard through the bounded reader, the set's
consistency, the tensor count against what was asked), handed to ``verify``, synced, and only
then moved into place with ``os.replace``, one file after the other: an interrupted run
leaves the old output (or none), never a half-written file under the output's name.  The
shards of a set all carry one write id (``split.harness.write_id``, a key llama.cpp ignores)
and the first shard is moved last: a kill between two renames leaves a set whose shards
disagree, which every reader refuses (harness/gguf_files/split.py) and the next run replaces.
Inputs are only ever opened read-only, and an output path that is one of the inputs is refused.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from gguf import GGUFValueType, GGUFWriter
from gguf.gguf_writer import GGUFValue
from rich.progress import BarColumn, DownloadColumn, Progress, TaskID, TextColumn, TransferSpeedColumn

from harness import atomic, console, faults
from harness.errors import InputError, StepError
from harness.gguf_files.contents import KV, TensorInfo
from harness.gguf_files.ggml_types import ggml_type
from harness.gguf_files.reader import open_gguf
from harness.gguf_files.split import SPLIT_KEYS, SPLIT_WRITE_ID, GGUFModel, from_files, shard_path

PROGRESS_MIN_BYTES = 256 << 20


class _SetWriter(GGUFWriter):
    """GGUFWriter whose shards all carry one write id beside gguf-py's split keys."""

    write_id = ""

    def add_shard_kv_data(self) -> None:
        super().add_shard_kv_data()
        if len(self.tensors) > 1:
            for kv in self.kv_data:
                kv[SPLIT_WRITE_ID] = GGUFValue(self.write_id, GGUFValueType.STRING)


@dataclass(frozen=True)
class TensorSource:
    """A tensor of the output: its info (name, shape, type) and the model its bytes come from."""

    info: TensorInfo
    file: GGUFModel


@dataclass(frozen=True)
class Split:
    """How to split an output, as ``llama-gguf-split --split-max-tensors/--split-max-size`` does."""

    max_tensors: int = 0
    max_bytes: int = 0

    @property
    def wanted(self) -> bool:
        return self.max_tensors > 0 or self.max_bytes > 0


NO_SPLIT = Split()


def parse_size(text: str) -> int:
    """``500M`` / ``2G`` as llama-gguf-split reads them (decimal megabytes and gigabytes) -> bytes."""
    t = text.strip().upper()
    units = {"M": 1000**2, "G": 1000**3}
    if len(t) < 2 or t[-1] not in units or not t[:-1].isdigit() or int(t[:-1]) <= 0:
        raise InputError(f"split size {text!r}: give a whole number of megabytes or gigabytes, e.g. 500M or 2G")
    return int(t[:-1]) * units[t[-1]]


def write_gguf(
    out: Path,
    *,
    arch: str,
    kvs: Iterable[KV],
    tensors: Sequence[TensorSource],
    alignment: int,
    inputs: Sequence[Path],
    verify: Callable[[GGUFModel], None] | None = None,
    split: Split = NO_SPLIT,
) -> GGUFModel:
    """Write ``kvs`` and ``tensors`` to ``out`` (or its shards); return the written model, validated.

    ``verify`` sees the finished temp files as a model before they are published and may raise to stop that.
    The returned model is closed; its ``paths`` are the published files.
    """
    if out.is_dir():
        raise InputError(f"{out}: is a directory; give the output file's path")
    for src in {*inputs, *(p for t in tensors for p in t.file.paths)}:
        for target in (out, *out.parent.glob(f"{out.stem}-*-of-*.gguf")):
            if target.exists() and _same_file(target, src):
                raise InputError(f"{target}: refusing to overwrite an input file; choose another output path")

    logging.getLogger("gguf").setLevel(logging.WARNING)
    with atomic.temp_dir_beside(out) as tmp_dir:
        writer = _SetWriter(
            None, arch, split_max_tensors=split.max_tensors, split_max_size=split.max_bytes
        )
        writer.write_id = uuid.uuid4().hex
        writer.data_alignment = alignment
        for kv in kvs:
            if kv.key == "general.architecture" or kv.key in SPLIT_KEYS:
                continue  # GGUFWriter writes the architecture first and the split keys of each shard
            if kv.type == GGUFValueType.ARRAY and not kv.value:
                console.warn(f"dropping empty metadata array {kv.key} (gguf-py cannot write empty arrays)")
                continue
            writer.add_key_value(kv.key, kv.value, kv.type, kv.sub_type)
        for t in tensors:
            # shape in numpy order (outermost first); with a raw ggml type the dtype is not used
            writer.add_tensor_info(
                t.info.name,
                tuple(reversed(t.info.shape)),
                np.dtype(np.float32),
                t.info.nbytes,
                raw_dtype=ggml_type(t.info.type),
            )
        n_files = len(writer.tensors)
        temp_paths = writer.format_shard_names(tmp_dir / out.name)
        try:
            writer.write_header_to_file(path=tmp_dir / out.name)
            writer.write_kv_data_to_file()
            writer.write_ti_data_to_file()
            _write_data(writer, tensors)
            writer.close()
            for p in temp_paths:
                with open(p, "rb+") as f:
                    os.fsync(f.fileno())
        except OSError as exc:
            raise StepError(f"{out}: writing failed: {exc.strerror or exc}") from None
        finally:
            writer.close()
        written = from_files([open_gguf(p) for p in temp_paths])  # what we wrote must pass our own checks
        try:
            if len(written.tensors) != len(tensors):
                raise StepError(f"{out}: {len(written.tensors)} tensors written, {len(tensors)} expected")
            if verify is not None:
                verify(written)
        finally:
            written.close()
        finals = [out] if n_files == 1 else [shard_path(out.with_suffix(""), i, n_files) for i in range(n_files)]
        faults.point("gguf:written")  # complete and checked, not yet in place (tests/faults)
        moves = list(zip(temp_paths, finals, strict=True))
        for i, (tmp, final) in enumerate(moves[1:] + moves[:1]):  # the first shard last (see above)
            if i:
                faults.point("gguf:shard-moved")  # a set half old, half new (tests/faults)
            os.replace(tmp, final)
    if split.wanted and n_files == 1:
        console.warn(f"{out.name}: everything fits in one file, so it was not split")
    result = from_files([open_gguf(p) for p in finals])
    result.close()
    return result


def byte_progress(description: str, total: int) -> tuple[Progress, TaskID]:
    """A progress bar over ``total`` bytes on stderr, shown for big jobs on a terminal only."""
    show = total >= PROGRESS_MIN_BYTES and console.err_console().is_terminal
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        console=console.err_console(),
        transient=True,
        disable=not show,
    )
    return progress, progress.add_task(console.literal(description), total=total)


def sha256(paths: Sequence[Path], chunk: int = 8 << 20) -> str:
    """The sha256 of a file (as Hugging Face lists it for LFS files), or of a set's shards in order."""
    h = hashlib.sha256()
    progress, task = byte_progress(f"hashing {paths[0].name}", sum(p.stat().st_size for p in paths))
    with progress:
        for path in paths:
            with open(path, "rb") as f:
                while block := f.read(chunk):
                    h.update(block)
                    progress.advance(task, len(block))
    return h.hexdigest()


def _write_data(writer: GGUFWriter, tensors: Sequence[TensorSource]) -> None:
    progress, task = byte_progress("writing tensors", sum(t.info.nbytes for t in tensors))
    with progress:
        for t in tensors:
            writer.write_tensor_data(t.file.data(t.info))
            progress.advance(task, t.info.nbytes)


def _same_file(a: Path, b: Path) -> bool:
    with contextlib.suppress(OSError):
        return os.path.samefile(a, b)
    return False
