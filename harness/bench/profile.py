"""A serving profile: what a bench chose per category, for ``harness serve --profile FILE [--category C]``.

Written by ``harness bench`` (profile.json) beside its report: per category the mode and depth
called faster with the highest median ratio (or ``none`` when no mode was clearly faster), with
its interval and the llama-server arguments it was measured with.  It is keyed by what the
choice depends on: the model file's sha256, the build's identity, and the hardware (CPU
model, GPU, threads); ``serve`` refuses a profile made for another model or build.
``llama_swap`` exports it as a llama-swap configuration: one model alias per category, each
with its own speculative flags, so one endpoint routes code and JSON requests to the
configuration that won for them.
"""

from __future__ import annotations

import json
import os
import platform
import shlex
import shutil
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from harness import atomic
from harness.errors import InputError

VERSION = 1


class Choice(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    mode: str  # the mode's label (none, ngram-mod@4, ...)
    types: list[str]  # resolved --spec-type values; [] for none
    depth: int | None
    verdict: str | None  # of the chosen mode; for none: of the closest mode
    speedup: float | None
    low: float | None
    high: float | None
    closest: str | None = None  # when none was chosen: the speculative mode that came closest
    args: list[str]  # llama-server's arguments as measured (all but -m, --host, --port)


class Build(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    identity: str | None  # the build's cache key (manifest "identity")
    stamp: str | None  # LLAMA_BUILD_COMMIT
    backend: str


class Hardware(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    cpu: str
    gpu: str | None
    cores: int
    threads: int | None  # llama-server's -t, when given


class Profile(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    version: Literal[1] = 1
    recipe: str
    model: str
    model_sha256: str
    build: Build
    hardware: Hardware
    bench: str  # the bench.json it came from
    categories: dict[str, Choice]


def sha256(path: Path) -> str:
    return atomic.sha256_file(path)


def build_of(root: Path, backend: str) -> Build:
    from harness.build import published
    manifest = published.manifest(root)
    return Build(identity=manifest.identity if manifest else None, stamp=manifest.stamp.commit if manifest else None,
                 backend=backend)


def hardware(server_args: list[str]) -> Hardware:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return Hardware(cpu=cpu, gpu=_gpu(), cores=os.cpu_count() or 0, threads=_threads(server_args))


def _gpu() -> str | None:
    from harness import runner

    if shutil.which("nvidia-smi") is None:
        return None
    result = runner.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], check=False, timeout=30)
    names = [n.strip() for n in result.stdout.splitlines() if n.strip()]
    return ", ".join(names) if result.returncode == 0 and names else None


def _threads(args: list[str]) -> int | None:
    for i, a in enumerate(args[:-1]):
        if a in ("-t", "--threads") and args[i + 1].isdigit():
            return int(args[i + 1])
    return None


def load(path: Path) -> Profile:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InputError(f"--profile {path}: cannot read it as JSON ({exc})") from None
    if isinstance(data, dict) and data.get("version") != VERSION:
        raise InputError(f"--profile {path}: profile version {data.get('version')!r}, this harness reads {VERSION}",
                         hint="run harness bench again to write a current one")  # fmt: skip
    try:
        return Profile.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise InputError(f"--profile {path}: {where}: {first['msg']}") from None


def write(path: Path, profile: Profile) -> None:
    from harness import atomic

    atomic.write_text(path, profile.model_dump_json(indent=2) + "\n")


def applies(profile: Profile, path: Path, *, model: Path, build: Build) -> None:
    """Refuse (exit 2) a profile made for another model file or another build."""
    if build.identity != profile.build.identity or build.backend != profile.build.backend:
        raise InputError(
            f"--profile {path} was made with build {profile.build.stamp} ({profile.build.backend}, identity "
            f"{str(profile.build.identity)[:12]}), this build is {build.stamp} ({build.backend}, identity "
            f"{str(build.identity)[:12]})",
            hint="run harness bench with this build to make a profile for it",
        )
    digest = sha256(model)
    if digest != profile.model_sha256:
        raise InputError(f"--profile {path} was made for model {profile.model} (sha256 {profile.model_sha256[:12]}), "
                         f"not {model} (sha256 {digest[:12]})",
                         hint="run harness bench on this model to make a profile for it")  # fmt: skip


def choice(profile: Profile, path: Path, category: str | None) -> tuple[str, Choice]:
    """The category's choice; without ``category``: ``all``'s, or the only one."""
    from harness.bench.report import ALL

    known = list(profile.categories)
    if category is None:
        category = ALL if ALL in profile.categories else known[0] if len(known) == 1 else None
        if category is None:
            raise InputError(f"--profile {path} has a choice per category: pick one with --category",
                             hint=f"categories: {', '.join(known)}")  # fmt: skip
    if category not in profile.categories:
        raise InputError(f"--profile {path} has no category {category!r}", hint=f"categories: {', '.join(known)}")
    return category, profile.categories[category]


def llama_swap(profile: Profile, binary: Path, model: Path) -> str:
    """A llama-swap configuration (its ``models:`` map, ``${PORT}`` macro): one alias per category."""
    lines = [
        f"# llama-swap configuration from harness bench ({profile.bench}): one alias per task category,",
        "# each with the speculative flags that won for it. Start: llama-swap --config llama-swap.yaml",
        "models:",
    ]
    for category, c in profile.categories.items():
        argv = [str(binary), "-m", str(model), *c.args, "--host", "127.0.0.1", "--port"]
        lines.append(f"  {json.dumps(category)}:")
        measured = f"{c.speedup:.2f}x [{c.low:.2f}, {c.high:.2f}]" if c.speedup and c.low and c.high else ""
        if c.closest:
            lines.append(f"    # none: no mode was clearly faster (closest {c.closest}: {c.verdict}, {measured})")
        else:
            lines.append(f"    # {c.mode}: {c.verdict or 'no speculative mode drafted'}" + (f", {measured}" if measured else ""))
        lines.append(f"    cmd: {json.dumps(shlex.join(argv) + ' ${PORT}')}")
    return "\n".join(lines) + "\n"
