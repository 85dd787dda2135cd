"""What a GGUF file holds once :mod:`harness.gguf_files.reader` has validated it: metadata entries
(arrays kept as the file holds them), tensor infos, and the file, its tensor data memory-mapped."""

from __future__ import annotations

import array
import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, overload

import numpy as np
from gguf import GGUFValueType

from harness.gguf_files.ggml_types import type_name

_U64 = struct.Struct("<Q")

INTEGER_TYPES = frozenset(
    {
        GGUFValueType.UINT8,
        GGUFValueType.INT8,
        GGUFValueType.UINT16,
        GGUFValueType.INT16,
        GGUFValueType.UINT32,
        GGUFValueType.INT32,
        GGUFValueType.UINT64,
        GGUFValueType.INT64,
    }
)


@dataclass(frozen=True)
class KV:
    """One metadata entry, with its GGUF type (and element type for arrays) kept for writing."""

    key: str
    type: GGUFValueType
    value: Any  # int | float | bool | str, or an Array (a sequence) of those for arrays
    sub_type: GGUFValueType | None = None

    @property
    def is_array(self) -> bool:
        return self.type == GGUFValueType.ARRAY


@dataclass(frozen=True)
class TensorInfo:
    name: str
    shape: tuple[int, ...]  # ggml order: ne[0] (the row length) first, as llama.cpp prints it
    type: int
    offset: int  # relative to the start of the data section (of its shard)
    nbytes: int
    n_elements: int
    shard: int = 0  # the index of the shard that holds it, in a split model

    @property
    def type_name(self) -> str:
        return type_name(self.type)


class GGUFFile:
    """A validated GGUF file: metadata and tensor infos in memory, tensor data memory-mapped."""

    def __init__(
        self,
        path: Path,
        *,
        size: int,
        version: int,
        alignment: int,
        data_offset: int,
        kv: dict[str, KV],
        tensors: tuple[TensorInfo, ...],
    ) -> None:
        self.path = path
        self.size = size
        self.version = version
        self.alignment = alignment
        self.data_offset = data_offset
        self.kv = kv
        self.tensors = tensors
        self._by_name = {t.name: t for t in tensors}
        self._map: np.memmap[Any, np.dtype[np.uint8]] | None = None

    def tensor(self, name: str) -> TensorInfo | None:
        return self._by_name.get(name)

    def value(self, key: str, default: Any = None) -> Any:
        kv = self.kv.get(key)
        return default if kv is None else kv.value

    def data(self, tensor: TensorInfo) -> np.ndarray[Any, np.dtype[np.uint8]]:
        """The tensor's bytes as a read-only view into the memory-mapped file (nothing is copied)."""
        if tensor.nbytes == 0:
            return np.zeros(0, dtype=np.uint8)
        if self._map is None:
            self._map = np.memmap(self.path, dtype=np.uint8, mode="r")
        start = self.data_offset + tensor.offset
        return self._map[start : start + tensor.nbytes]

    def close(self) -> None:
        self._map = None

    def __enter__(self) -> GGUFFile:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class Array(Sequence[Any]):
    """A metadata array, kept as the file holds it and read on access.

    A tokenizer's arrays hold millions of items; as Python lists they cost 20 to 40 times their
    bytes (a 19 MiB vocabulary took 442 MiB).  Numbers stay one numpy array (their size in the
    file); strings stay their bytes in the file's layout plus one 8-byte offset each.  Items come
    out as the plain Python values a list held (int, float, bool, str); it compares equal to a
    list or another array of the same items, and slices are lists.
    """

    __slots__ = ("_raw", "_starts", "_values", "sub_type")
    __hash__ = None  # type: ignore[assignment]  # mutable in spirit, like the list it stands for

    def __init__(self, sub_type: GGUFValueType, *, values: np.ndarray[Any, Any] | None = None, raw: bytes = b"",
                 starts: array.array[int] | None = None) -> None:
        self.sub_type = sub_type
        self._values = values
        self._raw = raw
        self._starts = starts if starts is not None else array.array("q")

    def __len__(self) -> int:
        return len(self._values) if self._values is not None else len(self._starts)

    def _item(self, i: int) -> Any:
        if self._values is not None:
            value = self._values[i].item()
            return bool(value) if self.sub_type == GGUFValueType.BOOL else value
        start = self._starts[i]
        (length,) = _U64.unpack_from(self._raw, start - 8)
        return self._raw[start : start + length].decode("utf-8")

    @overload
    def __getitem__(self, index: int) -> Any: ...
    @overload
    def __getitem__(self, index: slice) -> list[Any]: ...
    def __getitem__(self, index: int | slice) -> Any:
        if isinstance(index, slice):
            return [self._item(i) for i in range(*index.indices(len(self)))]
        n = len(self)
        if not -n <= index < n:
            raise IndexError("GGUF array index out of range")
        return self._item(index % n)

    def __iter__(self) -> Iterator[Any]:
        if self._values is None:
            yield from (self._item(i) for i in range(len(self)))
            return
        for at in range(0, len(self._values), 1 << 16):  # a chunk at a time: never the whole list
            chunk = self._values[at : at + (1 << 16)].tolist()
            yield from (bool(v) for v in chunk) if self.sub_type == GGUFValueType.BOOL else chunk

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Array):
            if len(self) != len(other) or (self._values is None) != (other._values is None):
                return False
            if self._values is not None and other._values is not None:
                return bool(np.array_equal(self._values, other._values))
            return self._raw == other._raw  # the same strings, length-prefixed, are the same bytes
        if isinstance(other, (list, tuple)):
            return len(self) == len(other) and all(a == b for a, b in zip(self, other, strict=True))
        return NotImplemented

    def __repr__(self) -> str:
        n = len(self)
        return repr(self[:]) if n <= 8 else f"[{', '.join(map(repr, self[:3]))}, ... ({n} items)]"
