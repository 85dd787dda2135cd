"""CPU: ggml's CPU backend alone.  Its instruction sets (native, portable, all-variants) are
the policy every backend shares: harness/build/isa.py."""

from __future__ import annotations

from harness.backends.base import Detection, Tool
from harness.recipe.schema import Build


class Cpu:
    name = "cpu"

    def cmake_args(self, build: Build) -> dict[str, str]:
        return {}

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
