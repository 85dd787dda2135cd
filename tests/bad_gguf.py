"""The malformed-GGUF corpus in tests/data/bad_gguf/: how each file is made and what it must be called.

Every file is a small valid GGUF (``valid()``: arch "llama", one F32 tensor) with one thing
broken, modelled on the cases of llama.cpp's tests/test-gguf.cpp and the checks of
ggml/src/gguf.cpp.  ``CASES`` maps file name -> (bytes, a fragment the error must contain).
Regenerate the directory with ``python -m tests.bad_gguf``; a test checks it is in sync.
"""

from __future__ import annotations

import struct
import sys
from collections.abc import Callable
from pathlib import Path

DIR = Path(__file__).parent / "data" / "bad_gguf"

U8, U16, U32, I32, STR, ARR, U64 = 0, 2, 4, 5, 8, 9, 10
F32_TYPE, Q8_0_TYPE = 0, 8


def u32(v: int) -> bytes:
    return struct.pack("<I", v)


def u64(v: int) -> bytes:
    return struct.pack("<Q", v)


def s(text: str | bytes) -> bytes:
    raw = text.encode() if isinstance(text, str) else text
    return u64(len(raw)) + raw


def kv_str(key: str | bytes, value: str) -> bytes:
    return s(key) + u32(STR) + s(value)


def kv_u32(key: str, value: int) -> bytes:
    return s(key) + u32(U32) + u32(value)


def kv_u16(key: str, value: int) -> bytes:
    return s(key) + u32(U16) + struct.pack("<H", value)


def kv_i32(key: str, value: int) -> bytes:
    return s(key) + u32(I32) + struct.pack("<i", value)


def shard(no: int, count: int, tensors: int = 1, kvs: list[bytes] | None = None) -> bytes:
    """A shard of a split model, with the split keys llama-gguf-split writes."""
    split = [kv_u16("split.no", no), kv_u16("split.count", count), kv_i32("split.tensors.count", tensors)]
    return gguf(kvs=[*(BASE_KVS if kvs is None else kvs), *split])


def tensor_info(name: str, shape: list[int], type_id: int = F32_TYPE, offset: int = 0) -> bytes:
    return s(name) + u32(len(shape)) + b"".join(u64(d) for d in shape) + u32(type_id) + u64(offset)


BASE_KVS = [kv_str("general.architecture", "llama"), kv_u32("llama.block_count", 1)]
BASE_TENSOR = tensor_info("blk.0.attn_norm.weight", [8])


def gguf(
    kvs: list[bytes] | None = None,
    tensors: list[bytes] | None = None,
    data: bytes = b"\x00" * 32,
    *,
    version: int = 3,
    n_kv: int | None = None,
    n_tensors: int | None = None,
    magic: bytes = b"GGUF",
) -> bytes:
    kvs = BASE_KVS if kvs is None else kvs
    tensors = [BASE_TENSOR] if tensors is None else tensors
    head = magic + u32(version) + u64(len(tensors) if n_tensors is None else n_tensors)
    head += u64(len(kvs) if n_kv is None else n_kv)
    body = head + b"".join(kvs) + b"".join(tensors)
    if tensors:
        body += b"\x00" * (-len(body) % 32)
    return body + data


def valid() -> bytes:
    return gguf()


def _cases() -> dict[str, tuple[Callable[[], bytes], str]]:
    good = valid()
    return {
        "empty.gguf": (lambda: b"", "not a GGUF file"),
        "text_file.gguf": (lambda: b"hello, this is not a model\n", "not a GGUF file (magic"),
        "bad_magic.gguf": (lambda: gguf(magic=b"GGUX"), "not a GGUF file (magic"),
        "version_0.gguf": (lambda: gguf(version=0), "unsupported GGUF version 0"),
        "version_1.gguf": (lambda: gguf(version=1), "unsupported GGUF version 1"),
        "version_4.gguf": (lambda: gguf(version=4), "unsupported GGUF version 4"),
        "big_endian.gguf": (lambda: gguf(version=0x03000000), "big-endian"),
        "truncated_header.gguf": (lambda: good[:14], "truncated"),
        "absurd_tensor_count.gguf": (lambda: gguf(n_tensors=1 << 40), "claims 1099511627776 tensors"),
        "absurd_kv_count.gguf": (lambda: gguf(n_kv=1 << 62), "metadata entries"),
        "key_length_past_eof.gguf": (lambda: gguf(kvs=[u64(1000) + b"general"]), "truncated"),
        "key_length_absurd.gguf": (lambda: gguf(kvs=[u64(1 << 63) + b"general"]), "claims a length"),
        "string_value_past_eof.gguf": (
            lambda: gguf(
                kvs=[s("general.architecture") + u32(STR) + u64(1 << 20) + b"llama"], tensors=[], data=b""
            ),
            "truncated",
        ),
        "array_count_absurd.gguf": (
            lambda: gguf(kvs=[*BASE_KVS, s("llama.x") + u32(ARR) + u32(U32) + u64(1 << 50)]),
            "claims 1125899906842624 elements",
        ),
        "array_past_eof.gguf": (
            lambda: gguf(kvs=[*BASE_KVS, s("llama.x") + u32(ARR) + u32(U32) + u64(1 << 20)]),
            "truncated",
        ),
        "string_array_past_eof.gguf": (
            lambda: gguf(kvs=[*BASE_KVS, s("llama.x") + u32(ARR) + u32(STR) + u64(1 << 20)]),
            "more than the rest of the file",
        ),
        "bad_value_type.gguf": (
            lambda: gguf(kvs=[*BASE_KVS, s("llama.x") + u32(99) + u32(0)]),
            "unknown value type 99",
        ),
        "nested_array.gguf": (
            lambda: gguf(kvs=[*BASE_KVS, s("llama.x") + u32(ARR) + u32(ARR) + u64(1)]),
            "array of arrays",
        ),
        "duplicate_key.gguf": (
            lambda: gguf(kvs=[*BASE_KVS, kv_u32("llama.block_count", 2)]),
            "duplicate metadata key",
        ),
        "empty_key.gguf": (lambda: gguf(kvs=[*BASE_KVS, kv_u32("", 1)]), "empty key"),
        "invalid_utf8_key.gguf": (
            lambda: gguf(kvs=[*BASE_KVS, s(b"llama.\xff\xfe") + u32(U32) + u32(1)]),
            "not valid UTF-8",
        ),
        "alignment_not_power_of_two.gguf": (
            lambda: gguf(kvs=[*BASE_KVS, kv_u32("general.alignment", 48)]),
            "not a power of two",
        ),
        "alignment_zero.gguf": (
            lambda: gguf(kvs=[*BASE_KVS, kv_u32("general.alignment", 0)]),
            "not a power of two",
        ),
        "alignment_wrong_type.gguf": (
            lambda: gguf(kvs=[*BASE_KVS, kv_str("general.alignment", "32")]),
            "general.alignment must be a uint32",
        ),
        "too_many_dims.gguf": (lambda: gguf(tensors=[tensor_info("t", [8, 1, 1, 1, 1])]), "5 dimensions"),
        "negative_dim.gguf": (
            lambda: gguf(tensors=[tensor_info("t", [(1 << 64) - 8])]),
            "negative dimension",
        ),
        "element_count_overflow.gguf": (
            lambda: gguf(tensors=[tensor_info("t", [1 << 40, 1 << 40])]),
            "overflows int64",
        ),
        "unknown_tensor_type.gguf": (
            lambda: gguf(tensors=[tensor_info("t", [8], 99)]),
            "unknown ggml type 99",
        ),
        "removed_tensor_type.gguf": (
            lambda: gguf(tensors=[tensor_info("t", [32], 4)]),
            "unknown ggml type 4",
        ),
        "row_not_multiple_of_block.gguf": (
            lambda: gguf(tensors=[tensor_info("t", [30], Q8_0_TYPE)]),
            "not a multiple of 32",
        ),
        "misaligned_offset.gguf": (lambda: gguf(tensors=[tensor_info("t", [8], offset=4)]), "not aligned"),
        "overlapping_tensors.gguf": (
            lambda: gguf(tensors=[tensor_info("a", [8]), tensor_info("b", [8], offset=0)], data=b"\x00" * 64),
            "expected 32",
        ),
        "huge_tensor_past_eof.gguf": (
            lambda: gguf(tensors=[tensor_info("t", [1 << 30])]),
            "truncated: tensor",
        ),
        "truncated_tensor_data.gguf": (lambda: gguf(tensors=[tensor_info("t", [64])]), "truncated: tensor"),
        "duplicate_tensor_name.gguf": (
            lambda: gguf(
                tensors=[BASE_TENSOR, tensor_info("blk.0.attn_norm.weight", [8], offset=32)], data=b"\0" * 64
            ),
            "duplicate tensor name",
        ),
        "tensor_name_too_long.gguf": (lambda: gguf(tensors=[tensor_info("t" * 64, [8])]), "name of 64 bytes"),
        "truncated_tensor_info.gguf": (lambda: gguf(data=b"")[: len(gguf(data=b"")) - 40], "truncated"),
        "missing_architecture.gguf": (
            lambda: gguf(kvs=[kv_u32("llama.block_count", 1)]),
            "general.architecture is missing",
        ),
        "missing_block_count.gguf": (lambda: gguf(kvs=[BASE_KVS[0]]), "llama.block_count is missing"),
        "block_count_wrong_type.gguf": (
            lambda: gguf(kvs=[BASE_KVS[0], kv_str("llama.block_count", "1")]),
            "must be a non-negative integer",
        ),
        "nextn_exceeds_block_count.gguf": (
            lambda: gguf(kvs=[*BASE_KVS, kv_u32("llama.nextn_predict_layers", 5)]),
            "nextn_predict_layers is 5 but llama.block_count is only 1",
        ),
        # counts a 1.3 KB file cannot back: bounded by llama.cpp's limits before anything loops
        "block_count_absurd.gguf": (
            lambda: gguf(
                kvs=[
                    kv_str("general.architecture", "qwen35"),
                    kv_u32("qwen35.block_count", 10**8),
                    kv_u32("qwen35.nextn_predict_layers", 10**8),
                    s("qwen35.feed_forward_length") + u32(ARR) + u32(U32) + u64(256) + b"\0" * 1024,
                ]
            ),
            "qwen35.block_count is 100000000; llama.cpp allows at most 512",
        ),
        # split sets: a later shard alone, a missing shard, keys that do not fit
        "lone-00002-of-00002.gguf": (lambda: shard(1, 2), "its first shard"),
        "gap-00001-of-00002.gguf": (lambda: shard(0, 2), "shard 2 of 2 is missing"),
        "split_no_past_count-00001-of-00002.gguf": (
            lambda: shard(5, 2),
            "split.no is 5, but split.count is only 2",
        ),
        "split_badly_named.gguf": (lambda: shard(0, 3), "its name does not end in -00001-of-00003.gguf"),
        "split_count_wrong_type.gguf": (
            lambda: gguf(kvs=[*BASE_KVS, kv_str("split.count", "2")]),
            "split.count must be an integer from 0 to 65535",
        ),
        "split_count_absurd-00001-of-65535.gguf": (lambda: shard(0, 65535), "shard 2 of 65535 is missing"),
    }


CASES = _cases()


def write(directory: Path = DIR) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for stale in directory.glob("*.gguf"):
        if stale.name not in CASES:
            stale.unlink()
    for name, (make, _) in CASES.items():
        (directory / name).write_bytes(make())


if __name__ == "__main__":
    write(Path(sys.argv[1]) if len(sys.argv) > 1 else DIR)
