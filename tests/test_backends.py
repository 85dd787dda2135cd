"""The exact configure command per backend (CUDA, Metal, Vulkan and HIP cannot be built here)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from harness import backends
from harness.backends import cuda
from harness.build import cmake, isa
from harness.recipe.schema import Build
from tests.conftest import run_harness, write_recipe

SRC, BDIR = Path("/c/trees/r/src"), Path("/c/builds/r/b")
STAMP = cmake.Stamp(2, "0c1e570+stack.1a2b3c4d")
COMMON = [
    "cmake", "-S", "/c/trees/r/src", "-B", "/c/builds/r/b", "-G", "Ninja", "-DCMAKE_MAKE_PROGRAM=ninja",
    "-DCMAKE_BUILD_TYPE=Release", "-DBUILD_SHARED_LIBS=ON", "-DLLAMA_BUILD_TESTS=OFF", "-DLLAMA_BUILD_EXAMPLES=OFF",
    "-DLLAMA_BUILD_TOOLS=ON", "-DLLAMA_BUILD_SERVER=ON", "-DLLAMA_USE_PREBUILT_UI=OFF",
    "-DCMAKE_INSTALL_RPATH=$ORIGIN", "-DCMAKE_BUILD_WITH_INSTALL_RPATH=ON", "-DCMAKE_LINK_DEPENDS_NO_SHARED=ON",
    "-DLLAMA_BUILD_NUMBER=2", "-DLLAMA_BUILD_COMMIT=0c1e570+stack.1a2b3c4d", "-DGIT_EXE=OFF",
    "-DGGML_BUILD_COMMIT=0c1e570+stack.1a2b3c4d", "-DGGML_CCACHE=OFF",
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


def _toolkit(root: Path, *, cublas: str | None = "lib64", header: str = "include", top: Path | None = None) -> Path:
    """A CUDA toolkit's layout: an nvcc stand-in (``--dryrun`` prints ``#$ TOP=`` when ``top``, as
    nvcc does), libcublas.so under ``root/<cublas>`` (None: no cuBLAS) and cublas_v2.h under ``root/<header>``."""
    nvcc = root / "bin" / "nvcc"
    nvcc.parent.mkdir(parents=True)
    dryrun = f'if [ "$1" = --dryrun ]; then echo \'#$ TOP={top}/bin/..\' >&2; exit 0; fi\n' if top else ""
    nvcc.write_text(f"#!/bin/sh\n{dryrun}echo 'Cuda compilation tools, release 13.0, V13.0.88'\n")
    nvcc.chmod(0o755)
    (root / "lib64").mkdir()
    (root / "lib64" / "libcudart.so").write_bytes(b"")
    if cublas:
        (root / cublas).mkdir(parents=True, exist_ok=True)
        (root / cublas / "libcublas.so").write_bytes(b"")
        (root / header).mkdir(parents=True, exist_ok=True)
        (root / header / "cublas_v2.h").write_text("")
    return nvcc


def _only(monkeypatch: pytest.MonkeyPatch, toolkit: Path) -> None:
    """This toolkit alone: off PATH, at $CUDA_PATH; skip where the system's own cuBLAS would answer."""
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    monkeypatch.setenv("CUDA_PATH", str(toolkit))
    for var in ("CUDACXX", "CUDAToolkit_ROOT"):
        monkeypatch.delenv(var, raising=False)
    if cuda.nvcc_path() != str(toolkit / "bin" / "nvcc"):
        pytest.skip("a toolkit in /usr/bin or /usr/local/cuda comes first here")
    if any((Path(d) / "libcublas.so").exists() for d in cuda.SYSTEM_LIB_DIRS):
        pytest.skip("this machine has a cuBLAS of its own in the system's directories")


def test_an_nvcc_off_path_counts_as_cmake_would_find_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A CUDA toolkit whose bin/ is not on PATH ($CUDA_PATH here) is buildable: detect finds it and
    the build tells CMake which nvcc (CUDACXX), instead of refusing what CMake would build."""
    toolkit = tmp_path / "cuda"
    nvcc = _toolkit(toolkit)
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    monkeypatch.setenv("CUDA_PATH", str(toolkit))
    monkeypatch.delenv("CUDACXX", raising=False)
    if cuda.nvcc_path() != str(nvcc):
        pytest.skip("a toolkit in /usr/bin or /usr/local/cuda comes first here")
    det = cuda.Cuda().detect()
    assert det.available and det.found["nvcc"] == f"13.0.88 ({nvcc})", det
    assert cuda.Cuda().env() == {"CUDACXX": str(nvcc)}


def test_a_toolkit_without_cublas_is_not_ready_and_build_refuses_before_fetching(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """nvcc alone is not a CUDA backend: ggml-cuda links CUDA::cublas.  doctor says why in one line,
    `doctor RECIPE` exits 1, build exits 2 before the lock, the mirror or CMake."""
    toolkit = tmp_path / "cuda"
    _toolkit(toolkit, cublas=None)
    _only(monkeypatch, toolkit)
    det = cuda.Cuda().detect()
    assert not det.available and [t.program for t in det.missing] == ["cuBLAS"], det
    assert "cublas" not in det.found and det.found["nvcc"].startswith("13.0.88")
    reason = det.missing[0].purpose
    assert f"no libcublas and cublas_v2.h under {toolkit}" in reason and "\n" not in reason
    recipe = write_recipe(tmp_path / "r", "gpu", "build:\n  backends: [cuda]\n  cuda: {archs: [90]}\n")
    doctor = run_harness("doctor", recipe)
    assert doctor.returncode == 1, doctor.stdout + doctor.stderr
    [line] = [ln for ln in doctor.stdout.splitlines() if "cuda: cuBLAS" in ln]
    assert line.startswith("MISSING") and "no libcublas and cublas_v2.h" in line
    assert "gpu: something required is missing" in doctor.stdout
    res = run_harness("build", recipe, "--builds-dir", tmp_path / "builds")
    assert res.returncode == 2, res.stderr
    assert "gpu: this machine cannot build the cuda backend: cuBLAS" in res.stderr and "no libcublas" in res.stderr
    assert "Traceback" not in res.stderr and "configuring" not in res.stderr + res.stdout
    assert not (tmp_path / "r" / "gpu.lock").exists() and not (tmp_path / "builds").exists()
    assert not (Path(os.environ["HARNESS_CACHE"]) / "mirrors").exists()


def test_cublas_without_its_header_or_development_link_is_not_found(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A runtime-only cuBLAS (libcublas.so.13, no libcublas.so, no cublas_v2.h) is what CMake cannot use."""
    toolkit = tmp_path / "cuda"
    nvcc = _toolkit(toolkit, cublas=None)
    (toolkit / "lib64" / "libcublas.so.13").write_bytes(b"")
    _only(monkeypatch, toolkit)
    assert not cuda.cublas(str(nvcc)).found
    (toolkit / "lib64" / "libcublas.so").symlink_to("libcublas.so.13")
    blas = cuda.cublas(str(nvcc))
    assert blas.library == f"{toolkit}/lib64/libcublas.so" and blas.header is None
    assert blas.reason() == f"no cublas_v2.h under {toolkit} or the system's directories"


def test_cublas_is_found_where_findcudatoolkit_looks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """nvcc a wrapper script elsewhere (as /usr/local/bin/nvcc exec'ing the real one): the root is
    what ``nvcc --dryrun`` calls TOP, its libraries under targets/<arch>/lib as NVIDIA's packages put them."""
    real = tmp_path / "cuda-13.0"
    _toolkit(real, cublas="targets/x86_64-linux/lib", header="targets/x86_64-linux/include", top=real)
    wrapper = tmp_path / "wrapper" / "bin" / "nvcc"
    wrapper.parent.mkdir(parents=True)
    wrapper.write_text(f'#!/bin/sh\nexec {real}/bin/nvcc "$@"\n')
    wrapper.chmod(0o755)
    _only(monkeypatch, tmp_path / "wrapper")
    det = cuda.Cuda().detect()
    assert det.available, det
    assert det.found["cublas"] == f"{real}/targets/x86_64-linux/lib/libcublas.so"
    assert cuda.cublas(str(wrapper)).looked_in[0] == str(real)
