"""The ggml tensor types: id -> (name, block size, bytes per block), the ``gguf`` package's table
extended by a build's own gguf-py (a fork's new weight types; see :mod:`harness.gguf_files.gguf_py`)."""

from __future__ import annotations

from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

# ggml type id -> (name, block size, bytes per block): the gguf package's table, extended by
# register_types() with a build's own gguf-py (ggml/include/ggml.h of that tree).
TYPES: dict[int, tuple[str, int, int]] = {int(t): (t.name, b, s) for t, (b, s) in GGML_QUANT_SIZES.items()}


def register_types(table: dict[int, tuple[str, int, int]]) -> list[str]:
    """Take the types of a build's gguf-py table; returns the names that were new or changed.

    The build's entry wins over the installed package's: its tree wrote the files (the pinned
    tree's Q8_1 blocks, for one, are 36 bytes where gguf 0.19 says 40).
    """
    changed = []
    for type_id, (name, block, size) in table.items():
        if block > 0 and size > 0 and TYPES.get(type_id) != (name, block, size):
            TYPES[type_id] = (name, block, size)
            changed.append(name)
    return changed


def type_name(type_id: int) -> str:
    return TYPES[type_id][0] if type_id in TYPES else f"type{type_id}"


def bits_per_weight(type_id: int) -> float:
    _, block, size = TYPES[type_id]
    return size * 8 / block


def ggml_type(type_id: int) -> GGMLQuantizationType:
    """The gguf package's enum for ``type_id``; types it lacks pass through as plain ints."""
    try:
        return GGMLQuantizationType(type_id)
    except ValueError:
        return type_id  # type: ignore[return-value]  # GGUFWriter only packs it as "I"
