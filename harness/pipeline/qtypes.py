"""llama-quantize's file types: what the built tool lists, their bits per weight, which need an importance matrix.

The table is read from the build's own ``llama-quantize --help`` (``allowed quantization
types``, ``QUANT_OPTIONS`` in tools/quantize/quantize.cpp), so a fork's new types are known
and the estimates are that tree's: a line states either ``2.31 bpw`` or a file size for a
reference model (``4.58G ... @ Llama-3-8B``), turned into bits per weight with the reference
model's parameter count; an alias (``alias for Q4_K_M``) takes its target's figure.  Types
the help gives no figure for fall back to the ggml type of the same name
(:data:`harness.gguf_files.ggml_types.TYPES`), else to :data:`UNKNOWN_BPW`.  The estimates only
size the disk preflight; the summary reports real bits per weight read from the files.

``NEEDS_IMATRIX`` stays a list kept by hand, because no tool exposes it: the types whose
tensors llama-quantize refuses to make without importance data (``tensor_requires_imatrix``
in src/llama-quant.cpp): IQ1_S/M, IQ2_XXS/XS/S/M, IQ3_XXS, IQ3_XS (some of its FFN tensors
are IQ3_XXS) and Q2_K_S.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping

from harness.errors import InputError

NEEDS_IMATRIX = frozenset({"IQ1_S", "IQ1_M", "IQ2_XXS", "IQ2_XS", "IQ2_S", "IQ2_M", "IQ3_XXS", "IQ3_XS", "Q2_K_S"})
OUTTYPE_BYTES = {"f32": 4.0, "f16": 2.0, "bf16": 2.0, "q8_0": 8.5 / 8, "auto": 2.0}
UNKNOWN_BPW = 8.5  # a type nothing states a figure for: estimate generously
# the reference models llama-quantize --help measures sizes on, and their parameter counts
REFERENCE_PARAMS = {"Llama-3-8B": 8.03e9, "Mistral-7B": 7.24e9, "7B": 7.0e9}

_LINE = re.compile(r"^\s*(?:\d+\s+or\s+)?([A-Z][A-Z0-9_]+)\s*:\s*(.*)$")
_BPW = re.compile(r"(\d+(?:\.\d+)?)\s*bpw")
_SIZE = re.compile(r"(\d+(?:\.\d+)?)G\b.*@\s*(\S+)")
_ALIAS = re.compile(r"alias for\s+([A-Z][A-Z0-9_]+)")


def parse_help(text: str) -> dict[str, float | None]:
    """Type name -> bits per weight (None: not stated) from ``llama-quantize --help``."""
    marker = text.find("allowed quantization types")
    table: dict[str, float | None] = {}
    aliases: dict[str, str] = {}
    for line in (text[marker:] if marker >= 0 else text).splitlines():
        m = _LINE.match(line)
        if not m:
            continue
        name, desc = m.groups()
        table[name] = None
        if alias := _ALIAS.search(desc):
            aliases[name] = alias.group(1)
        elif bpw := _BPW.search(desc):
            table[name] = float(bpw.group(1))
        elif (size := _SIZE.search(desc)) and size.group(2) in REFERENCE_PARAMS:
            table[name] = round(float(size.group(1)) * 2**30 * 8 / REFERENCE_PARAMS[size.group(2)], 2)
    for name, target in aliases.items():
        table[name] = table.get(target)
    return table


def normalize(name: str) -> str:
    return name.strip().upper()


def bpw(name: str, table: Mapping[str, float | None] | None = None) -> float:
    """Estimated bits per weight of file type ``name``: the tool's figure, the ggml type's, or a generous guess."""
    from harness.gguf_files.ggml_types import TYPES

    norm = normalize(name)
    stated = table.get(norm) if table else None
    if stated:
        return stated
    for type_name, block, size in TYPES.values():
        if type_name == norm or norm.startswith(type_name + "_"):
            return size * 8 / block
    return UNKNOWN_BPW


def needs_imatrix(name: str) -> bool:
    return normalize(name) in NEEDS_IMATRIX


def check(names: list[str], allowed: Collection[str], *, what: str) -> list[str]:
    """``names`` normalized; an InputError naming the unknown ones (and close matches)."""
    import difflib

    out, bad = [], []
    for name in names:
        norm = normalize(name)
        if allowed and norm not in allowed:
            close = difflib.get_close_matches(norm, sorted(allowed), n=1)
            bad.append(f"{name!r}" + (f" (did you mean {close[0]}?)" if close else ""))
        out.append(norm)
    if bad:
        raise InputError(f"{what}: unknown quantization type {', '.join(bad)}", hint="allowed: " + ", ".join(sorted(allowed)))
    return out
