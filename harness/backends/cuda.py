"""CUDA: nvcc, architectures from the recipe or the GPU nvidia-smi sees (never all of them)."""

from __future__ import annotations

import os
import re
import shutil

from harness import console, runner
from harness.backends.base import Detection, Tool, detect_tools
from harness.recipe import Build

NVCC = Tool("nvcc", "CUDA compiler", "install the CUDA toolkit (https://developer.nvidia.com/cuda-downloads) and put its bin/ on PATH")


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


class Cuda:
    name = "cuda"

    def cmake_args(self, build: Build) -> dict[str, str]:
        archs = [str(a) for a in build.cuda.archs] if build.cuda.archs else gpu_archs()
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
        archs = gpu_archs()
        notes = [f"GPU compute capability: {', '.join(a[:-1] + '.' + a[-1] for a in archs)} (archs {', '.join(archs)})"] if archs else ["no GPU seen by nvidia-smi (set build.cuda.archs)"]
        return Detection(det.backend, det.available, det.found, det.missing, notes)

    def toolchain(self) -> dict[str, str]:
        return {"nvcc": nvcc_version() or "missing"}

    def launcher_languages(self) -> list[str]:
        return ["C", "CXX", "CUDA"]
