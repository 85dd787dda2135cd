"""Build backends, one small module each, registered here: the one list of backends.

A backend is ``harness/backends/<name>.py`` with a module-level ``BACKEND`` (the Backend
interface in base.py) and its name in ``MODULES``.  The recipe schema (``build.backends``
and the ``build.<name>`` sections), ``harness doctor``, the builds, llama-server's defaults,
the smoke checks, the disk preflight and the no-op fast path all ask this registry; none
lists backends of its own.  (The modules are imported by name, as the CLI's command table is.)
"""

from __future__ import annotations

from importlib import import_module

from harness.backends.base import Backend, Detection, Tool
from harness.errors import InputError

MODULES = (  # doctor's order and the order "one of ..." messages list them in
    "cpu",
    "cuda",
    "metal",
    "vulkan",
    "hip",
)

REGISTRY: dict[str, Backend] = {name: import_module(f"harness.backends.{name}").BACKEND for name in MODULES}


def get(name: str) -> Backend:
    try:
        return REGISTRY[name]
    except KeyError:
        raise InputError(f"unknown backend {name!r}; one of {', '.join(REGISTRY)}") from None


def uses_gpu(name: str) -> bool:
    """Does the backend ``name`` run layers on a GPU (False for a name no backend has)?"""
    backend = REGISTRY.get(name)
    return backend is not None and backend.gpu


__all__ = ["MODULES", "REGISTRY", "Backend", "Detection", "Tool", "get", "uses_gpu"]
