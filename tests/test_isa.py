"""The CPU instruction-set policy (harness/build/isa.py): what each variant uses, excludes and says why."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from harness.build import isa, isa_audit
from harness.recipe.schema import Build
from tests.conftest import REPO, write_recipe

DATA = Path(__file__).parent / "data" / "cpuinfo"
SPR = isa.parse_cpuinfo((DATA / "sapphirerapids.txt").read_text())
ZEN3 = isa.parse_cpuinfo((DATA / "epyc-zen3.txt").read_text())
GCC12 = isa.detect_compiler("cc (Debian 12.2.0-14+deb12u1) 12.2.0\nCopyright (C) 2022 Free Software Foundation, Inc.")
GCC13 = isa.detect_compiler("gcc (Ubuntu 13.3.0-6ubuntu2~24.04) 13.3.0\nCopyright (C) 2023 Free Software Foundation, Inc.")


def _plan(cpu: isa.Cpu, compiler: isa.Compiler, **cpu_opts: object) -> isa.Plan:
    return isa.plan(Build.model_validate({"cpu": cpu_opts}), compiler, cpu)


def test_cpuinfo_and_compilers_are_read_as_they_are_printed() -> None:
    assert SPR.model == "Intel(R) Xeon(R) Platinum 8480+" and SPR.x86
    assert {"amx", "avx512", "avx512_vnni", "avx512_bf16", "avx_vnni", "avx2"} <= SPR.extensions
    assert ZEN3.extensions == {"sse42", "avx", "f16c", "fma", "avx2", "bmi2"}
    arm = isa.parse_cpuinfo((DATA / "graviton3.txt").read_text())
    assert arm.arch == "aarch64" and not arm.x86 and arm.extensions == frozenset() and "sve" in arm.flags
    assert (GCC12.family, GCC12.version) == ("gcc", (12, 2, 0))
    assert (GCC13.family, GCC13.version) == ("gcc", (13, 3, 0))
    assert str(isa.detect_compiler("Apple clang version 15.0.0 (clang-1500.3.9.4)")) == "apple-clang 15.0.0"
    assert str(isa.detect_compiler("Ubuntu clang version 18.1.3 (1ubuntu1)")) == "clang 18.1.3"


def test_native_on_an_amx_cpu_with_gcc_12_excludes_amx_and_says_why() -> None:
    plan = _plan(SPR, GCC12)
    assert plan.cmake == {"GGML_NATIVE": "ON"}
    assert plan.cflags == ("-mno-amx-tile", "-mno-amx-int8", "-mno-amx-bf16")
    assert "amx" not in plan.enabled and "avx512_vnni" in plan.enabled
    assert "_tile_loadconfig" in plan.disabled["amx"] and "gcc 13" in plan.disabled["amx"]
    # gcc 13 fixed the header: AMX stays; a CPU without AMX needs no flag
    assert _plan(SPR, GCC13).cflags == () and "amx" in _plan(SPR, GCC13).enabled
    assert _plan(ZEN3, GCC12).cflags == () and _plan(ZEN3, GCC12).disabled == {}


def test_disabling_an_extension_disables_what_needs_it() -> None:
    plan = _plan(SPR, GCC13, disable=["avx512"])
    assert set(plan.disabled) == {"avx512", "avx512_vnni", "avx512_vbmi", "avx512_bf16", "amx"}
    assert plan.disabled["avx512"] == "disabled by the recipe (build.cpu.disable)"
    assert plan.disabled["amx"] == "needs avx512, which is disabled"
    assert "-mno-avx512f" in plan.cflags and "-mno-amx-tile" in plan.cflags and "avx2" in plan.enabled
    assert set(_plan(ZEN3, GCC13, disable=["avx2"]).enabled) == {"sse42", "avx", "f16c", "fma", "bmi2"}


def test_portable_is_explicit_x86_64_v3_whatever_source_date_epoch_says() -> None:
    plan = _plan(SPR, GCC12, variant="portable")
    on = {k for k, v in plan.cmake.items() if v == "ON"}
    assert on == {"GGML_SSE42", "GGML_AVX", "GGML_F16C", "GGML_FMA", "GGML_AVX2", "GGML_BMI2"}
    assert plan.cmake["GGML_NATIVE"] == "OFF" and plan.cmake["GGML_AVX512"] == "OFF" and plan.cmake["GGML_AMX_INT8"] == "OFF"
    assert plan.disabled == {}  # AMX is not in portable code, so gcc 12 excludes nothing
    assert _plan(ZEN3, GCC12, variant="portable", disable=["avx2"]).cmake["GGML_AVX2"] == "OFF"


def test_all_variants_drops_the_variant_libraries_that_use_a_broken_extension(tmp_path: Path) -> None:
    plan = _plan(ZEN3, GCC12, variant="all-variants")  # AMX code is built whatever this CPU has
    assert plan.cmake == {"GGML_NATIVE": "OFF", "GGML_BACKEND_DL": "ON", "GGML_CPU_ALL_VARIANTS": "ON"}
    assert "amx" in plan.disabled
    tree = tmp_path / "src"
    (tree / "ggml" / "src").mkdir(parents=True)
    (tree / "ggml" / "src" / "CMakeLists.txt").write_text(
        "        ggml_add_cpu_backend_variant(haswell            SSE42 AVX F16C FMA AVX2 BMI2)\n"
        "        ggml_add_cpu_backend_variant(icelake            SSE42 AVX F16C FMA AVX2 BMI2 AVX512 AVX512_VBMI AVX512_VNNI)\n"
        "            ggml_add_cpu_backend_variant(sapphirerapids SSE42 AVX F16C FMA AVX2 BMI2 AVX512 AVX512_VBMI "
        "AVX512_VNNI AVX512_BF16 AMX_TILE AMX_INT8)\n")
    assert isa_audit.dropped_variants(plan, tree) == ["sapphirerapids"]
    assert isa_audit.dropped_variants(_plan(ZEN3, GCC13, variant="all-variants", disable=["avx512"]), tree) == ["icelake", "sapphirerapids"]
    assert isa_audit.dropped_variants(_plan(ZEN3, GCC13, variant="all-variants"), tree) == []


def test_fallback_after_a_crash_drops_the_widest_extension_in_use() -> None:
    assert isa.next_exclusion(_plan(SPR, GCC13), repack_only=True) == "amx"
    assert isa.next_exclusion(_plan(SPR, GCC12), repack_only=True) == "avx512"  # AMX already out
    assert isa.next_exclusion(_plan(SPR, GCC12), repack_only=False) == "avx512"
    assert isa.next_exclusion(_plan(ZEN3, GCC12), repack_only=False) == "avx2"
    assert isa.next_exclusion(_plan(ZEN3, GCC12), repack_only=True) is None
    assert isa.next_exclusion(_plan(ZEN3, GCC12, disable=["avx2"]), repack_only=False) is None
    variants = _plan(SPR, GCC13, variant="all-variants")
    assert isa.next_exclusion(variants, repack_only=False, variant_features=["avx2", "fma"]) == "avx2"


def test_learned_exclusions_are_kept_per_cpu_and_compiler() -> None:
    isa.learn(SPR, GCC13, "native", "amx", "SIGILL decoding Q4_0 (cpu)")
    plan = _plan(SPR, GCC13)
    assert "amx" not in plan.enabled and plan.disabled["amx"].startswith("learned ")
    assert "amx" not in _plan(SPR, GCC13, variant="portable").disabled  # learned for native builds only
    assert "amx" in _plan(isa.Cpu("other", "x86_64", SPR.extensions), GCC13).enabled


def test_unknown_extensions_are_named_in_the_recipe(tmp_path: Path) -> None:
    recipe = write_recipe(tmp_path / "r", "bad", "build:\n  cpu:\n    disable: [amx, avx-512]\n")
    res = subprocess.run([sys.executable, "-m", "harness", "validate", str(recipe)], capture_output=True, text=True, cwd=REPO)
    assert res.returncode == 2
    assert f"{recipe}:3: build.cpu.disable[1]: unknown CPU extension 'avx-512' (did you mean 'avx512'?)" in res.stderr


@pytest.mark.parametrize("backend", ["cuda", "vulkan", "hip"])
def test_gpu_dry_run_configures_the_cpu_code_too(backend: str, tmp_path: Path) -> None:
    """SOURCE_DATE_EPOCH would silently turn ggml's CPU code into SSE2: every backend states its ISA."""
    recipe = write_recipe(tmp_path / "r", "gpu", f"build:\n  backends: [{backend}]\n  cuda: {{archs: [90]}}\n"
                                                 "  hip: {targets: [gfx1100]}\n")
    env = {**__import__("os").environ, "HARNESS_CPUINFO": str(DATA / "sapphirerapids.txt"), "CC": "gcc"}
    res = subprocess.run([sys.executable, "-m", "harness", "build", str(recipe), "--dry-run", "--json"],
                         capture_output=True, text=True, cwd=REPO, env=env)
    assert res.returncode == 0, res.stderr
    [plan] = json.loads(res.stdout)
    configure = plan["configure"]
    assert "-DGGML_NATIVE=ON" in configure and f"-DGGML_{backend.upper()}=ON" in configure
    c_flags = next(a for a in configure if a.startswith("-DCMAKE_C_FLAGS="))
    gcc = isa.detect_compiler(subprocess.run(["gcc", "--version"], capture_output=True, text=True).stdout)
    assert ("-mno-amx-tile" in c_flags) == (gcc.version < (13,))
    assert plan["isa"]["cpu"] == "Intel(R) Xeon(R) Platinum 8480+" and plan["smoke"] == ["version", "decode"]
    assert not (tmp_path / "r" / "gpu.lock").exists()  # nothing resolved, nothing written


def test_the_binary_s_feature_line_is_checked_against_the_plan() -> None:
    plan = _plan(SPR, GCC12)
    spr_line = {"SSE3": "1", "AVX": "1", "AVX_VNNI": "1", "AVX2": "1", "F16C": "1", "FMA": "1", "BMI2": "1",
                "AVX512": "1", "AVX512_VBMI": "1", "AVX512_VNNI": "1", "AVX512_BF16": "1", "REPACK": "1"}
    assert isa_audit.mismatch(plan, spr_line) == {}
    assert isa_audit.mismatch(plan, {**spr_line, "AMX_INT8": "1"}) == {"unexpected": ["amx"]}
    # what a CUDA build got before the policy (measured on an H200 host): SSE2 only
    sse2 = {"LLAMAFILE": "1", "OPENMP": "1", "REPACK": "1"}
    assert isa_audit.mismatch(plan, sse2)["missing"][:2] == ["avx512_bf16", "avx512_vnni"]
    assert isa_audit.mismatch(plan, None) == {}
    native_off = isa.plan(Build.model_validate({"cmake_args": {"GGML_NATIVE": "OFF"}}), GCC12, SPR)
    assert "build.cmake_args overrides the policy (GGML_NATIVE=OFF)" in native_off.notes[-1]
