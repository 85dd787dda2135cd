"""Vulkan: the loader and headers (Vulkan SDK) and glslc for the shaders."""

from __future__ import annotations

import shutil

from harness import runner
from harness.backends.base import Backend, Detection, DiskEstimate, GiB, MiB, Options, Tool, detect_tools

GLSLC = Tool("glslc", "GLSL -> SPIR-V shader compiler", "install the Vulkan SDK (https://vulkan.lunarg.com) or `apt install glslc`")
HEADERS = Tool("pkg-config", "finds the Vulkan loader", "`apt install libvulkan-dev pkg-config` or the Vulkan SDK")


class VulkanOptions(Options):
    pass


class Vulkan:
    name = "vulkan"
    gpu = True
    options = VulkanOptions
    disk = DiskEstimate(build_dir=1 * GiB, published=256 * MiB)
    fast_path = False  # glslc answers for its identity

    def cmake_args(self, options: VulkanOptions) -> dict[str, str]:
        return {"GGML_VULKAN": "ON"}

    def env(self) -> dict[str, str]:
        return {}

    def tools(self) -> list[Tool]:
        return [GLSLC, HEADERS]

    def detect(self) -> Detection:
        det = detect_tools(self.name, self.tools())
        if shutil.which("pkg-config") and runner.run(["pkg-config", "--exists", "vulkan"], check=False).returncode != 0:
            return Detection(self.name, False, det.found, [*det.missing, Tool("vulkan.pc", "Vulkan loader and headers", HEADERS.install)])
        return det

    def toolchain(self) -> dict[str, str]:
        if not shutil.which("glslc"):
            return {"glslc": "missing"}
        lines = runner.run(["glslc", "--version"], check=False).stdout.splitlines()
        return {"glslc": lines[0] if lines else "?"}

    def launcher_languages(self) -> list[str]:
        return ["C", "CXX"]


BACKEND: Backend = Vulkan()
