"""A published build -> one relocatable archive, and back (``harness pack``, the binary cache).

The archive holds the published directory as it is (``bin/`` with the binaries and the
libraries they load through ``$ORIGIN``, the converter, LICENSE) and its ``manifest.json``.
For a CUDA build, the CUDA runtime libraries the binaries need (cudart, cublas, cublasLt, as
``ldd`` resolves them) are copied into ``bin/`` beside ``libggml-cuda``, so the archive runs on
a machine with only the driver; they are added to the archive's manifest (``files`` and
``bundled``) so a pull checks them like every other file.

``.tar.zst`` when the ``zstandard`` module is installed, ``.tar.gz`` otherwise.  Unpacking
accepts only regular files, directories and links to a sibling file (a library's version
link), at plain relative paths: a crafted archive cannot write outside its directory.
"""

from __future__ import annotations

import io
import json
import re
import tarfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from harness import atomic, runner
from harness.build import manifest as manifest_mod
from harness.build.manifest import Manifest
from harness.errors import StepError

# libraries the CUDA backend links that the driver does not provide (Ollama ships the same set)
CUDA_RUNTIME = re.compile(r"^lib(cudart|cublas|cublasLt)\.so(\.\d+)*$")
MTIME = 0  # archive members carry no build-time dates: the same build gives the same members


class BadArchive(StepError):
    """An archive that is not a build archive of ours, or that would write outside its directory."""


def zstd_available() -> bool:
    try:
        import zstandard  # noqa: F401
    except ImportError:
        return False
    return True


def suffix() -> str:
    return ".tar.zst" if zstd_available() else ".tar.gz"


def runtime_libraries(bin_dir: Path) -> list[Path]:
    """The CUDA runtime libraries (see CUDA_RUNTIME) that the binaries and libraries in ``bin_dir``
    resolve outside it, as the dynamic loader would (``ldd``)."""
    found: dict[str, Path] = {}
    for path in sorted(bin_dir.iterdir()):
        if path.is_symlink() or not path.is_file():
            continue
        res = runner.run(["ldd", str(path)], check=False, timeout=60)
        for line in res.stdout.splitlines():
            m = re.match(r"\s*(\S+) => (/\S+)", line)
            if m and CUDA_RUNTIME.match(m.group(1)) and not (bin_dir / m.group(1)).exists():
                found[m.group(1)] = Path(m.group(2))
    return [found[k] for k in sorted(found)]


def pack(root: Path, dest: Path, *, bundle_cuda: bool) -> tuple[Path, Manifest]:
    """Write the archive of the published build at ``root`` to ``dest`` (atomically); returns it and
    the manifest inside it."""
    manifest = manifest_mod.read(root)
    if manifest is None:
        raise StepError(f"no published build at {root}", hint="build it first: harness build RECIPE --backend B")
    missing = [f for f in manifest.files if not (root / f).exists() and not (root / f).is_symlink()]
    if missing:
        raise StepError(f"{root}: files of its manifest are missing: {', '.join(missing[:5])}",
                        hint="build it again: harness build RECIPE --backend B --force")
    extra: dict[str, Path] = {}
    if bundle_cuda:
        for lib in runtime_libraries(root / "bin"):
            extra[f"bin/{lib.name}"] = lib.resolve()
    if extra:
        manifest = manifest.model_copy(update={
            "files": {**manifest.files, **{rel: atomic.sha256_file(p) for rel, p in extra.items()}},
            "bundled": sorted({*manifest.bundled, *extra}),
        })
    dest.parent.mkdir(parents=True, exist_ok=True)
    with atomic.temp_file_beside(dest) as tmp, _writer(tmp, dest.name) as tar:
        for rel in sorted(manifest.files):
            path = extra.get(rel, root / rel)
            info = tar.gettarinfo(str(path), arcname=rel)
            info.mtime, info.uid, info.gid, info.uname, info.gname = MTIME, 0, 0, "", ""
            if info.isreg():
                with open(path, "rb") as f:
                    tar.addfile(info, f)
            else:
                tar.addfile(info)
        data = (json.dumps(manifest.to_json(), indent=2) + "\n").encode()
        info = tarfile.TarInfo(manifest_mod.NAME)
        info.size, info.mtime, info.mode = len(data), MTIME, 0o644
        tar.addfile(info, io.BytesIO(data))
    return dest, manifest


def unpack(archive: Path, dest: Path) -> None:
    """Extract a build archive into the empty directory ``dest``; BadArchive for anything but
    plain files, directories and sibling links at safe relative paths, or a damaged archive."""
    try:
        with _reader(archive) as tar:
            for member in tar:
                _check_member(member)
                tar.extract(member, dest, set_attrs=member.isreg() or member.isdir(), filter="data")
    except (tarfile.TarError, EOFError, OSError, ValueError) as exc:
        if isinstance(exc, BadArchive):
            raise
        raise BadArchive(f"{archive.name}: a damaged archive: {exc}") from None


def _check_member(member: tarfile.TarInfo) -> None:
    parts = Path(member.name).parts
    if not parts or member.name.startswith("/") or ".." in parts or "\\" in member.name or "\0" in member.name:
        raise BadArchive(f"refusing archive member {member.name!r}: not a plain relative path")
    if member.issym():
        if "/" in member.linkname or member.linkname in ("", ".", ".."):
            raise BadArchive(f"refusing archive member {member.name!r}: a link to {member.linkname!r}, not to a sibling")
    elif not (member.isreg() or member.isdir()):
        raise BadArchive(f"refusing archive member {member.name!r}: not a file, directory or sibling link")


@contextmanager
def _writer(path: Path, name: str) -> Iterator[tarfile.TarFile]:
    if name.endswith(".zst"):
        import zstandard

        with open(path, "wb") as raw, zstandard.ZstdCompressor(level=10).stream_writer(raw) as z, \
                tarfile.open(fileobj=z, mode="w|", format=tarfile.PAX_FORMAT) as tar:
            yield tar
    else:
        import gzip

        with open(path, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as gz, \
                tarfile.open(fileobj=gz, mode="w|", format=tarfile.PAX_FORMAT) as tar:
            yield tar


@contextmanager
def _reader(path: Path) -> Iterator[tarfile.TarFile]:
    with open(path, "rb") as raw:
        magic = raw.read(4)
        raw.seek(0)
        if magic == b"\x28\xb5\x2f\xfd":
            try:
                import zstandard
            except ImportError:
                raise BadArchive(f"{path.name}: a zstd archive, and the zstandard module is not installed",
                                 hint="pip install zstandard") from None
            stream: IO[bytes] = zstandard.ZstdDecompressor().stream_reader(raw)
            with tarfile.open(fileobj=stream, mode="r|") as tar:
                yield tar
        else:
            with tarfile.open(fileobj=raw, mode="r|gz") as tar:
                yield tar


def verify_files(root: Path, manifest: Manifest) -> list[str]:
    """What is wrong with an unpacked build against its manifest: a file missing, extra or whose
    sha256 differs ([] when every file is as the manifest says)."""
    from harness.build import publish

    found = publish.file_digests(root)
    problems = [f"{f}: sha256 differs" for f in sorted(manifest.files.keys() & found.keys())
                if manifest.files[f] != found[f]]
    problems += [f"{f}: missing" for f in sorted(manifest.files.keys() - found.keys())]
    problems += [f"{f}: not in the manifest" for f in sorted(found.keys() - manifest.files.keys())]
    return problems


def describe(manifest: Manifest) -> dict[str, Any]:
    """What a cache shows about an artifact without downloading it (``harness cache ls``)."""
    return {"recipe": manifest.recipe.name, "backend": str(manifest.backend.get("name")), "key": manifest.key_digest,
            "stamp": manifest.stamp.commit, "lock_digest": manifest.lock_digest,
            "patched_commit": manifest.patched_commit, "isa_variant": str(manifest.isa.get("variant")),
            "created": manifest.created}
