"""The exact configure command per backend (CUDA, Metal, Vulkan and HIP cannot be built here)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from harness import backends, cmake, isa
from harness.backends import cuda
from harness.recipe import Build
from tests.conftest import run_harness, write_recipe

SRC, BDIR = Path("/c/trees/r/src"), Path("/c/builds/r/b")
STAMP = cmake.Stamp(2, "0c1e570+stack.1a2b3c4d")
COMMON = [
    "cmake", "-S", "/c/trees/r/src", "-B", "/c/builds/r/b", "-G", "Ninja", "-DCMAKE_MAKE_PROGRAM=ninja",
    "-DCMAKE_BUILD_TYPE=Release", "-DBUILD_SHARED_LIBS=ON", "-DLLAMA_BUILD_TESTS=OFF", "-DLLAMA_BUILD_EXAMPLES=OFF",
    "-DLLAMA_BUILD_TOOLS=ON", "-DLLAMA_BUILD_SERVER=ON", "-DLLAMA_USE_PREBUILT_UI=OFF",
    "-DCMAKE_INSTALL_RPATH=$ORIGIN", "-DCMAKE_BUILD_WITH_INSTALL_RPATH=ON", "-DCMAKE_LINK_DEPENDS_NO_SHARED=ON",
    "-DLLAMA_BUILD_NUMBER=2", "-DLLAMA_BUILD_COMMIT=0c1e570+stack.1a2b3c4d", "-DGGML_CCACHE=OFF",
    "-DCMAKE_C_FLAGS=-ffile-prefix-map=/c/trees/r/src=. -ffile-prefix-map=/c/builds/r/b/= -ffile-prefix-map=../src=.",
    "-DCMAKE_CXX_FLAGS=-ffile-prefix-map=/c/trees/r/src=. -ffile-prefix-map=/c/builds/r/b/= -ffile-prefix-map=../src=.",
]



ZEN3 = isa.Cpu("AMD EPYC 7763", "x86_64", frozenset(isa.PORTABLE))
GCC12 = isa.Compiler("cc", "gcc", (12, 2, 0))


def _command(backend: str, build: Build, ccache: str | None = "/usr/bin/ccache") -> list[str]:
    plan = isa.plan(build, GCC12, ZEN3)
    entries = cmake.cache_entries(build, backends.get(backend), STAMP, SRC, BDIR, ccache=ccache, isa=plan)
    return cmake.configure_command(SRC, BDIR, entries, "ninja", "cmake")


def test_cpu_variants() -> None:
    launch = ["-DCMAKE_C_COMPILER_LAUNCHER=/usr/bin/ccache", "-DCMAKE_CXX_COMPILER_LAUNCHER=/usr/bin/ccache"]
    assert _command("cpu", Build()) == [*COMMON, *launch, "-DGGML_NATIVE=ON"]
    assert _command("cpu", Build.model_validate({"cpu": {"variant": "portable"}}), ccache=None) == [
        *COMMON, "-DGGML_NATIVE=OFF", "-DGGML_AMX_TILE=OFF", "-DGGML_AMX_INT8=OFF", "-DGGML_AMX_BF16=OFF",
        "-DGGML_AVX512_BF16=OFF", "-DGGML_AVX512_VNNI=OFF", "-DGGML_AVX512_VBMI=OFF", "-DGGML_AVX512=OFF",
        "-DGGML_AVX_VNNI=OFF", "-DGGML_AVX2=ON", "-DGGML_BMI2=ON", "-DGGML_FMA=ON", "-DGGML_F16C=ON", "-DGGML_AVX=ON",
        "-DGGML_SSE42=ON",
    ]
    assert _command("cpu", Build.model_validate({"cpu": {"variant": "all-variants"}}))[-3:] == [
        "-DGGML_NATIVE=OFF", "-DGGML_BACKEND_DL=ON", "-DGGML_CPU_ALL_VARIANTS=ON"
    ]


def test_cuda_archs_from_recipe_and_ccache_wraps_nvcc() -> None:
    build = Build.model_validate({"backends": ["cuda"], "cuda": {"archs": [86, 89, 90]}, "cmake_args": {"GGML_CUDA_FA_ALL_QUANTS": True}})
    assert _command("cuda", build) == [
        *COMMON,
        "-DCMAKE_CUDA_FLAGS=-Xcompiler=-ffile-prefix-map=../src=.",
        "-DCMAKE_C_COMPILER_LAUNCHER=/usr/bin/ccache", "-DCMAKE_CXX_COMPILER_LAUNCHER=/usr/bin/ccache",
        "-DCMAKE_CUDA_COMPILER_LAUNCHER=/usr/bin/ccache", "-DGGML_NATIVE=ON",
        "-DGGML_CUDA=ON", "-DCMAKE_CUDA_ARCHITECTURES=86;89;90", "-DGGML_CUDA_FA_ALL_QUANTS=ON",
    ]


def test_cuda_archs_default_to_the_gpu_seen(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    fake = tmp_path / "nvidia-smi"
    fake.write_text("#!/bin/sh\necho 9.0\necho 9.0\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:/usr/bin:/bin")
    assert cuda.gpu_archs() == ["90"]
    assert "-DCMAKE_CUDA_ARCHITECTURES=90" in _command("cuda", Build.model_validate({"backends": ["cuda"]}))


def test_metal_vulkan_hip() -> None:
    metal = _command("metal", Build.model_validate({"backends": ["metal"]}), ccache=None)
    # @loader_path replaces $ORIGIN (one -D per key)
    assert metal == [
        *[("-DCMAKE_INSTALL_RPATH=@loader_path" if a == "-DCMAKE_INSTALL_RPATH=$ORIGIN" else a) for a in COMMON],
        "-DGGML_NATIVE=ON", "-DGGML_METAL=ON", "-DGGML_METAL_EMBED_LIBRARY=ON",
    ]
    assert _command("vulkan", Build.model_validate({"backends": ["vulkan"]}), ccache=None) == [
        *COMMON, "-DGGML_NATIVE=ON", "-DGGML_VULKAN=ON"]
    hip = _command("hip", Build.model_validate({"backends": ["hip"], "hip": {"targets": ["gfx1100", "gfx90a"]}}))
    assert hip[len(COMMON):] == [
        "-DCMAKE_C_COMPILER_LAUNCHER=/usr/bin/ccache", "-DCMAKE_CXX_COMPILER_LAUNCHER=/usr/bin/ccache",
        "-DCMAKE_HIP_COMPILER_LAUNCHER=/usr/bin/ccache", "-DGGML_NATIVE=ON", "-DGGML_HIP=ON", "-DGPU_TARGETS=gfx1100;gfx90a",
    ]


def test_every_backend_is_registered_and_detects() -> None:
    assert set(backends.REGISTRY) == {"cpu", "cuda", "metal", "vulkan", "hip"}
    for name, backend in backends.REGISTRY.items():
        det = backend.detect()
        assert det.backend == name
        assert det.available or det.missing or det.notes


@pytest.mark.skipif(sys.platform == "darwin", reason="Metal is buildable on macOS")
def test_a_backend_this_machine_cannot_build_is_refused_before_anything_runs(tmp_path: Path) -> None:
    """What doctor knows (Metal needs macOS) stops build at once: exit 2, no lock, no fetch, no CMake."""
    recipe = write_recipe(tmp_path / "r", "mac", "build:\n  backends: [metal]\n")
    res = run_harness("build", recipe, "--builds-dir", tmp_path / "builds")
    assert res.returncode == 2, res.stderr
    assert "mac: this machine cannot build the metal backend: Metal builds need macOS" in res.stderr
    assert f"harness doctor {recipe}" in res.stderr and "Traceback" not in res.stderr
    assert "configuring" not in res.stderr + res.stdout
    assert not (tmp_path / "r" / "mac.lock").exists() and not (tmp_path / "builds").exists()
    assert not (Path(os.environ["HARNESS_CACHE"]) / "mirrors").exists()


def test_an_nvcc_off_path_counts_as_cmake_would_find_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A CUDA toolkit whose bin/ is not on PATH ($CUDA_PATH here) is buildable: detect finds it and
    the build tells CMake which nvcc (CUDACXX), instead of refusing what CMake would build."""
    toolkit = tmp_path / "cuda"
    nvcc = toolkit / "bin" / "nvcc"
    nvcc.parent.mkdir(parents=True)
    nvcc.write_text("#!/bin/sh\necho 'Cuda compilation tools, release 13.0, V13.0.88'\n")
    nvcc.chmod(0o755)
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    monkeypatch.setenv("CUDA_PATH", str(toolkit))
    monkeypatch.delenv("CUDACXX", raising=False)
    if cuda.nvcc_path() != str(nvcc):
        pytest.skip("a toolkit in /usr/bin or /usr/local/cuda comes first here")
    det = cuda.Cuda().detect()
    assert det.available and det.found["nvcc"] == f"13.0.88 ({nvcc})", det
    assert cuda.Cuda().env() == {"CUDACXX": str(nvcc)}
