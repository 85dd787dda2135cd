"""Collecting a build's outputs into builds/<recipe>/<backend>/ and describing them in manifest.json."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from harness import atomic
from harness.errors import StepError

LIB_PATTERNS = ("*.so", "*.so.*", "*.dylib", "*.dll", "*.metallib")
CONVERTER = ("convert_hf_to_gguf.py", "conversion", "gguf-py", "requirements")
LICENSES = ("LICENSE",)  # shipped with the binaries (harness pack archives carry it too)
MANIFEST = "manifest.json"


class OutsideTree(StepError):
    """Something to publish is, or contains, a link that leads out of its tree."""


def collect(bdir: Path, src: Path, targets: list[str], dest: Path) -> None:
    """Targets and shared libraries into dest/bin, the converter and LICENSE of the same tree beside them.

    Only the tree is published: a target, library or converter file that is a link leading
    out of the build directory or the source tree (a patch can make ``conversion/`` one) is
    refused with :class:`OutsideTree`, never followed.  Links inside the tree are copied as
    the files they point to; a library's version link (``libllama.so -> libllama.so.0``)
    stays a link to its sibling.
    """
    bin_src, bin_dest = bdir / "bin", dest / "bin"
    bin_dest.mkdir(parents=True)
    for target in targets:
        exe = bin_src / target
        if not exe.exists():
            raise FileNotFoundError(f"ninja built no {exe}")
        _inside(exe, bdir)
        shutil.copy2(exe, bin_dest / target)
    for pattern in LIB_PATTERNS:
        for lib in bin_src.glob(pattern):
            target_path = bin_dest / lib.name
            if lib.is_symlink():
                link = lib.readlink()
                if link.name != str(link) or not (bin_src / link).exists():
                    raise OutsideTree(f"refusing to publish {lib}: a link to {link}, not to a library beside it")
                target_path.symlink_to(link)
            else:
                _inside(lib, bdir)
                shutil.copy2(lib, target_path)
    for name in (*CONVERTER, *LICENSES):
        path = src / name
        if not os.path.lexists(path):
            continue
        _inside(path, src)
        if path.is_dir():
            _check_links(path, src)
            shutil.copytree(path, dest / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(path, dest / name)


def _inside(path: Path, tree: Path) -> None:
    """Refuse ``path`` when it resolves (through any link) outside ``tree``, or to nothing."""
    try:
        resolved = path.resolve(strict=True)
    except (OSError, RuntimeError):
        raise OutsideTree(f"refusing to publish {path}: a broken or looping link") from None
    if not resolved.is_relative_to(tree.resolve()):
        raise OutsideTree(f"refusing to publish {path}: it is a link to {resolved}, outside {tree}",
                          hint="a stack item turned it into a link out of the tree; only the tree is published")


def _check_links(directory: Path, tree: Path) -> None:
    """Every link copytree would follow below ``directory`` (through linked directories too) stays in ``tree``."""
    todo, seen = [directory], set()
    while todo:
        top = todo.pop()
        if top.resolve() in seen:
            continue
        seen.add(top.resolve())
        for root, dirs, files in os.walk(top):  # os.walk does not descend into linked directories
            for name in [*dirs, *files]:
                path = Path(root, name)
                if path.is_symlink():
                    _inside(path, tree)  # before following it anywhere
                    if path.is_dir():
                        todo.append(path)


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
