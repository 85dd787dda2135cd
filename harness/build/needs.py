"""What one recipe needs from this machine (``harness doctor RECIPE``).

- per backend the recipe builds: cmake, ninja, a C and C++ compiler, git, and the
  backend's own toolchain (``backends/<name>.py``'s ``detect``); ccache is optional;
- when the recipe has a ``model:`` section: the converter's interpreter (``model.python``,
  else the venv made from the tree's own ``requirements/``: made or to be made) with the
  versions the tree pins (:mod:`harness.pipeline.converter_env`), the
  calibration text of ``model.imatrix``, and, for a Hub repo id, the Hub answering for
  that repo within a few seconds (with ``HF_HUB_OFFLINE``: its ``config.json`` in the
  local Hugging Face cache instead).

Each finding is a ``Check``; a required one that failed makes ``doctor`` exit 1.
"""

from __future__ import annotations

import json
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from harness.errors import InputError

if TYPE_CHECKING:
    from harness.recipe.load import Recipe
    from harness.recipe.schema import ModelSection

# what llama.cpp's convert_hf_to_gguf.py imports (requirements/requirements-convert_hf_to_gguf.txt);
# gguf-py comes with the build (builds/<recipe>/<backend>/gguf-py)
CONVERTER_PACKAGES = ("numpy", "torch", "transformers", "sentencepiece", "safetensors")
HUB_TIMEOUT_S = 5.0

# README "Model pipeline"; the Makefile pins a CPU torch first (an open range pulls a multi-GB CUDA build)
CONVERT_INSTALL = ("make install-convert in the llama-harness checkout (a CPU torch first, then '.[convert]'; "
                   "for another interpreter: pip install 'torch==2.13.0' then pip install 'llama-harness[convert]')")


@dataclass(frozen=True)
class Check:
    what: str
    ok: bool
    detail: str = ""
    required: bool = True


def check(recipe: Recipe, *, hub_timeout: float = HUB_TIMEOUT_S, builds_dir: Path | None = None) -> list[Check]:
    checks = _toolchains(list(recipe.spec.build.backends))
    if "cuda" in recipe.spec.build.backends:
        checks += _cuda_archs(recipe)
    if recipe.spec.model is not None:
        checks += _model(recipe, recipe.spec.model, hub_timeout, builds_dir)
    return checks


def _toolchains(names: list[str]) -> list[Check]:
    from harness import backends
    from harness.build import cmake

    checks = []
    for name in ("cmake", "ninja"):
        try:
            checks.append(Check(name, True, cmake.program(name)))
        except InputError as exc:
            checks.append(Check(name, False, f"{exc.message}: pip install cmake ninja"))
    for name in ("cc", "c++", "git"):
        path = shutil.which(name)
        checks.append(Check(name, bool(path), path or "not on PATH: install a C/C++ compiler and git"))
    ccache = shutil.which("ccache")
    checks.append(Check("ccache", bool(ccache), ccache or "not installed (make ccache): compiles are not cached",
                        required=False))  # fmt: skip
    for name in names:
        det = backends.get(name).detect()
        for program, where in det.found.items():
            checks.append(Check(f"{name}: {program}", True, where))
        for tool in det.missing:
            checks.append(Check(f"{name}: {tool.program}", False, f"{tool.purpose}: {tool.install}"))
        if not det.available and not det.missing:
            checks.append(Check(f"{name}: backend", False, "; ".join(det.notes) or "not available on this machine"))
        elif det.notes:
            checks.append(Check(f"{name}: notes", True, "; ".join(det.notes), required=False))
    return checks


def _cuda_archs(recipe: Recipe) -> list[Check]:
    """The architectures the build would compile for (build.cuda.archs, else the GPUs seen) against
    what the local nvcc targets: nvcc 13 starts at 75, so a recipe for a Pascal card cannot build."""
    from harness.backends import cuda

    asked = recipe.spec.build.options("cuda").archs
    archs = [str(a) for a in asked] if asked else cuda.gpu_archs()
    supported = cuda.nvcc_archs()
    if not archs or supported is None:
        return []
    bad = cuda.untargetable(archs, supported)
    where = "build.cuda.archs" if asked else "the GPUs nvidia-smi sees"
    if bad:
        return [Check("cuda: archs", False,
                      f"{', '.join(bad)} ({where}): nvcc {cuda.nvcc_version()} cannot target them (it targets "
                      f"{supported[0]} to {supported[-1]}); use an older CUDA toolkit or drop them")]  # fmt: skip
    return [Check("cuda: archs", True, f"{', '.join(archs)} ({where}), all targeted by nvcc {cuda.nvcc_version()}")]


def _model(recipe: Recipe, model: ModelSection, hub_timeout: float, builds_dir: Path | None) -> list[Check]:
    tree = _converter_tree(recipe, builds_dir)
    if model.python:
        checks = [_converter_python(model.python), *_pinned(model.python, tree, "model.python")]
    else:
        checks = _converter_env(tree)
    if model.imatrix is not None and model.imatrix.calibration:
        cal = recipe.resolve_local(model.imatrix.calibration)
        checks.append(Check("imatrix calibration", cal.is_file(), str(cal) if cal.is_file() else f"no such file: {cal}"))
    checks.append(_hub(recipe, model.source, model.revision, hub_timeout))
    return checks


def _converter_tree(recipe: Recipe, builds_dir: Path | None) -> Path | None:
    """Where the converter's requirements are: the recipe's published build (under ``builds_dir``, else
    ./builds), else its prepared tree."""
    from harness.build import published
    from harness.pipeline import converter_env
    from harness.source.tree import Tree

    candidates = [published.build_root(builds_dir, recipe.name, b) for b in recipe.spec.build.backends]
    candidates.append(Tree.for_recipe(recipe).src)
    return next((c for c in candidates if (c / converter_env.REQUIREMENTS).is_file()), None)


def _converter_env(tree: Path | None) -> list[Check]:
    """The venv the harness makes from the tree's requirements: made and matching its pins, or to be made."""
    from harness.pipeline import converter_env

    if tree is None:
        check = _converter_python(sys.executable)
        return [Check(check.what, check.ok, check.detail + " (no build or prepared tree with requirements/ yet: "
                      "until there is one, the converter runs with this interpreter)")]  # fmt: skip
    plan = converter_env.plan(tree)
    assert plan is not None
    env = converter_env.load(plan.root)
    source = tree / converter_env.REQUIREMENTS
    if env is None:
        return [Check("converter python", True, f"made on the first convert from {source} ({plan.root})"
                      + (f"; {plan.note}" if plan.note else ""))]  # fmt: skip
    return [Check("converter python", True, f"{env.python} (made from {source})"),
            *_pinned(env.python, tree, "the converter's venv", torch_note=env.record.torch_note)]


def _pinned(python: str, tree: Path | None, what: str, *, torch_note: str | None = None) -> list[Check]:
    """The interpreter's installed versions against the tree's pins (transformers 5 loses Gemma 4's keys)."""
    from harness.pipeline import converter_env

    reqs = converter_env.read_requirements(tree) if tree is not None else None
    exe = python if "/" in python else shutil.which(python)
    if reqs is None or not exe or not Path(exe).exists():
        return []
    off = converter_env.mismatches(reqs, converter_env.installed_versions(exe))
    if torch_note:  # torch from PyPI instead of the tree's index: said when the venv was made
        off = [o for o in off if not o.startswith("torch ")]
    source = tree / converter_env.REQUIREMENTS if tree is not None else ""
    if off:
        return [Check("converter pins", False, f"{what} ({exe}): {'; '.join(off)} ({source})")]
    return [Check("converter pins", True, f"{what} matches {source}" + (f" ({torch_note})" if torch_note else ""))]


def _converter_python(python: str) -> Check:
    """One run of the converter's interpreter: which of CONVERTER_PACKAGES it can import."""
    from harness import runner

    exe = python if "/" in python else shutil.which(python)
    if not exe or not Path(exe).exists():
        return Check("converter python", False, f"{python}: not found (model.python or --python)")
    probe = f"import importlib.util, json; print(json.dumps({{n: importlib.util.find_spec(n) is not None for n in {list(CONVERTER_PACKAGES)!r}}}))"
    res = runner.run([exe, "-c", probe], check=False, timeout=120)
    try:
        found: dict[str, bool] = json.loads(res.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return Check("converter python", False, f"{exe} did not run: {(res.stderr or res.stdout).strip()[-200:]}")
    missing = [n for n in CONVERTER_PACKAGES if not found.get(n)]
    if missing:
        return Check("converter python", False,
                     f"{exe} lacks {', '.join(missing)}: {CONVERT_INSTALL}, or set model.python")  # fmt: skip
    return Check("converter python", True, f"{exe} ({', '.join(CONVERTER_PACKAGES)})")


def _hub(recipe: Recipe, source: str, revision: str | None, timeout: float) -> Check:
    from harness.pipeline import source as sources

    try:
        parsed = sources.parse(source)
    except InputError as exc:
        return Check("model source", False, exc.message)
    if parsed.is_local:
        return Check("model source", True, f"local checkpoint {parsed.path}")
    rev = sources.locked_revision(recipe, source) or revision
    if sources.offline():
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(source, "config.json", revision=rev)
        ok = isinstance(cached, str)
        return Check("hugging face hub", ok, f"HF_HUB_OFFLINE: {source} config.json "
                     + (f"in the local cache ({cached})" if ok else "not in the local cache"))  # fmt: skip
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError, RevisionNotFoundError

    api = HfApi()
    try:
        api.model_info(source, revision=rev, timeout=timeout)
    except RevisionNotFoundError:
        return Check("hugging face hub", False, f"{source}: no revision {rev!r}")
    except RepositoryNotFoundError:
        return Check("hugging face hub", False, f"{source}: no such model (gated or private: export HF_TOKEN)")
    except (HfHubHTTPError, Exception) as exc:  # any transport error (httpx or requests, by version)
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return Check("hugging face hub", False, f"{api.endpoint} unreachable for {source} (timeout {timeout:.0f}s): {first}")
    return Check("hugging face hub", True, f"{api.endpoint}: {source}" + (f"@{rev}" if rev else ""))
