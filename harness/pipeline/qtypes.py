"""llama-quantize's file types: estimated bits per weight, and which need an importance matrix.

The estimates (for the disk preflight only; the summary reports real bits per weight read
from the files) are llama.cpp's own figures for each mixture.  ``NEEDS_IMATRIX`` are the
types whose tensors llama-quantize refuses to make without one (``tensor_requires_imatrix``
in src/llama-quant.cpp): IQ1_S/M, IQ2_XXS/XS/S/M, IQ3_XXS, IQ3_XS (some of its FFN tensors
are IQ3_XXS) and Q2_K_S.
"""

from __future__ import annotations

from harness.errors import InputError

BPW: dict[str, float] = {
    "F32": 32.0, "F16": 16.0, "BF16": 16.0, "Q8_0": 8.5, "Q6_K": 6.56, "Q5_K_M": 5.69, "Q5_K_S": 5.54,
    "Q5_K": 5.69, "Q5_1": 6.0, "Q5_0": 5.5, "Q4_K_M": 4.89, "Q4_K_S": 4.58, "Q4_K": 4.89, "Q4_1": 5.0,
    "Q4_0": 4.5, "IQ4_NL": 4.5, "IQ4_XS": 4.25, "MXFP4_MOE": 4.25, "Q3_K_L": 4.27, "Q3_K_M": 3.91,
    "Q3_K": 3.91, "Q3_K_S": 3.5, "IQ3_M": 3.66, "IQ3_S": 3.44, "IQ3_XS": 3.3, "IQ3_XXS": 3.06,
    "Q2_K": 3.0, "Q2_K_S": 2.96, "IQ2_M": 2.7, "IQ2_S": 2.5, "IQ2_XS": 2.31, "IQ2_XXS": 2.06,
    "Q2_0": 2.25, "TQ2_0": 2.06, "TQ1_0": 1.69, "IQ1_M": 1.75, "IQ1_S": 1.56, "Q1_0": 1.125,
}  # fmt: skip
NEEDS_IMATRIX = frozenset({"IQ1_S", "IQ1_M", "IQ2_XXS", "IQ2_XS", "IQ2_S", "IQ2_M", "IQ3_XXS", "IQ3_XS", "Q2_K_S"})
OUTTYPE_BYTES = {"f32": 4.0, "f16": 2.0, "bf16": 2.0, "q8_0": 8.5 / 8, "auto": 2.0}
UNKNOWN_BPW = 8.5  # a type this table does not know: estimate generously


def normalize(name: str) -> str:
    return name.strip().upper()


def bpw(name: str) -> float:
    return BPW.get(normalize(name), UNKNOWN_BPW)


def needs_imatrix(name: str) -> bool:
    return normalize(name) in NEEDS_IMATRIX


def check(names: list[str], allowed: set[str], *, what: str) -> list[str]:
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
