"""Write a GGUF atomically with ``gguf.GGUFWriter``, streaming tensor data from memory-mapped inputs.

The output is built in a temp file beside the target, validated by reading it back with
:func:`harness.gguf_files.reader.open_gguf`, synced, and only then moved over the target
with ``os.replace``: an interrupted run leaves the old file (or none), never half a file.
Inputs are only ever opened read-only, and an output path that is one of the inputs is refused.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from gguf import GGUFValueType, GGUFWriter
from rich.progress import BarColumn, DownloadColumn, Progress, TaskID, TextColumn, TransferSpeedColumn

from harness import atomic, console
from harness.errors import InputError, StepError
from harness.gguf_files.reader import KV, GGUFFile, TensorInfo, ggml_type, open_gguf

PROGRESS_MIN_BYTES = 256 << 20


@dataclass(frozen=True)
class TensorSource:
    """A tensor of the output: its info (name, shape, type) and the file its bytes come from."""

    info: TensorInfo
    file: GGUFFile


def write_gguf(
    out: Path,
    *,
    arch: str,
    kvs: Iterable[KV],
    tensors: Sequence[TensorSource],
    alignment: int,
    inputs: Sequence[Path],
    verify: Callable[[GGUFFile], None] | None = None,
) -> GGUFFile:
    """Write ``kvs`` and ``tensors`` to ``out``; return the written file, opened and validated.

    ``verify`` sees the finished temp file before it is published and may raise to stop that.
    """
    for src in {*inputs, *(t.file.path for t in tensors)}:
        if out.exists() and _same_file(out, src):
            raise InputError(f"{out}: refusing to overwrite an input file; choose another output path")
    if out.is_dir():
        raise InputError(f"{out}: is a directory; give the output file's path")

    logging.getLogger("gguf").setLevel(logging.WARNING)
    with atomic.temp_file_beside(out) as tmp:
        writer = GGUFWriter(tmp, arch)
        writer.data_alignment = alignment
        for kv in kvs:
            if kv.key == "general.architecture":
                continue  # GGUFWriter writes it first, from ``arch``
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
        try:
            writer.write_header_to_file()
            writer.write_kv_data_to_file()
            writer.write_ti_data_to_file()
            _write_data(writer, tensors)
            writer.close()
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
        except OSError as exc:
            raise StepError(f"{out}: writing failed: {exc.strerror or exc}") from None
        finally:
            writer.close()
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the file the mode ``open`` would
        written = open_gguf(tmp)  # what we wrote must pass our own checks before it is published
        if verify is not None:
            verify(written)
        written.close()
    written.path = out
    return written


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
    return progress, progress.add_task(description, total=total)


def sha256(path: Path, chunk: int = 8 << 20) -> str:
    """The file's sha256 (as Hugging Face lists it for LFS files), with a progress bar."""
    h = hashlib.sha256()
    progress, task = byte_progress(f"hashing {path.name}", path.stat().st_size)
    with progress, open(path, "rb") as f:
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


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _same_file(a: Path, b: Path) -> bool:
    with contextlib.suppress(OSError):
        return os.path.samefile(a, b)
    return False
