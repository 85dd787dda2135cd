"""A build's own ``gguf-py``: the type and architecture tables of the tree that wrote the files.

A published build (``builds/<recipe>/<backend>/gguf-py``) carries the gguf-py of its source
tree, which knows that tree's (or fork's) weight types and architectures before any gguf
release on PyPI does.  Only ``gguf/constants.py`` is loaded, on its own (it imports
nothing but ``enum`` and ``typing``), so a build's package never replaces the installed one.

- :func:`use` registers its ``GGML_QUANT_SIZES`` with the reader's type table (:func:`ggml_types.register_types`)
  and the architectures whose tensor list has NextN/MTP tensors with :mod:`harness.gguf_files.mtp`;
- the bounded validation of :mod:`harness.gguf_files.reader` still runs on every file.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

from harness.errors import InputError

CONSTANTS = Path("gguf") / "constants.py"
_loaded: dict[Path, ModuleType] = {}


def constants(gguf_py: Path) -> ModuleType:
    """``gguf-py/gguf/constants.py`` of a build, loaded as a private module (cached per path)."""
    path = (gguf_py / CONSTANTS).resolve()
    if path in _loaded:
        return _loaded[path]
    if not path.is_file():
        raise InputError(f"{gguf_py}: no {CONSTANTS} (not a gguf-py directory)")
    name = f"_harness_build_gguf_constants_{len(_loaded)}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise InputError(f"{path}: cannot be loaded")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses and enums look their module up while the file runs
    try:
        spec.loader.exec_module(module)
    except Exception as exc:  # the build's own Python file: whatever it raises, it cannot be loaded
        sys.modules.pop(name, None)
        raise InputError(f"{path}: cannot be loaded: {exc}") from None
    _loaded[path] = module
    return module


def type_table(module: ModuleType) -> dict[int, tuple[str, int, int]]:
    """ggml type id -> (name, block size, bytes per block), from ``GGML_QUANT_SIZES``."""
    sizes = getattr(module, "GGML_QUANT_SIZES", {})
    return {int(t): (t.name, int(b), int(s)) for t, (b, s) in sizes.items()}


def mtp_architectures(module: ModuleType) -> set[str]:
    """Architecture names whose tensor list holds NextN/MTP tensors (``MODEL_TENSORS``)."""
    tensors = getattr(module, "MODEL_TENSORS", {})
    names = getattr(module, "MODEL_ARCH_NAMES", {})
    out = set()
    for arch, kinds in tensors.items():
        if any(getattr(k, "name", "").startswith("NEXTN_") for k in kinds) and arch in names:
            out.add(str(names[arch]))
    return out


def use(gguf_py: Path) -> list[str]:
    """Register a build's type and MTP architecture tables; returns the type names it added or changed."""
    from harness.gguf_files import ggml_types, mtp

    module = constants(gguf_py)
    added = ggml_types.register_types(type_table(module))
    mtp.register_architectures(mtp_architectures(module))
    return added


def use_build(build_root: Path) -> list[str]:
    """:func:`use` for a published build root (``builds/<recipe>/<backend>``), when it has a gguf-py."""
    gguf_py = build_root / "gguf-py"
    if not (gguf_py / CONSTANTS).is_file():
        raise InputError(f"{build_root}: no gguf-py/{CONSTANTS} (not a published build root)")
    return use(gguf_py)
