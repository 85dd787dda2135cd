"""The CPU policy held against what was built: ggml's own feature line and the all-variants libraries.

``mismatch`` compares the extensions a plan (harness/build/isa.py) enables with the ones ggml
says the built binary uses (its ``system_info`` feature line, read by the decode smoke);
``dropped_variants`` names the all-variants CPU libraries (``libggml-cpu-<tag>``) that use an
extension the plan disables, which the build then does not publish.
"""

from __future__ import annotations

import re
from pathlib import Path

from harness.backends.cpu_extensions import EXTENSIONS
from harness.build.isa import EXTENSION_NAMES, Plan

# ggml's feature names (ggml-cpu.cpp: ggml_backend_cpu_get_features) for our extensions
GGML_FEATURE = {"avx": "AVX", "avx2": "AVX2", "f16c": "F16C", "fma": "FMA", "bmi2": "BMI2", "avx_vnni": "AVX_VNNI",
                "avx512": "AVX512", "avx512_vbmi": "AVX512_VBMI", "avx512_vnni": "AVX512_VNNI",
                "avx512_bf16": "AVX512_BF16", "amx": "AMX_INT8"}


def mismatch(current: Plan, features: dict[str, str] | None) -> dict[str, list[str]]:
    """Where ggml's own feature line disagrees with the plan: ``missing`` (planned, not built) and
    ``unexpected`` (built, not planned).  Empty when they agree or when ggml said nothing."""
    if not features or current.variant == "all-variants" or not current.cpu.x86:
        return {}
    built = {ext for ext, name in GGML_FEATURE.items() if features.get(name) == "1"}
    planned = {ext for ext in current.enabled if ext in GGML_FEATURE}
    found = {"missing": sorted(planned - built, key=EXTENSION_NAMES.index),
             "unexpected": sorted(built - planned, key=EXTENSION_NAMES.index)}
    return {k: v for k, v in found.items() if v}


_VARIANT = re.compile(r"^\s*ggml_add_cpu_backend_variant\(\s*([\w.]+)((?:\s+\w+)*)\s*\)", re.M)


def cpu_variants(tree: Path) -> dict[str, list[str]]:
    """``ggml_add_cpu_backend_variant(tag FEATURES...)`` of the tree's ggml/src/CMakeLists.txt (x86 ones)."""
    path = tree / "ggml" / "src" / "CMakeLists.txt"
    try:
        text = path.read_text()
    except FileNotFoundError:
        return {}
    options = {opt: e.name for e in EXTENSIONS for opt in e.options}
    variants: dict[str, list[str]] = {}
    for m in _VARIANT.finditer(text):
        feats = m.group(2).split()
        if all(f in options for f in feats):  # the x86 variants (ARM/POWER features are not ours)
            variants[m.group(1)] = sorted({options[f] for f in feats}, key=EXTENSION_NAMES.index)
    return variants


def dropped_variants(current: Plan, tree: Path) -> list[str]:
    """The CPU variant libraries (``libggml-cpu-<tag>``) that use a disabled extension."""
    if current.variant != "all-variants" or not current.disabled:
        return []
    return [tag for tag, feats in cpu_variants(tree).items() if set(feats) & set(current.disabled)]

