"""CPU: native (this machine's ISA), portable (baseline ISA) or all-variants (runtime dispatch)."""

from __future__ import annotations

from harness.backends.base import Detection, Tool
from harness.recipe import Build


class Cpu:
    name = "cpu"

    def cmake_args(self, build: Build) -> dict[str, str]:
        variant = build.cpu.variant
        if variant == "native":
            return {"GGML_NATIVE": "ON"}
        if variant == "portable":
            return {"GGML_NATIVE": "OFF"}
        return {"GGML_NATIVE": "OFF", "GGML_BACKEND_DL": "ON", "GGML_CPU_ALL_VARIANTS": "ON"}

    def env(self) -> dict[str, str]:
        return {}

    def tools(self) -> list[Tool]:
        return []

    def detect(self) -> Detection:
        return Detection(self.name, True)

    def toolchain(self) -> dict[str, str]:
        return {}

    def launcher_languages(self) -> list[str]:
        return ["C", "CXX"]
