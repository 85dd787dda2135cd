"""HIP (ROCm): hipconfig's clang as HIPCXX, GPU targets from the recipe."""

from __future__ import annotations

import shutil

from harness import runner
from harness.backends.base import Backend, Detection, DiskEstimate, GiB, Options, Tool, detect_tools

HIPCONFIG = Tool("hipconfig", "ROCm HIP toolchain", "install ROCm (https://rocm.docs.amd.com) and put /opt/rocm/bin on PATH")


class HipOptions(Options):
    targets: list[str] | None = None  # GPU_TARGETS (gfx1100, ...)


class Hip:
    name = "hip"
    gpu = True
    options = HipOptions
    disk = DiskEstimate(build_dir=4 * GiB, published=1 * GiB)
    fast_path = False  # hipconfig answers for its identity

    def cmake_args(self, options: HipOptions) -> dict[str, str]:
        args = {"GGML_HIP": "ON"}
        if options.targets:
            args["GPU_TARGETS"] = ";".join(options.targets)
        return args

    def env(self) -> dict[str, str]:
        if not shutil.which("hipconfig"):
            return {}
        llvm = runner.run(["hipconfig", "-l"], check=False).stdout.strip()
        root = runner.run(["hipconfig", "-R"], check=False).stdout.strip()
        return {"HIPCXX": f"{llvm}/clang", "HIP_PATH": root}

    def tools(self) -> list[Tool]:
        return [HIPCONFIG]

    def detect(self) -> Detection:
        return detect_tools(self.name, self.tools())

    def toolchain(self) -> dict[str, str]:
        if not shutil.which("hipconfig"):
            return {"hip": "missing"}
        return {"hip": runner.run(["hipconfig", "--version"], check=False).stdout.strip()}

    def launcher_languages(self) -> list[str]:
        return ["C", "CXX", "HIP"]


BACKEND: Backend = Hip()
