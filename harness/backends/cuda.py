"""CUDA: nvcc and cuBLAS, architectures from the recipe or the GPU nvidia-smi sees (never all of them).

ggml-cuda links ``CUDA::cublas`` (ggml/src/ggml-cuda/CMakeLists.txt) and includes
``cublas_v2.h``: a toolkit with nvcc and no cuBLAS (a runtime-only or compiler-only install)
stops CMake at configure.  :func:`cublas` looks where CMake's FindCUDAToolkit looks: the
toolkit root nvcc reports (``nvcc --dryrun``'s ``TOP``, what CMake's compiler detection reads;
else nvcc's own ``bin/..``), ``$CUDAToolkit_ROOT`` and ``$CUDA_PATH``, each with ``lib64``,
``lib``, ``targets/*/lib`` and ``math_libs``, nvcc's own ``-L``/``-I`` directories, and the
system's library and include directories.
"""

from __future__ import annotations

import glob
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from harness import console, runner
from harness.backends.base import Backend, Detection, DiskEstimate, GiB, Options, Tool, detect_tools

NVCC = Tool("nvcc", "CUDA compiler", "install the CUDA toolkit (https://developer.nvidia.com/cuda-downloads) and put its bin/ on PATH")
CUBLAS_INSTALL = ("install the toolkit's cuBLAS development files (e.g. cuda-libraries-dev-<version> or libcublas-dev-<version>; "
                  "Debian: nvidia-cuda-toolkit), or point CUDAToolkit_ROOT at a complete toolkit")
SYSTEM_LIB_DIRS = ("/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib64", "/usr/lib", "/usr/local/lib")
SYSTEM_INCLUDE_DIRS = ("/usr/include", "/usr/local/include")


def gpu_archs() -> list[str]:
    """Compute capabilities of the GPUs nvidia-smi sees, as CMake architectures ("8.9" -> "89")."""
    if not shutil.which("nvidia-smi"):
        return []
    res = runner.run(["nvidia-smi", "--query-gpu=compute_cap", "--format=csv,noheader"], check=False, timeout=30)
    if res.returncode != 0:
        return []
    caps = {line.strip().replace(".", "") for line in res.stdout.splitlines() if re.fullmatch(r"\d+\.\d+", line.strip())}
    return sorted(caps)


def nvcc_path() -> str | None:
    """nvcc where CMake's FindCUDAToolkit / CMAKE_CUDA_COMPILER would find it: $CUDACXX, PATH,
    $CUDA_PATH/bin, /usr/local/cuda/bin (a toolkit off PATH is common, and CMake builds with it)."""
    candidates = [os.environ.get("CUDACXX"), shutil.which("nvcc"),
                  os.path.join(os.environ["CUDA_PATH"], "bin", "nvcc") if os.environ.get("CUDA_PATH") else None,
                  "/usr/local/cuda/bin/nvcc"]
    return next((c for c in candidates if c and os.path.isfile(c) and os.access(c, os.X_OK)), None)


def nvcc_version() -> str | None:
    nvcc = nvcc_path()
    if not nvcc:
        return None
    out = runner.run([nvcc, "--version"], check=False).stdout
    m = re.search(r"release ([\d.]+), V([\d.]+)", out)
    return m.group(2) if m else out.strip().splitlines()[-1] if out.strip() else None


@dataclass(frozen=True)
class Cublas:
    library: str | None  # libcublas.so / libcublas.a as find_library(cublas) would pick it
    header: str | None  # cublas_v2.h
    looked_in: tuple[str, ...]  # the toolkit roots searched, for the message

    @property
    def found(self) -> bool:
        return self.library is not None and self.header is not None

    def reason(self) -> str:
        """One line: what is missing and where it was looked for."""
        what = " and ".join(w for w, got in (("libcublas", self.library), ("cublas_v2.h", self.header)) if got is None)
        return f"no {what} under {', '.join(self.looked_in) or 'any CUDA toolkit root'} or the system's directories"


def _nvcc_dirs(nvcc: str) -> tuple[str | None, list[str], list[str]]:
    """The toolkit root, -L and -I directories nvcc itself reports (``nvcc --dryrun``: ``#$ TOP=...``,
    ``LIBRARIES=``, ``INCLUDES=``), as CMake's CUDA compiler detection reads them; nothing from a
    stand-in that prints none (then nvcc's ``bin/..`` is the root)."""
    try:
        res = runner.run([nvcc, "--dryrun", "-x", "cu", "-E", os.devnull], check=False, timeout=30)
    except (OSError, runner.TimeoutExpired):
        return None, [], []
    text = res.stdout + res.stderr
    top = re.search(r"^#\$ TOP=(.+)$", text, re.M)
    libs = re.findall(r'-L"?([^"\s]+)', "".join(re.findall(r"^#\$ LIBRARIES=(.*)$", text, re.M)))
    incs = re.findall(r'-I"?([^"\s]+)', "".join(re.findall(r"^#\$ INCLUDES=(.*)$", text, re.M)))
    return (os.path.normpath(top.group(1).strip()) if top else None), libs, incs


def cublas(nvcc: str | None = None) -> Cublas:
    """Where CMake's FindCUDAToolkit would find cuBLAS for ``nvcc`` (default: :func:`nvcc_path`)."""
    nvcc = nvcc or nvcc_path()
    roots: list[str] = []
    lib_dirs: list[str] = []
    inc_dirs: list[str] = []
    if nvcc:
        top, lib_dirs, inc_dirs = _nvcc_dirs(nvcc)
        roots += [top] if top else []
        roots.append(str(Path(os.path.realpath(nvcc)).parent.parent))
    roots += [os.environ[v] for v in ("CUDAToolkit_ROOT", "CUDA_PATH") if os.environ.get(v)]
    roots = list(dict.fromkeys(os.path.normpath(r) for r in roots))
    for root in roots:
        lib_dirs += [f"{root}/lib64", f"{root}/lib", *sorted(glob.glob(f"{root}/targets/*/lib")),
                     f"{root}/math_libs/lib64", *sorted(glob.glob(f"{root}/math_libs/*/lib64"))]
        inc_dirs += [f"{root}/include", *sorted(glob.glob(f"{root}/targets/*/include"))]
    lib_dirs += SYSTEM_LIB_DIRS
    inc_dirs += SYSTEM_INCLUDE_DIRS
    # find_library(cublas) takes libcublas.so (the development symlink, not libcublas.so.13 alone) or libcublas.a
    library = next((f"{d}/{n}" for d in dict.fromkeys(lib_dirs) for n in ("libcublas.so", "libcublas.a")
                    if os.path.isfile(f"{d}/{n}")), None)
    header = next((f"{d}/cublas_v2.h" for d in dict.fromkeys(inc_dirs) if os.path.isfile(f"{d}/cublas_v2.h")), None)
    return Cublas(library, header, tuple(roots))


def nvcc_archs() -> list[str] | None:
    """The virtual architectures the local nvcc can target (``nvcc --list-gpu-arch``: compute_75 -> "75");
    None without an nvcc that answers (older than CUDA 11)."""
    nvcc = nvcc_path()
    if not nvcc:
        return None
    res = runner.run([nvcc, "--list-gpu-arch"], check=False, timeout=60)
    found = re.findall(r"^compute_(\d+)\w*$", res.stdout, re.M)
    return sorted(set(found), key=int) if res.returncode == 0 and found else None


def untargetable(archs: list[str], supported: list[str]) -> list[str]:
    """The CMake architectures of ``archs`` ("61", "90a", "120-real") nvcc cannot compile for."""
    bad = []
    for arch in archs:
        number = re.match(r"\d+", arch)  # "native", "all", "all-major": CMake's own choice
        if number and number.group(0) not in supported:
            bad.append(arch)
    return bad


class CudaOptions(Options):
    archs: list[int | str] | None = None  # CMake architectures (86, "90a"); default: the GPUs nvidia-smi sees


class Cuda:
    name = "cuda"
    gpu = True
    options = CudaOptions
    disk = DiskEstimate(build_dir=4 * GiB, published=1 * GiB)
    fast_path = False  # nvcc and nvidia-smi answer for its identity

    def cmake_args(self, options: CudaOptions) -> dict[str, str]:
        archs = [str(a) for a in options.archs] if options.archs else gpu_archs()
        args = {"GGML_CUDA": "ON"}
        if archs:
            args["CMAKE_CUDA_ARCHITECTURES"] = ";".join(archs)
        else:
            console.warn("cuda: no build.cuda.archs and no GPU seen by nvidia-smi: with GGML_NATIVE=ON (the CPU policy's "
                         "default) ggml builds for the 'native' GPU, which fails without one; set build.cuda.archs (e.g. [90])")
        return args

    def env(self) -> dict[str, str]:
        nvcc = nvcc_path()  # off PATH: tell CMake which nvcc detect() found
        return {"CUDACXX": nvcc} if nvcc and not os.environ.get("CUDACXX") and not shutil.which("nvcc") else {}

    def tools(self) -> list[Tool]:
        return [NVCC]

    def detect(self) -> Detection:
        found = {}
        version = nvcc_version()
        if version:
            found["nvcc"] = version
        det = detect_tools(self.name, self.tools(), found)
        nvcc = nvcc_path()
        if det.missing and nvcc:  # off PATH, where CMake finds it too
            det = Detection(det.backend, True, {**det.found, "nvcc": f"{found.get('nvcc')} ({nvcc})"}, [])
        if nvcc:  # what ggml-cuda's CMake links besides nvcc's own runtime
            blas = cublas(nvcc)
            if blas.found:
                det = Detection(det.backend, det.available, {**det.found, "cublas": str(blas.library)}, det.missing)
            else:
                det = Detection(det.backend, False, det.found,
                                [*det.missing, Tool("cuBLAS", f"CUDA's BLAS, linked by ggml-cuda as CUDA::cublas: "
                                                              f"{blas.reason()}", CUBLAS_INSTALL)])
        archs = gpu_archs()
        notes = [f"GPU compute capability: {', '.join(a[:-1] + '.' + a[-1] for a in archs)} (archs {', '.join(archs)})"] if archs else ["no GPU seen by nvidia-smi (set build.cuda.archs)"]
        return Detection(det.backend, det.available, det.found, det.missing, notes)

    def toolchain(self) -> dict[str, str]:
        return {"nvcc": nvcc_version() or "missing"}

    def launcher_languages(self) -> list[str]:
        return ["C", "CXX", "CUDA"]


BACKEND: Backend = Cuda()
