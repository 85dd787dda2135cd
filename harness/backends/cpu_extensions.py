"""The x86 extensions ggml's CPU code may use, as a recipe names them: the one list.

Every backend has CPU code, so these are the CPU policy's vocabulary: the recipe validates
``build.cpu.disable`` against the names (harness/backends/cpu.py: CpuOptions), and the
instruction-set policy (harness/build/isa.py) plans with the rest (CMake options, cpuinfo
flags, ``-mno-*`` flags, what each needs).  A new extension is one line here.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Annotated

from pydantic import AfterValidator


@dataclass(frozen=True)
class Extension:
    """An x86 extension as the recipe names it (``build.cpu.disable``)."""

    name: str
    options: tuple[str, ...]  # ggml CMake options it stands for (GGML_<option>)
    cpuinfo: str  # the /proc/cpuinfo flag that shows the CPU has it
    no_flags: tuple[str, ...]  # gcc/clang flags that switch it off under -march=native
    needs: tuple[str, ...] = ()  # extensions it cannot work without


# Widest first: the order the decode-crash fallback tries them in.
EXTENSIONS: tuple[Extension, ...] = (
    Extension("amx", ("AMX_TILE", "AMX_INT8", "AMX_BF16"), "amx_tile",
              ("-mno-amx-tile", "-mno-amx-int8", "-mno-amx-bf16"), ("avx512_vnni",)),
    Extension("avx512_bf16", ("AVX512_BF16",), "avx512_bf16", ("-mno-avx512bf16",), ("avx512",)),
    Extension("avx512_vnni", ("AVX512_VNNI",), "avx512_vnni", ("-mno-avx512vnni",), ("avx512",)),
    Extension("avx512_vbmi", ("AVX512_VBMI",), "avx512vbmi", ("-mno-avx512vbmi",), ("avx512",)),
    Extension("avx512", ("AVX512",), "avx512f", ("-mno-avx512f",), ("avx2",)),
    Extension("avx_vnni", ("AVX_VNNI",), "avx_vnni", ("-mno-avxvnni",), ("avx2",)),
    Extension("avx2", ("AVX2",), "avx2", ("-mno-avx2",), ("avx",)),
    Extension("bmi2", ("BMI2",), "bmi2", ("-mno-bmi2",)),
    Extension("fma", ("FMA",), "fma", ("-mno-fma",), ("avx",)),
    Extension("f16c", ("F16C",), "f16c", ("-mno-f16c",), ("avx",)),
    Extension("avx", ("AVX",), "avx", ("-mno-avx",), ("sse42",)),
    Extension("sse42", ("SSE42",), "sse4_2", ("-mno-sse4.2",)),
)

NAMES = tuple(e.name for e in EXTENSIONS)


def _known(value: str) -> str:
    if value not in NAMES:
        close = difflib.get_close_matches(value.lower(), NAMES, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(f"unknown CPU extension {value!r}{hint}; one of {', '.join(NAMES)}")
    return value


# a name in a recipe list, validated one by one so every bad element is reported at its line
CpuExtension = Annotated[str, AfterValidator(_known)]
