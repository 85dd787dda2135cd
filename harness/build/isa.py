"""The CPU instruction-set policy of a build: which extensions its CPU code uses, and why.

Every backend has CPU code (CUDA, Vulkan and HIP builds keep a CPU backend for layers and
experts left on the CPU: ``-ot exps=CPU``, ``--n-cpu-moe``, partial ``-ngl``), so every
backend gets this policy.  It must be explicit: the harness exports ``SOURCE_DATE_EPOCH``
for reproducible builds, and ggml's CMake then defaults ``GGML_NATIVE`` *and* every
``GGML_AVX*``/``GGML_FMA``/``GGML_F16C`` option to OFF (ggml/CMakeLists.txt: ``if
(CMAKE_CROSSCOMPILING OR DEFINED ENV{SOURCE_DATE_EPOCH})``), which silently builds baseline
x86-64 (SSE2) CPU code: measured 8.8x slower Q4_0 generation, 25x slower prompt processing.

Variants (``build.cpu.variant``):

- ``native`` (default): ``GGML_NATIVE=ON`` (``-march=native``) minus the extensions known to
  be broken with the detected compiler, the ones the recipe disables (``build.cpu.disable``)
  and the ones a crashed decode smoke taught us (``learned.json`` in the cache).  Exclusions
  are ``-mno-<ext>`` flags: gcc and clang apply an explicit ``-mno-X`` after expanding
  ``-march=native``, wherever it stands on the command line.
- ``portable``: ggml's own non-native default, x86-64-v3 (SSE4.2, AVX, AVX2, FMA, F16C,
  BMI2), set explicitly so ``SOURCE_DATE_EPOCH`` cannot lower it; minus disabled extensions.
- ``all-variants``: ``GGML_BACKEND_DL`` + ``GGML_CPU_ALL_VARIANTS``: one CPU backend library
  per microarchitecture, ggml loads the best one at run time.  A variant that uses a
  disabled extension is not published, so the loader picks the next best.

Known breakage (``RULES``): gcc 12's ``amxtileintrin.h`` declares ``_tile_loadconfig``'s
memory operand as 8 bytes (``"m" (*((const void **)__config))``), so the optimizer drops
the stores that fill ggml's 64-byte tile configuration; with no tiles configured,
``tilezero`` in ``tinygemm_kernel_amx`` (``ggml_backend_amx_mul_mat``) raises SIGILL at the
first decode of a Q4_0/Q4_1 model.  gcc 13 fixed the header.  Reports: llama.cpp #28328,
#28756, #8734; Ollama #6044.  ``llama-server --no-repack`` (AMX buffers off) avoids it.
"""

from __future__ import annotations

import os
import platform
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from harness import atomic, console, paths, readlimits, runner
from harness.backends.cpu_extensions import EXTENSIONS
from harness.errors import InputError
from harness.recipe.schema import Build

VARIANTS = ("native", "portable", "all-variants")


BY_NAME = {e.name: e for e in EXTENSIONS}
EXTENSION_NAMES = tuple(BY_NAME)
# ggml's non-native x86 default (INS_ENB=ON in ggml/CMakeLists.txt): x86-64-v3
PORTABLE = ("sse42", "avx", "f16c", "fma", "avx2", "bmi2")
# The fallback after a crashed decode tries these, widest first, while the build uses them.
FALLBACK = ("amx", "avx512", "avx_vnni", "avx2")


def dependents(name: str) -> set[str]:
    """``name`` and every extension that needs it, transitively (disabling AVX2 disables AVX-512)."""
    found = {name}
    grew = True
    while grew:
        grew = False
        for ext in EXTENSIONS:
            if ext.name not in found and found.intersection(ext.needs):
                found.add(ext.name)
                grew = True
    return found


# --- the machine ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Cpu:
    model: str
    arch: str  # x86_64, aarch64, arm64, ...
    extensions: frozenset[str]  # EXTENSIONS names this CPU has (x86 only)
    flags: frozenset[str] = frozenset()  # every flag the OS reports

    @property
    def x86(self) -> bool:
        return self.arch in ("x86_64", "amd64", "i686", "i386")


def detect_cpu() -> Cpu:
    """This machine's CPU from /proc/cpuinfo (Linux) or sysctl (macOS).

    ``$HARNESS_CPUINFO`` names a file in /proc/cpuinfo format to use instead: a plan for
    another machine's CPU (``harness build --dry-run``), and the tests.
    """
    arch = platform.machine().lower()
    source = os.environ.get("HARNESS_CPUINFO") or ("/proc/cpuinfo" if Path("/proc/cpuinfo").exists() else None)
    if source:
        return parse_cpuinfo(Path(source).read_text(errors="replace"), arch)
    model = platform.processor() or arch
    if platform.system() == "Darwin":
        model = runner.run(["sysctl", "-n", "machdep.cpu.brand_string"], check=False).stdout.strip() or model
    return Cpu(model, arch, frozenset())


def parse_cpuinfo(text: str, arch: str = "x86_64") -> Cpu:
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() not in fields:
            fields[key.strip()] = value.strip()
        if not line.strip() and fields:
            break  # the first processor is enough
    flags = frozenset((fields.get("flags") or fields.get("Features") or "").split())
    x86 = ("x86_64", "amd64", "i686", "i386")
    if "flags" in fields and arch not in x86:
        arch = "x86_64"  # an x86 cpuinfo read on another machine (HARNESS_CPUINFO)
    elif "Features" in fields and "flags" not in fields and arch in x86:
        arch = "aarch64"
    model = (fields.get("model name") or fields.get("Model") or fields.get("Hardware") or fields.get("cpu model")
             or (f"ARM implementer {fields['CPU implementer']} part {fields.get('CPU part', '?')}"
                 if "CPU implementer" in fields else arch))
    extensions = frozenset(e.name for e in EXTENSIONS if e.cpuinfo in flags) if arch in x86 else frozenset()
    return Cpu(model, arch, extensions, flags)


@dataclass(frozen=True)
class Compiler:
    path: str
    family: str  # gcc | clang | apple-clang | unknown
    version: tuple[int, ...]

    def __str__(self) -> str:
        return f"{self.family} {'.'.join(map(str, self.version)) or '?'}"


def detect_compiler(version_text: str, path: str = "cc") -> Compiler:
    """Family and version from ``cc --version``'s output (gcc's first line may just say ``cc``)."""
    first = version_text.strip().splitlines()[0] if version_text.strip() else ""
    if "Apple clang" in first:
        family = "apple-clang"
    elif "clang" in first.lower():
        family = "clang"
    elif "Free Software Foundation" in version_text or re.search(r"\b(gcc|g\+\+|GCC)\b", first):
        family = "gcc"
    else:
        family = "unknown"
    match = re.search(r"(?:version\s+)?(\d+)\.(\d+)(?:\.(\d+))?", first.split(")")[-1] if family == "gcc" else first)
    match = match or re.search(r"(\d+)\.(\d+)(?:\.(\d+))?", first)
    version = tuple(int(g) for g in match.groups() if g is not None) if match else ()
    return Compiler(path, family, version)


# --- what is known to be broken ------------------------------------------------------------


@dataclass(frozen=True)
class Rule:
    extension: str
    applies: Callable[[Compiler], bool]
    reason: str


RULES: tuple[Rule, ...] = (
    Rule(
        "amx",
        lambda c: c.family == "gcc" and bool(c.version) and c.version[0] < 13,
        "gcc < 13 miscompiles ggml's AMX kernels: its amxtileintrin.h gives _tile_loadconfig an 8-byte "
        "memory operand, the stores filling the 64-byte tile config are optimized away, and tilezero "
        "faults (SIGILL) at the first Q4_0/Q4_1 decode; fixed in gcc 13 "
        "(llama.cpp #28328, #28756, #8734; Ollama #6044)",
    ),
)


def known_broken(compiler: Compiler) -> dict[str, str]:
    return {r.extension: r.reason for r in RULES if r.applies(compiler)}


# --- learned from crashed decodes -------------------------------------------------------------


def _learned_path() -> Path:
    return paths.cache_dir("isa") / "learned.json"


def _learned_key(cpu: Cpu, compiler: Compiler, variant: str) -> str:
    return f"{cpu.model} | {compiler} | {variant}"


def learned(cpu: Cpu, compiler: Compiler, variant: str) -> dict[str, str]:
    """Extensions a crashed decode smoke excluded before, on this CPU with this compiler."""
    entry = _read_learned().get(_learned_key(cpu, compiler, variant), {})
    if not isinstance(entry, dict):
        return {}
    unknown = sorted(str(k) for k in entry if k not in BY_NAME)
    if unknown:  # a newer harness learned it: this version cannot exclude what it does not know
        console.warn(f"{_learned_path()}: ignoring unknown CPU extension(s) {', '.join(map(repr, unknown))} "
                     "(written by another harness version?)")
    return {str(k): str(v) for k, v in entry.items() if k in BY_NAME}


def _read_learned() -> dict[str, Any]:
    """learned.json, bounded (harness/readlimits.py); {} with a warning when it is not one of ours."""
    path = _learned_path()
    if not path.exists():
        return {}
    try:
        data = readlimits.load_json(path, limit=1 << 20, what="learned CPU exclusions")
    except InputError as exc:
        console.warn(f"{exc} (ignored; delete it to forget what crashed decodes taught)")
        return {}
    return data if isinstance(data, dict) else {}


def learn(cpu: Cpu, compiler: Compiler, variant: str, extension: str, why: str) -> None:
    path = _learned_path()
    with atomic.lock(path.with_suffix(".lock"), timeout=60):
        data = _read_learned()
        stamp = datetime.now(UTC).strftime("%Y-%m-%d")
        data.setdefault(_learned_key(cpu, compiler, variant), {})[extension] = f"learned {stamp}: {why}"
        atomic.write_json(path, data)


# --- the plan ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Plan:
    """What a build's CPU code may use, and the CMake entries and flags that say so."""

    variant: str
    cpu: Cpu
    compiler: Compiler
    disabled: dict[str, str] = field(default_factory=dict)  # extension -> why
    cmake: dict[str, str] = field(default_factory=dict)
    cflags: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()

    @property
    def enabled(self) -> list[str]:
        """The extensions this build's CPU code uses (x86; all-variants: the best variant's)."""
        if not self.cpu.x86:
            return []
        if self.variant == "native":
            have = set(self.cpu.extensions)
        elif self.variant == "portable":
            have = set(PORTABLE)
        else:
            have = set(EXTENSION_NAMES)
        return [e.name for e in EXTENSIONS if e.name in have and e.name not in self.disabled]

    def without(self, extension: str, why: str) -> Plan:
        return plan_for(self.variant, self.cpu, self.compiler, {**self.disabled, extension: why})

    def identity(self) -> dict[str, Any]:
        """The part of a build's identity: the CPU counts only where the code depends on it (native)."""
        ident: dict[str, Any] = {"variant": self.variant, "arch": self.cpu.arch, "disabled": sorted(self.disabled),
                                 "cmake": self.cmake, "cflags": list(self.cflags)}
        if self.variant == "native":
            ident.update(cpu=self.cpu.model, extensions=sorted(self.cpu.extensions))
        return ident

    def to_json(self) -> dict[str, Any]:
        return {"variant": self.variant, "cpu": self.cpu.model, "arch": self.cpu.arch,
                "cpu_extensions": sorted(self.cpu.extensions), "compiler": str(self.compiler),
                "enabled": self.enabled, "disabled": dict(self.disabled), "cmake": dict(self.cmake),
                "cflags": list(self.cflags), "notes": list(self.notes)}


def from_manifest(data: dict[str, Any], compiler: Compiler, cpu: Cpu | None = None) -> Plan:
    """The plan a published build was made with (its manifest's ``isa``), for rebuilding it exactly."""
    return Plan(data["variant"], cpu or detect_cpu(), compiler, dict(data.get("disabled", {})), dict(data["cmake"]),
                tuple(data.get("cflags", ())), tuple(data.get("notes", ())))


def plan_for(variant: str, cpu: Cpu, compiler: Compiler, disabled: dict[str, str]) -> Plan:
    """The CMake entries and flags of ``variant`` with ``disabled`` extensions (and their dependents) off."""
    off: dict[str, str] = {}
    for name, why in disabled.items():
        for dep in sorted(dependents(name), key=EXTENSION_NAMES.index):
            off.setdefault(dep, why if dep == name else f"needs {name}, which is disabled")
    notes: list[str] = []
    cmake: dict[str, str] = {}
    cflags: list[str] = []
    if variant == "native":
        cmake["GGML_NATIVE"] = "ON"
        if cpu.x86:
            for ext in EXTENSIONS:
                if ext.name in off and ext.name in cpu.extensions:
                    cflags += ext.no_flags
        elif off:
            notes.append(f"{', '.join(off)}: x86 extensions, not on this {cpu.arch} CPU")
    elif variant == "portable":
        cmake["GGML_NATIVE"] = "OFF"
        if cpu.x86:
            for ext in EXTENSIONS:
                on = ext.name in PORTABLE and ext.name not in off
                for option in ext.options:
                    cmake[f"GGML_{option}"] = "ON" if on else "OFF"
    else:
        cmake.update(GGML_NATIVE="OFF", GGML_BACKEND_DL="ON", GGML_CPU_ALL_VARIANTS="ON")
        if off:
            notes.append("variants using " + ", ".join(off) + " are not published")
    return Plan(variant, cpu, compiler, off, cmake, tuple(cflags), tuple(notes))


def plan(build: Build, compiler: Compiler, cpu: Cpu | None = None) -> Plan:
    """The policy for a recipe's ``build:`` section on this machine (see the module docstring)."""
    cpu = cpu or detect_cpu()
    variant = build.cpu.variant
    disabled: dict[str, str] = {}
    for name, why in known_broken(compiler).items():
        if cpu.x86 and (variant != "native" or name in cpu.extensions) and (variant != "portable" or name in PORTABLE):
            disabled[name] = f"{compiler}: {why}"
    for name in build.cpu.disable:
        disabled.setdefault(name, "disabled by the recipe (build.cpu.disable)")
    for name, why in learned(cpu, compiler, variant).items():
        disabled.setdefault(name, why)
    result = plan_for(variant, cpu, compiler, disabled)
    if overridden(build):
        note = (f"build.cmake_args overrides the policy ({', '.join(overridden(build))}): what the build uses is "
                "ggml's own feature line in the manifest (isa.ggml_features)")
        result = Plan(result.variant, cpu, compiler, result.disabled, result.cmake, result.cflags, (*result.notes, note))
    return result


def next_exclusion(current: Plan, *, repack_only: bool, variant_features: Iterable[str] = ()) -> str | None:
    """The extension to drop after a decode crash, or None when nothing is left to try.

    ``repack_only``: the same decode passed with ``--no-repack``, which points at the
    repacked-weight paths (AMX tiles, AVX-512 repack kernels).  ``variant_features``: the
    extensions of the all-variants library ggml loaded (from the server's log), if known.
    """
    enabled = set(current.enabled)
    if current.variant == "all-variants" and variant_features:
        enabled &= set(variant_features)
    order = ("amx", "avx512") if repack_only else FALLBACK
    return next((name for name in order if name in enabled), None)


# --- what the recipe overrides ---------------------------------------------------------------

ISA_OPTIONS = ("GGML_NATIVE", "GGML_BACKEND_DL", "GGML_CPU_ALL_VARIANTS",
               *(f"GGML_{o}" for e in EXTENSIONS for o in e.options))


def overridden(build: Build) -> list[str]:
    """The ``build.cmake_args`` entries that override the policy (they come last, so they win)."""
    return [f"{k}={v}" for k, v in build.cmake_args.items() if k in ISA_OPTIONS]
