"""Collecting a build's outputs into builds/<recipe>/<backend>/ and describing them in manifest.json."""

from __future__ import annotations

import shutil
from pathlib import Path

from harness import atomic

LIB_PATTERNS = ("*.so", "*.so.*", "*.dylib", "*.dll", "*.metallib")
CONVERTER = ("convert_hf_to_gguf.py", "conversion", "gguf-py")
MANIFEST = "manifest.json"


def collect(bdir: Path, src: Path, targets: list[str], dest: Path) -> None:
    """Targets and shared libraries into dest/bin, the converter of the same tree beside them."""
    bin_src, bin_dest = bdir / "bin", dest / "bin"
    bin_dest.mkdir(parents=True)
    for target in targets:
        exe = bin_src / target
        if not exe.exists():
            raise FileNotFoundError(f"ninja built no {exe}")
        shutil.copy2(exe, bin_dest / target)
    for pattern in LIB_PATTERNS:
        for lib in bin_src.glob(pattern):
            target_path = bin_dest / lib.name
            if lib.is_symlink():
                target_path.symlink_to(lib.readlink())
            else:
                shutil.copy2(lib, target_path)
    for name in CONVERTER:
        path = src / name
        if path.is_dir():
            shutil.copytree(path, dest / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        elif path.exists():
            shutil.copy2(path, dest / name)


def file_digests(root: Path) -> dict[str, str]:
    """sha256 of every regular file under root (symlinks recorded as '-> target')."""
    digests: dict[str, str] = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if rel == MANIFEST:
            continue
        if path.is_symlink():
            digests[rel] = f"-> {path.readlink()}"
        elif path.is_file():
            digests[rel] = atomic.sha256_file(path)
    return digests


def drop_cpu_variants(bin_dir: Path, tags: list[str]) -> list[str]:
    """Remove the all-variants CPU libraries ``libggml-cpu-<tag>.*`` that use a disabled extension.

    ggml's loader scores every ``libggml-cpu-*`` beside the binaries and loads the best one
    this CPU supports (ggml/src/ggml-backend-reg.cpp), so a missing variant means the next best.
    """
    removed = []
    for tag in tags:
        for lib in bin_dir.glob(f"libggml-cpu-{tag}.*"):
            lib.unlink()
            removed.append(lib.name)
    return sorted(removed)
