"""The converter's Python: a venv made from the pinned tree's own requirements.

``convert_hf_to_gguf.py`` of a pinned tree needs the versions that tree names
(``requirements/requirements-convert_hf_to_gguf.txt`` and the files it includes with ``-r``:
``transformers==4.57.6``, ``torch``, ``numpy~=2.2`` at 0c1e570); a newer transformers
silently loses config keys and the converter asserts.  So the harness makes one venv per
*requirements digest* (the requirement lines of every file, the Python version, how torch is
got) under ``<cache>/converter-envs/<digest>``, reused by every recipe whose tree pins the
same requirements.  It is made with uv when uv is available, else ``venv`` and pip.

Torch is the CPU build by default: the tree names PyTorch's CPU index.  Where that index
cannot be reached (only PyPI is), the requirement on torch becomes ``torch==TORCH_FALLBACK``
from the configured index (the CPU build the Makefile pins too), and the harness says so.

Made like every cache entry: under a lock, re-checked after taking it, a half-made venv (no
``env.json``) removed first, ``env.json`` written last.  ``model.python`` / ``--python``
still name an interpreter of the user's instead.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict

from harness import atomic, console, paths, runner
from harness.errors import InputError, StepError

REQUIREMENTS = Path("requirements") / "requirements-convert_hf_to_gguf.txt"
TORCH_FALLBACK = "2.13.0"  # the Makefile's TORCH_VERSION: a CPU build these machines keep
SCHEMA = 1
MAX_INCLUDES = 16  # -r depth/count bound: a loop of includes is a bad tree, not a hang
_OPTION = re.compile(r"^(--(?:extra-)?index-url|-i|--find-links|-f)\s*[= ]\s*(\S+)$")
_INCLUDE = re.compile(r"^(?:-r|--requirement)\s*[= ]?\s*(\S+)$")
_NAME = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)")


@dataclass(frozen=True)
class Requirements:
    """The converter's requirements as the tree states them, includes resolved."""

    files: tuple[Path, ...]
    lines: tuple[str, ...]  # requirement specifiers, in order
    indexes: tuple[str, ...]  # --index-url / --extra-index-url values

    def pins(self) -> dict[str, str]:
        """package name (normalized) -> its specifier (``==4.57.6``, ``~=2.2.6``, ``""`` for any)."""
        out = {}
        for line in self.lines:
            m = _NAME.match(line)
            if m:
                out[_normal(m.group(1))] = line[m.end():].split(";")[0].strip()
        return out


class EnvRecord(BaseModel):
    """``env.json``: what the venv was made from; written last (a venv without it is half-made)."""

    model_config = ConfigDict(extra="forbid")
    version: Literal[1] = 1
    digest: str
    python: str  # the venv's interpreter
    base_python: str
    installer: str  # uv | pip
    requirements: list[str]
    torch_note: str | None = None  # set when torch came from elsewhere than the tree says
    installed: dict[str, str] = {}


@dataclass(frozen=True)
class Env:
    root: Path
    record: EnvRecord

    @property
    def python(self) -> str:
        return self.record.python


def read_requirements(tree: Path) -> Requirements | None:
    """The tree's converter requirements (``requirements/...convert_hf_to_gguf.txt`` and its ``-r``
    includes, each inside ``requirements/``); None for a tree that has none."""
    top = tree / REQUIREMENTS
    if not top.is_file():
        return None
    root = top.parent.resolve()
    files: list[Path] = []
    lines: list[str] = []
    indexes: list[str] = []
    todo = [top]
    while todo:
        path = todo.pop(0)
        if len(files) >= MAX_INCLUDES:
            raise InputError(f"{top}: more than {MAX_INCLUDES} requirement files included")
        resolved = path.resolve()
        if not resolved.is_relative_to(root) or not resolved.is_file():
            raise InputError(f"{path}: a requirements include that is not a file in {root}")
        if resolved in files:
            continue
        files.append(resolved)
        for raw in resolved.read_text(encoding="utf-8", errors="replace").splitlines():
            line = raw.split(" #")[0].strip()
            if not line or line.startswith("#"):
                continue
            if m := _INCLUDE.match(line):
                todo.append(resolved.parent / m.group(1))
            elif m := _OPTION.match(line):
                if m.group(1) in ("--index-url", "-i", "--extra-index-url"):
                    indexes.append(m.group(2))
            elif not line.startswith("-"):
                lines.append(line)
    return Requirements(tuple(files), tuple(lines), tuple(indexes))


@dataclass(frozen=True)
class Plan:
    """What the venv for a tree is made from, and where it lives."""

    requirements: Requirements
    lines: list[str]  # what is installed: the tree's lines, torch possibly replaced
    indexes: list[str]  # the tree's indexes that can be reached
    note: str | None  # why torch differs from the tree's line
    digest: str

    @property
    def root(self) -> Path:
        # HARNESS_CONVERTER_ENVS: one directory of envs shared by several caches (CI, test sessions)
        shared = os.environ.get("HARNESS_CONVERTER_ENVS")
        base = Path(shared).expanduser() if shared else paths.cache_dir("converter-envs")
        base.mkdir(parents=True, exist_ok=True)
        return base / self.digest[:16]


def plan(tree: Path) -> Plan | None:
    """The venv ``tree``'s converter needs; None when the tree states no requirements."""
    reqs = read_requirements(tree)
    if reqs is None:
        return None
    reachable = [url for url in reqs.indexes if _reachable(url)]
    lines, note = _torch(reqs, reachable)
    return Plan(reqs, lines, reachable, note, _digest(lines, reachable))


def ensure(tree: Path) -> Env | None:
    """The venv for ``tree``'s converter requirements, made on first use; None when the tree has none."""
    p = plan(tree)
    if p is None:
        return None
    root = p.root
    found = load(root)
    if found is not None:
        return found
    with atomic.lock(root.with_name(root.name + ".lock"), timeout=3600):
        found = load(root)  # another process may have made it meanwhile
        if found is not None:
            return found
        atomic.remove_tree(root, root=root.parent)  # what a killed run half-made
        if p.note:
            console.warn(p.note)
        return _make(root, p)


def load(root: Path) -> Env | None:
    """A finished venv at ``root`` (its ``env.json`` valid and its interpreter there), else None."""
    record_file = root / "env.json"
    if not record_file.is_file():
        return None
    try:
        record = EnvRecord.model_validate_json(record_file.read_text())
    except ValueError:
        return None  # an older or foreign record: made again
    return Env(root, record) if Path(record.python).exists() else None


def requirements_digest(reqs: Requirements) -> str:
    """The tree's requirement lines and indexes, as stated (no network): what cache keys name."""
    return _digest(list(reqs.lines), list(reqs.indexes))


def installed_versions(python: str) -> dict[str, str]:
    """Normalized distribution name -> version, of ``python``'s environment."""
    probe = ("import importlib.metadata as m, json; "
             "print(json.dumps({d.metadata['Name']: d.version for d in m.distributions() if d.metadata['Name']}))")  # fmt: skip
    res = runner.run([python, "-c", probe], check=False, timeout=120)
    try:
        found = json.loads(res.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return {}
    return {_normal(k): str(v) for k, v in found.items()}


def mismatches(reqs: Requirements, versions: dict[str, str]) -> list[str]:
    """``name installed X, the tree pins SPEC`` for each pinned package the versions do not satisfy."""
    from packaging.specifiers import InvalidSpecifier, SpecifierSet
    from packaging.version import InvalidVersion, Version

    out = []
    for name, spec in reqs.pins().items():
        have = versions.get(name)
        if have is None:
            out.append(f"{name} missing (the tree pins {spec or 'it'})")
            continue
        try:
            ok = not spec or Version(have) in SpecifierSet(spec)
        except (InvalidSpecifier, InvalidVersion):
            continue
        if not ok:
            out.append(f"{name} {have}, the tree pins {spec}")
    return out


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _name_of(line: str) -> str | None:
    m = _NAME.match(line)
    return _normal(m.group(1)) if m else None


def _torch(reqs: Requirements, reachable: list[str]) -> tuple[list[str], str | None]:
    """The requirement lines to install: the tree's, with torch from PyPI when its index is unreachable."""
    lines = list(reqs.lines)
    unreachable = [u for u in reqs.indexes if u not in reachable]
    torch = [i for i, line in enumerate(lines) if _name_of(line) == "torch"]
    if not torch or not unreachable:
        return lines, None
    was = lines[torch[0]]
    lines[torch[0]] = f"torch=={TORCH_FALLBACK}"
    return lines, (f"the tree's converter requirements name {was!r} from {', '.join(unreachable)}, which cannot be "
                   f"reached from here: using torch=={TORCH_FALLBACK} (a CPU build) from the configured index instead")


def _reachable(url: str) -> bool:
    import requests

    try:
        requests.head(url, timeout=5, allow_redirects=True)
    except requests.RequestException:
        return False
    return True


def _digest(lines: list[str], indexes: list[str]) -> str:
    h = hashlib.sha256(f"converter-env {SCHEMA}\npython {sys.version_info[0]}.{sys.version_info[1]}\n".encode())
    for line in [*lines, *(f"index {u}" for u in indexes)]:
        h.update(line.encode() + b"\n")
    return h.hexdigest()


def _uv() -> str | None:
    """uv on PATH, beside our interpreter, or from the ``uv`` Python package."""
    beside = Path(sys.executable).parent / "uv"
    found = shutil.which("uv") or (str(beside) if beside.exists() else None)
    if found:
        return found
    try:
        from uv import find_uv_bin  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        return None
    return str(find_uv_bin())


def _make(root: Path, p: Plan) -> Env:
    uv = _uv()
    log = root.with_name(root.name + ".log")
    req_file = root.with_name(root.name + ".requirements.txt")
    atomic.write_text(req_file, "".join(f"--extra-index-url {u}\n" for u in p.indexes) + "\n".join(p.lines) + "\n")
    python = root / "bin" / "python"
    console.step(f"making the converter's Python environment {root} ({'uv' if uv else 'venv + pip'})")
    env = dict(os.environ)
    if uv and os.environ.get("PIP_FIND_LINKS") and not os.environ.get("UV_FIND_LINKS"):
        env["UV_FIND_LINKS"] = os.environ["PIP_FIND_LINKS"]  # pip's local wheels (a CPU torch) for uv too
    try:
        if uv:
            runner.stream([uv, "venv", "--quiet", "--python", sys.executable, root], log_path=log, env=env)
            runner.stream([uv, "pip", "install", "--python", python, "-r", req_file], log_path=log, env=env, append=True)
        else:
            runner.stream([sys.executable, "-m", "venv", root], log_path=log)
            runner.stream([python, "-m", "pip", "install", "--disable-pip-version-check", "-r", req_file],
                          log_path=log, env=env, append=True)  # fmt: skip
    except StepError:
        atomic.remove_tree(root, root=root.parent)
        raise
    record = EnvRecord(digest=p.digest, python=str(python), base_python=sys.executable, installer="uv" if uv else "pip",
                       requirements=p.lines, torch_note=p.note, installed=installed_versions(str(python)))  # fmt: skip
    atomic.write_text(root / "env.json", record.model_dump_json(indent=2) + "\n")
    return Env(root, record)
