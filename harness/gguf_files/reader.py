"""Open a GGUF file and validate it with bounded reads before anything trusts it.

The header, the metadata (KV) section and the tensor-info section are parsed here,
checking every count and length against the bytes that are actually left in the file,
so a malformed or hostile file is rejected with an :class:`InputError` naming the file
and the problem (never a traceback, never an allocation sized by a field of the file).
The checks follow ``ggml/src/gguf.cpp`` of llama.cpp: magic, version 2 or 3, little
endian, KV types, no nested arrays, unique non-empty keys, ``general.alignment`` a power
of two, unique tensor names shorter than 64 bytes, at most 4 dimensions, element counts
that fit in int64, rows a multiple of the type's block size, and tensor data packed in
order, aligned, and inside the file.

Tensor data is never read here: :meth:`GGUFFile.data` returns a read-only memory map
of one tensor's bytes, so copying a tensor streams it from the page cache.

Why not ``gguf.GGUFReader``: it trusts the file's counts (a bad header makes it
allocate or throw odd exceptions) and it is slow on real tokenizers (about 9 s to open
a file with Qwen's 151,936-token vocabulary, since it builds a numpy view per array
element).  What a parsed file holds (:class:`GGUFFile`, its metadata and tensor infos) is
:mod:`harness.gguf_files.contents`; the ggml type table is :mod:`harness.gguf_files.ggml_types`.

One file is one shard; :mod:`harness.gguf_files.split` reads a split model as a set.
"""

from __future__ import annotations

import array
import errno
import mmap
import os
import stat
import struct
from pathlib import Path
from typing import Any

import numpy as np
from gguf import GGUFValueType

from harness.errors import InputError, about_file
from harness.gguf_files.contents import KV, Array, GGUFFile, TensorInfo
from harness.gguf_files.ggml_types import TYPES

MAGIC = b"GGUF"
SUPPORTED_VERSIONS = (2, 3)
DEFAULT_ALIGNMENT = 32
MAX_KEY_LENGTH = 65535  # the GGUF spec: keys are at most 2^16-1 bytes
MAX_STRING_LENGTH = 1 << 30  # GGUF_MAX_STRING_LENGTH in gguf.cpp
MAX_ARRAY_ELEMENTS = 1 << 30  # GGUF_MAX_ARRAY_ELEMENTS in gguf.cpp
MAX_TENSOR_NAME = 63  # GGML_MAX_NAME (64) including the terminating NUL
MAX_DIMS = 4
INT64_MAX = (1 << 63) - 1

_SCALARS: dict[GGUFValueType, tuple[str, int]] = {
    GGUFValueType.UINT8: ("<B", 1),
    GGUFValueType.INT8: ("<b", 1),
    GGUFValueType.UINT16: ("<H", 2),
    GGUFValueType.INT16: ("<h", 2),
    GGUFValueType.UINT32: ("<I", 4),
    GGUFValueType.INT32: ("<i", 4),
    GGUFValueType.FLOAT32: ("<f", 4),
    GGUFValueType.BOOL: ("<?", 1),
    GGUFValueType.UINT64: ("<Q", 8),
    GGUFValueType.INT64: ("<q", 8),
    GGUFValueType.FLOAT64: ("<d", 8),
}
_NUMPY: dict[GGUFValueType, str] = {
    GGUFValueType.UINT8: "<u1",
    GGUFValueType.INT8: "<i1",
    GGUFValueType.UINT16: "<u2",
    GGUFValueType.INT16: "<i2",
    GGUFValueType.UINT32: "<u4",
    GGUFValueType.INT32: "<i4",
    GGUFValueType.FLOAT32: "<f4",
    GGUFValueType.BOOL: "<u1",
    GGUFValueType.UINT64: "<u8",
    GGUFValueType.INT64: "<i8",
    GGUFValueType.FLOAT64: "<f8",
}


class _Malformed(Exception):
    pass


class _Cursor:
    """Reads from a mapped file; every read first checks that the bytes exist."""

    def __init__(self, buf: mmap.mmap, size: int) -> None:
        self.buf = buf
        self.size = size
        self.pos = 0

    def left(self) -> int:
        return self.size - self.pos

    def need(self, n: int, what: str) -> None:
        if n > self.left():
            raise _Malformed(
                f"truncated at offset {self.pos}: {what} takes {n} bytes, only {self.left()} are left"
            )

    def scalar(self, vtype: GGUFValueType, what: str) -> Any:
        fmt, n = _SCALARS[vtype]
        self.need(n, what)
        (value,) = struct.unpack_from(fmt, self.buf, self.pos)
        self.pos += n
        return value

    def u32(self, what: str) -> int:
        return int(self.scalar(GGUFValueType.UINT32, what))

    def u64(self, what: str) -> int:
        return int(self.scalar(GGUFValueType.UINT64, what))

    def string(self, what: str, limit: int = MAX_STRING_LENGTH) -> str:
        n = self.u64(f"the length of {what}")
        if n > limit:
            raise _Malformed(f"{what} claims a length of {n} bytes (the limit is {limit})")
        self.need(n, what)
        raw = self.buf[self.pos : self.pos + n]
        self.pos += n
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise _Malformed(f"{what} is not valid UTF-8") from None


def open_gguf(path: str | os.PathLike[str]) -> GGUFFile:
    """Parse and validate ``path``; an :class:`InputError` naming the file (its message and its
    ``file``, for --json) says what is wrong."""
    path = Path(path)
    with about_file(path):
        return _open(path)


def _open(path: Path) -> GGUFFile:
    try:
        mode = os.stat(path).st_mode  # before open: a FIFO would block it
        if stat.S_ISDIR(mode):
            raise IsADirectoryError
        if not stat.S_ISREG(mode):
            raise InputError(f"{path}: not a regular file (a FIFO, device or socket), not a GGUF file")
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size < 4:
                raise InputError(f"{path}: not a GGUF file (only {size} bytes)")
            with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
                try:
                    return _parse(path, buf, size)
                except _Malformed as exc:
                    raise InputError(f"{path}: malformed GGUF: {exc}") from None
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise InputError(f"{path}: is a directory, not a GGUF file") from None
    except PermissionError:
        raise InputError(f"{path}: permission denied") from None
    except OSError as exc:  # a symlink loop; a file that cannot be mapped (sysfs, procfs)
        why = "a symlink loop" if exc.errno == errno.ELOOP else exc.strerror or str(exc)
        raise InputError(f"{path}: cannot read: {why}") from None


def _parse(path: Path, buf: mmap.mmap, size: int) -> GGUFFile:
    cur = _Cursor(buf, size)
    magic = buf[0:4]
    if magic != MAGIC:
        raise InputError(f"{path}: not a GGUF file (magic {magic!r}, expected b'GGUF')")
    cur.pos = 4
    version = cur.u32("the version")
    if version not in SUPPORTED_VERSIONS and version & 0xFFFF == 0 and version != 0:
        raise _Malformed(
            f"version field 0x{version:08x} looks byte-swapped: big-endian GGUF is not supported"
        )
    if version not in SUPPORTED_VERSIONS:
        raise _Malformed(f"unsupported GGUF version {version} (supported: 2 and 3)")
    n_tensors = cur.u64("the tensor count")
    n_kv = cur.u64("the metadata count")
    # smallest possible entries: a KV is key length + 1 byte key + type + 1 byte value,
    # a tensor info is name length + n_dims + type + offset
    if n_kv * 14 > cur.left():
        raise _Malformed(f"header claims {n_kv} metadata entries, more than the file's {size} bytes can hold")
    if n_tensors * 24 > cur.left():
        raise _Malformed(f"header claims {n_tensors} tensors, more than the file's {size} bytes can hold")

    kv: dict[str, KV] = {}
    for i in range(n_kv):
        key = cur.string(f"the key of metadata entry {i}", MAX_KEY_LENGTH)
        if not key:
            raise _Malformed(f"metadata entry {i} has an empty key")
        if key in kv:
            raise _Malformed(f"duplicate metadata key {key!r}")
        kv[key] = _read_value(cur, key)

    alignment = DEFAULT_ALIGNMENT
    if "general.alignment" in kv:
        entry = kv["general.alignment"]
        if entry.type != GGUFValueType.UINT32:
            raise _Malformed(f"general.alignment must be a uint32, not {entry.type.name.lower()}")
        alignment = int(entry.value)
        if alignment == 0 or alignment & (alignment - 1):
            raise _Malformed(f"general.alignment {alignment} is not a power of two")

    infos: list[tuple[str, tuple[int, ...], int, int, int, int]] = []
    seen: set[str] = set()
    for i in range(n_tensors):
        name = cur.string(f"the name of tensor {i}", MAX_STRING_LENGTH)
        if len(name.encode("utf-8")) > MAX_TENSOR_NAME:
            raise _Malformed(
                f"tensor {i} has a name of {len(name.encode())} bytes (llama.cpp allows {MAX_TENSOR_NAME})"
            )
        if name in seen:
            raise _Malformed(f"duplicate tensor name {name!r}")
        seen.add(name)
        n_dims = cur.u32(f"the dimension count of tensor {name!r}")
        if n_dims > MAX_DIMS:
            raise _Malformed(f"tensor {name!r} has {n_dims} dimensions (at most {MAX_DIMS})")
        shape = tuple(cur.u64(f"dimension {j} of tensor {name!r}") for j in range(n_dims))
        n_elements = 1
        for d in shape:
            if d > INT64_MAX:
                raise _Malformed(f"tensor {name!r} has a negative dimension ({d - (1 << 64)})")
            n_elements *= d
        if n_elements > INT64_MAX:
            raise _Malformed(f"tensor {name!r} has shape {list(shape)}: its element count overflows int64")
        type_id = cur.u32(f"the type of tensor {name!r}")
        if type_id not in TYPES:
            raise _Malformed(
                f"tensor {name!r} has unknown ggml type {type_id} "
                "(a type of a newer llama.cpp or a fork? give its build with --build)"
            )
        tname, block, tsize = TYPES[type_id]
        row = shape[0] if shape else 1
        if row % block:
            raise _Malformed(
                f"tensor {name!r} of type {tname} has rows of {row} elements, not a multiple of {block}"
            )
        offset = cur.u64(f"the data offset of tensor {name!r}")
        infos.append((name, shape, type_id, offset, n_elements // block * tsize, n_elements))

    data_offset = _pad(cur.pos, alignment) if n_tensors else cur.pos
    tensors: list[TensorInfo] = []
    expected = 0
    for name, shape, type_id, offset, nbytes, n_elements in infos:
        if offset % alignment:
            raise _Malformed(f"tensor {name!r} has data offset {offset}, not aligned to {alignment} bytes")
        if offset != expected:
            raise _Malformed(
                f"tensor {name!r} has data offset {offset}, expected {expected} "
                "(llama.cpp requires tensor data packed in order, each padded to the alignment)"
            )
        end = data_offset + offset + nbytes
        if end > size:
            raise _Malformed(
                f"truncated: tensor {name!r} data ends at byte {end}, but the file has {size} bytes"
            )
        tensors.append(TensorInfo(name, shape, type_id, offset, nbytes, n_elements))
        expected = offset + _pad(nbytes, alignment)

    return GGUFFile(
        path,
        size=size,
        version=version,
        alignment=alignment,
        data_offset=data_offset,
        kv=kv,
        tensors=tuple(tensors),
    )


def _read_value(cur: _Cursor, key: str) -> KV:
    raw_type = cur.u32(f"the type of {key!r}")
    vtype = _value_type(raw_type, key)
    if vtype == GGUFValueType.STRING:
        return KV(key, vtype, cur.string(f"the value of {key!r}"))
    if vtype != GGUFValueType.ARRAY:
        return KV(key, vtype, cur.scalar(vtype, f"the value of {key!r}"))
    sub = _value_type(cur.u32(f"the element type of {key!r}"), key)
    if sub == GGUFValueType.ARRAY:
        raise _Malformed(f"{key!r} is an array of arrays, which llama.cpp does not support")
    n = cur.u64(f"the length of {key!r}")
    if n > MAX_ARRAY_ELEMENTS:
        raise _Malformed(f"{key!r} claims {n} elements (the limit is {MAX_ARRAY_ELEMENTS})")
    if sub == GGUFValueType.STRING:
        if n * 8 > cur.left():
            raise _Malformed(f"{key!r} claims {n} strings, more than the rest of the file can hold")
        return KV(key, vtype, _string_array(cur, key, n), sub)
    width = _SCALARS[sub][1]
    cur.need(n * width, f"the {n} elements of {key!r}")
    values = np.frombuffer(cur.buf, dtype=_NUMPY[sub], count=n, offset=cur.pos).copy()  # the map closes after parsing
    cur.pos += n * width
    return KV(key, vtype, Array(sub, values=values), sub)


_U64 = struct.Struct("<Q")


def _string_array(cur: _Cursor, key: str, n: int) -> Array:
    """``n`` strings (a tokenizer's vocabulary): the checks of :meth:`_Cursor.string` in one tight loop.
    Each is decoded once to check it is UTF-8 and dropped; the array keeps the bytes and where each starts."""
    buf, pos, size, unpack = cur.buf, cur.pos, cur.size, _U64.unpack_from
    first = pos
    starts = array.array("q")
    append = starts.append
    try:
        for i in range(n):
            if pos + 8 > size:
                raise _Malformed(f"truncated at offset {pos}: element {i} of {key!r}")
            (length,) = unpack(buf, pos)
            pos += 8
            if length > MAX_STRING_LENGTH or pos + length > size:
                raise _Malformed(f"element {i} of {key!r} claims a length of {length} bytes, {size - pos} are left")
            buf[pos : pos + length].decode("utf-8")
            append(pos - first)
            pos += length
    except UnicodeDecodeError:
        raise _Malformed(f"element {len(starts)} of {key!r} is not valid UTF-8") from None
    cur.pos = pos
    return Array(GGUFValueType.STRING, raw=buf[first:pos], starts=starts)


def _value_type(raw: int, key: str) -> GGUFValueType:
    try:
        return GGUFValueType(raw)
    except ValueError:
        raise _Malformed(f"{key!r} has unknown value type {raw}") from None


def _pad(n: int, alignment: int) -> int:
    return (n + alignment - 1) // alignment * alignment
