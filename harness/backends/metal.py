"""Metal (macOS): the shader library embedded in the binary, @loader_path rpath."""

from __future__ import annotations

import platform
import shutil

from harness import runner
from harness.backends.base import Backend, Detection, DiskEstimate, MiB, Options, Tool, detect_tools

XCRUN = Tool("xcrun", "Xcode command line tools (Metal compiler)", "xcode-select --install")


class MetalOptions(Options):
    embed_library: bool = True


class Metal:
    name = "metal"
    gpu = True
    options = MetalOptions
    disk = DiskEstimate(build_dir=512 * MiB, published=128 * MiB)
    fast_path = False  # the macOS version is part of its identity

    def cmake_args(self, options: MetalOptions) -> dict[str, str]:
        return {
            "GGML_METAL": "ON",
            "GGML_METAL_EMBED_LIBRARY": "ON" if options.embed_library else "OFF",
            "CMAKE_INSTALL_RPATH": "@loader_path",
        }

    def env(self) -> dict[str, str]:
        return {}

    def tools(self) -> list[Tool]:
        return [XCRUN]

    def detect(self) -> Detection:
        if platform.system() != "Darwin":
            return Detection(self.name, False, notes=["Metal builds need macOS"])
        det = detect_tools(self.name, self.tools())
        if det.available and shutil.which("xcrun"):
            res = runner.run(["xcrun", "-f", "metal"], check=False)
            if res.returncode != 0:
                return Detection(self.name, False, det.found, [Tool("metal", "Metal shader compiler", "install Xcode (not only the CLT)")])
        return det

    def toolchain(self) -> dict[str, str]:
        return {"macos": platform.mac_ver()[0] or "n/a"}

    def launcher_languages(self) -> list[str]:
        return ["C", "CXX", "OBJC"]


BACKEND: Backend = Metal()
