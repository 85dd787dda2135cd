"""A model as llama.cpp loads it: one GGUF file, or every shard of a split set.

Split GGUFs (``llama-gguf-split``, ``convert_hf_to_gguf.py --split-max-*``, ``llama-quantize
--keep-split``) are named ``<prefix>-00001-of-00003.gguf`` ... and carry ``split.no`` (u16,
0-based), ``split.count`` (u16) and ``split.tensors.count`` (i32); the first shard holds the
metadata, every shard some tensors.  :func:`open_model` reads a set the way
``llama_model_loader`` does (src/llama-model-loader.cpp, ``llama_split_path`` and
``llama_split_prefix`` in src/llama.cpp): shard *i* of a set whose first shard is
``<prefix>-00001-of-0000N.gguf`` is ``<prefix>-0000i-of-0000N.gguf``; each shard must be
there, say ``split.no = i-1`` and the same ``split.count``, no tensor may appear twice, and
the tensors of all shards together must number ``split.tensors.count``.  Sets the harness
wrote carry one ``split.harness.write_id`` in every shard; shards that disagree on it are
two writes mixed (a kill between renames) and refused.

Given a later shard, the set is read from its first shard (llama.cpp itself refuses a later
shard: "model must be loaded with the first split"), with a notice naming the first shard;
when that first shard is missing, the error names it.  Every error is an
:class:`InputError` naming the shard.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np

from harness import console
from harness.errors import InputError, about_file
from harness.gguf_files.contents import INTEGER_TYPES, KV, GGUFFile, TensorInfo
from harness.gguf_files.reader import open_gguf

SPLIT_NO, SPLIT_COUNT, SPLIT_TENSORS = "split.no", "split.count", "split.tensors.count"
# the harness's own: one value in every shard of a set it wrote (harness/gguf_files/writer.py)
SPLIT_WRITE_ID = "split.harness.write_id"
SPLIT_KEYS = frozenset({SPLIT_NO, SPLIT_COUNT, SPLIT_TENSORS, SPLIT_WRITE_ID})
MAX_SHARDS = 0xFFFF  # split.count is a u16
_SHARD_NAME = re.compile(r"^(?P<prefix>.+)-(?P<no>\d{5})-of-(?P<count>\d{5})\.gguf$")


def shard_path(prefix: Path, index: int, count: int) -> Path:
    """``llama_split_path``: shard ``index`` (0-based) of ``count`` for ``prefix``."""
    return prefix.with_name(f"{prefix.name}-{index + 1:05d}-of-{count:05d}.gguf")


def split_prefix(path: Path, index: int, count: int) -> Path | None:
    """``llama_split_prefix``: the prefix of ``path`` when its name ends like shard ``index`` of ``count``."""
    suffix = f"-{index + 1:05d}-of-{count:05d}.gguf"
    if len(path.name) <= len(suffix) or not path.name.endswith(suffix):
        return None
    return path.with_name(path.name[: -len(suffix)])


def is_shard_name(path: Path) -> bool:
    return _SHARD_NAME.match(path.name) is not None


class GGUFModel:
    """Metadata (the first shard's) and the tensors of every shard; tensor data stays memory-mapped.

    ``kv`` keeps the ``split.*`` keys as read; writers drop them (:func:`model_kvs`).
    """

    def __init__(self, shards: Sequence[GGUFFile]) -> None:
        self.shards = tuple(shards)
        first = self.shards[0]
        self.path = first.path
        self.version = first.version
        self.alignment = first.alignment
        self.kv: dict[str, KV] = first.kv
        tensors: list[TensorInfo] = []
        for i, shard in enumerate(self.shards):
            tensors += [t if t.shard == i else replace(t, shard=i) for t in shard.tensors]
        self.tensors = tuple(tensors)
        self._by_name = {t.name: t for t in self.tensors}

    @property
    def size(self) -> int:
        return sum(s.size for s in self.shards)

    @property
    def is_split(self) -> bool:
        return len(self.shards) > 1 or SPLIT_COUNT in self.kv

    @property
    def paths(self) -> list[Path]:
        return [s.path for s in self.shards]

    def tensor(self, name: str) -> TensorInfo | None:
        return self._by_name.get(name)

    def value(self, key: str, default: Any = None) -> Any:
        kv = self.kv.get(key)
        return default if kv is None else kv.value

    def data(self, tensor: TensorInfo) -> np.ndarray[Any, np.dtype[np.uint8]]:
        return self.shards[tensor.shard].data(tensor)

    def close(self) -> None:
        for shard in self.shards:
            shard.close()

    def __enter__(self) -> GGUFModel:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def model_kvs(model: GGUFModel) -> list[KV]:
    """The model's metadata without the ``split.*`` keys (a writer sets its own)."""
    return [kv for kv in model.kv.values() if kv.key not in SPLIT_KEYS]


def open_model(path: str | Path) -> GGUFModel:
    """Open ``path`` and, when it is a shard, its whole set; an InputError names the shard at fault
    (``file``: the one given, when the message does not name another)."""
    path = Path(path)
    with about_file(path):
        return _open_model(path)


def _open_model(path: Path) -> GGUFModel:
    first = open_gguf(path)
    count = _u16(first, SPLIT_COUNT, required=False)
    if count <= 1:
        return GGUFModel([first])
    index = _u16(first, SPLIT_NO, required=True)
    if index >= count:
        raise InputError(f"{path}: {SPLIT_NO} is {index}, but {SPLIT_COUNT} is only {count}")
    if index != 0:
        first.close()
        first = _first_of(path, index, count)
    return _read_set(first, count)


def from_files(files: Sequence[GGUFFile]) -> GGUFModel:
    """A model from shards already open (a writer's temp files): the same checks as :func:`open_model`."""
    first = files[0]
    count = _u16(first, SPLIT_COUNT, required=False)
    if count <= 1 and len(files) == 1:
        return GGUFModel(files)
    if count != len(files):
        raise InputError(f"{first.path}: {SPLIT_COUNT} is {count} but {len(files)} shard(s) were written")
    for i, shard in enumerate(files):
        _check_shard(first, shard, i, count)
    return _checked(list(files))


def _first_of(path: Path, index: int, count: int) -> GGUFFile:
    prefix = split_prefix(path, index, count)
    if prefix is None:
        raise InputError(
            f"{path}: shard {index + 1} of a split model of {count} ({SPLIT_NO} = {index}), and its name does not "
            f"end in -{index + 1:05d}-of-{count:05d}.gguf, so the first shard cannot be found",
            hint="give the first shard (llama.cpp loads a split model from it)",
        )
    first = shard_path(prefix, 0, count)
    if not first.is_file():
        raise InputError(
            f"{path}: shard {index + 1} of a split model of {count}; its first shard {first} is missing",
            hint="llama.cpp loads a split model from its first shard, with all shards beside it",
        )
    console.info(f"{path.name} is shard {index + 1} of {count}: reading the set from {first.name}")
    gf = open_gguf(first)
    if _u16(gf, SPLIT_NO, required=False) != 0 or _u16(gf, SPLIT_COUNT, required=False) != count:
        gf.close()
        raise InputError(f"{first}: not the first shard of {path.name}'s set of {count}")
    return gf


def _read_set(first: GGUFFile, count: int) -> GGUFModel:
    prefix = split_prefix(first.path, 0, count)
    if prefix is None:
        raise InputError(
            f"{first.path}: the first shard of a split model of {count}, but its name does not end in "
            f"-00001-of-{count:05d}.gguf (llama.cpp: 'invalid split file name'); rename the shards",
        )
    shards = [first]
    try:
        for i in range(1, count):
            p = shard_path(prefix, i, count)
            if not p.is_file():
                raise InputError(
                    f"{first.path}: shard {i + 1} of {count} is missing: {p}",
                    hint="a split model needs every shard beside the first",
                )
            shard = open_gguf(p)
            shards.append(shard)
            _check_shard(first, shard, i, count)
        return _checked(shards)
    except BaseException:
        for shard in shards:
            shard.close()
        raise


def _check_shard(first: GGUFFile, shard: GGUFFile, index: int, count: int) -> None:
    if SPLIT_NO not in shard.kv:
        raise InputError(f"{shard.path}: missing key {SPLIT_NO} in GGUF split (shard {index + 1} of {first.path.name}'s set)")
    got = _u16(shard, SPLIT_NO, required=True)
    if got != index:
        raise InputError(f"{shard.path}: {SPLIT_NO} is {got}, expected {index}: a shard of another set?")
    other = _u16(shard, SPLIT_COUNT, required=False)
    if other not in (0, count):
        raise InputError(f"{shard.path}: belongs to a set of {other} shards, {first.path.name} to one of {count}")
    ours, theirs = first.kv.get(SPLIT_WRITE_ID), shard.kv.get(SPLIT_WRITE_ID)
    if (ours and ours.value) != (theirs and theirs.value):
        raise InputError(f"{shard.path}: written by another run than {first.path.name} ({SPLIT_WRITE_ID} differs): "
                         "a set mixing two writes, left by an interrupted one",
                         hint="write the set again (the command that wrote it replaces every shard)")


def _checked(shards: list[GGUFFile]) -> GGUFModel:
    first = shards[0]
    seen: dict[str, Path] = {}
    for shard in shards:
        for t in shard.tensors:
            if t.name in seen:
                raise InputError(
                    f"{shard.path}: tensor {t.name!r} is also in {seen[t.name].name} "
                    "(llama.cpp: 'invalid model: tensor is duplicated')"
                )
            seen[t.name] = shard.path
    expected = first.kv.get(SPLIT_TENSORS)
    if expected is None:
        raise InputError(f"{first.path}: split model without {SPLIT_TENSORS}")
    if expected.type not in INTEGER_TYPES or expected.value != len(seen):
        raise InputError(
            f"{first.path}: {SPLIT_TENSORS} is {expected.value!r} but the {len(shards)} shards hold {len(seen)} "
            "tensors (llama.cpp: 'corrupted model')"
        )
    return GGUFModel(shards)


def _u16(gf: GGUFFile, key: str, *, required: bool) -> int:
    kv = gf.kv.get(key)
    if kv is None:
        if required:
            raise InputError(f"{gf.path}: missing key {key} in GGUF split")
        return 0
    if kv.type not in INTEGER_TYPES or not 0 <= kv.value <= MAX_SHARDS:
        raise InputError(f"{gf.path}: {key} must be an integer from 0 to {MAX_SHARDS}, got {kv.value!r}")
    return int(kv.value)
