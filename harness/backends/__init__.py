"""Build backends, one small module each, registered here."""

from __future__ import annotations

from harness.backends.base import Backend, Detection, Tool
from harness.backends.cpu import Cpu
from harness.backends.cuda import Cuda
from harness.backends.hip import Hip
from harness.backends.metal import Metal
from harness.backends.vulkan import Vulkan
from harness.errors import InputError

REGISTRY: dict[str, Backend] = {
    "cpu": Cpu(),
    "cuda": Cuda(),
    "metal": Metal(),
    "vulkan": Vulkan(),
    "hip": Hip(),
}


def get(name: str) -> Backend:
    try:
        return REGISTRY[name]
    except KeyError:
        raise InputError(f"unknown backend {name!r}; one of {', '.join(REGISTRY)}") from None


__all__ = ["REGISTRY", "Backend", "Detection", "Tool", "get"]
