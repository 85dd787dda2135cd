"""``--tensor-type`` rules for llama-quantize: the MTP layers at ``mtp_type``, then the recipe's.

llama-quantize lowercases each pattern before compiling it as a ``std::regex`` and uses the
first rule whose pattern is found in a tensor's name.  So the MTP rule comes first and
names whole blocks, ``^(blk\\.(4)\\.|nextn\\.|mtp\\.)``: ``nextn=q8_0`` alone would only
catch ``nextn.eh_proj`` and leave the block's attention and FFN matrices to the trunk's
type.  Those tensors never reach llama-imatrix (the MTP graph does not run while it
collects), so an IQ1/IQ2/IQ3_XXS trunk would otherwise abort with "Missing importance
matrix for tensor blk.N...."; at ``mtp_type`` (Q8_0 by default) they need none.

Patterns with upper-case letters are rejected where lowercasing changes their meaning
(``\\D``, ``\\S``, ``\\W``, ``\\B``) and lowercased otherwise (tensor names are lower-case).
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from harness.errors import InputError
from harness.gguf_files import mtp
from harness.gguf_files.ggml_types import TYPES
from harness.gguf_files.split import GGUFModel

_CASE_SENSITIVE_ESCAPE = re.compile(r"\\[DSWB]")


def tensor_types() -> frozenset[str]:
    """ggml tensor type names, lower-case: the reader's table (the build's gguf-py types included)."""
    return frozenset(entry[0].lower() for entry in TYPES.values())


def tensor_type(name: str, *, what: str) -> str:
    """A ggml tensor type name (``q8_0``, ``q6_k``, ``bf16``), lower-case."""
    TENSOR_TYPES = tensor_types()
    low = name.strip().lower()
    if low not in TENSOR_TYPES:
        import difflib

        hint = ""
        if re.fullmatch(r"(?i)(i?q\d_k?)_[sml]|iq\d_[xsm]+", name.strip()):
            hint = f" ({name} is a file type mixture; a tensor type is e.g. q4_k or q8_0)"
        else:
            close = difflib.get_close_matches(low, sorted(TENSOR_TYPES), n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
        raise InputError(f"{what}: {name!r} is not a ggml tensor type{hint}")
    return low


def mtp_pattern(layout: mtp.Layout) -> str | None:
    """The regex naming every MTP tensor of a file with this layout (None: it has none)."""
    if layout.nextn <= 0:
        return None
    blocks = "|".join(str(b) for b in layout.mtp_layers)
    return rf"^(blk\.({blocks})\.|nextn\.|mtp\.)"


def user_rules(tensor_types: Mapping[str, str]) -> list[str]:
    rules = []
    for pattern, qtype in tensor_types.items():
        where = f"model.quantize.tensor_types[{pattern!r}]"
        if "=" in pattern:
            raise InputError(f"{where}: a pattern may not contain '=' (llama-quantize splits NAME=TYPE at the first one)")
        if escape := _CASE_SENSITIVE_ESCAPE.search(pattern):
            raise InputError(
                f"{where}: llama-quantize lowercases patterns, which turns {escape.group()} into its opposite; "
                "write the class out (e.g. [^0-9] for \\D)"
            )
        try:
            re.compile(pattern.lower())
        except re.error as exc:
            raise InputError(f"{where}: not a regular expression: {exc}") from None
        rules.append(f"{pattern.lower()}={tensor_type(qtype, what=where)}")
    return rules


def tensor_type_rules(layout: mtp.Layout | None, mtp_type: str | None, tensor_types: Mapping[str, str]) -> list[str]:
    """All ``--tensor-type`` values, the MTP rule first (the first matching rule wins)."""
    rules = []
    pattern = mtp_pattern(layout) if layout is not None else None
    if pattern is not None and mtp_type is not None:
        rules.append(f"{pattern}={tensor_type(mtp_type, what='model.quantize.mtp_type')}")
    return rules + user_rules(tensor_types)


def argv(rules: list[str]) -> list[str]:
    out: list[str] = []
    for rule in rules:
        out += ["--tensor-type", rule]
    return out


def mtp_type_mismatches(gf: GGUFModel, layout: mtp.Layout, mtp_type: str) -> list[str]:
    """MTP matrices whose type is not ``mtp_type`` (llama-quantize may fall back on odd shapes)."""
    want = mtp_type.lower()
    bad = []
    for t in gf.tensors:
        if len(t.shape) >= 2 and layout.is_mtp(t.name) and t.type_name.lower() != want:
            bad.append(f"{t.name}: {t.type_name}")
    return bad
