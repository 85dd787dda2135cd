"""CPU: ggml's CPU backend alone.  Its section ``build.cpu`` is the CPU code of every backend
(CUDA, Vulkan and HIP builds keep a CPU backend too): the instruction-set policy in
harness/build/isa.py reads it whichever backend builds."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from harness.backends.base import Backend, Detection, DiskEstimate, MiB, Options, Tool
from harness.backends.cpu_extensions import CpuExtension


class CpuOptions(Options):
    """The CPU code of every backend (see harness/build/isa.py)."""

    variant: Literal["native", "portable", "all-variants"] = "native"
    disable: list[CpuExtension] = Field(default_factory=list)  # e.g. [amx, avx512]

    @field_validator("disable")
    @classmethod
    def _disable(cls, value: list[str]) -> list[str]:
        return list(dict.fromkeys(value))


class Cpu:
    name = "cpu"
    gpu = False
    options = CpuOptions
    disk = DiskEstimate(build_dir=256 * MiB, published=64 * MiB)  # 60-80 MB measured with the default targets
    fast_path = True  # its identity holds no toolkit or driver answer

    def cmake_args(self, options: CpuOptions) -> dict[str, str]:
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


BACKEND: Backend = Cpu()
