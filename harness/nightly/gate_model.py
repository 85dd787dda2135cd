"""The gate model of ``nightly.gates.model`` on this machine: a local GGUF, or a Hub file pinned by commit and sha256.

A Hub gate model is fetched with huggingface_hub's ``hf_hub_download`` at the pinned commit into the
Hugging Face cache (shared with every HF tool, filled atomically under its own locks; ``HF_ENDPOINT``
and ``HF_HUB_OFFLINE`` are honoured).  Its sha256 is checked every time it is used, from the cache
or fresh: a file whose digest is not the recipe's is bad input (exit 2), named with both digests, and
nothing is measured with it.  The gates compare nights, so a gate model that moves is not a gate.
"""

from __future__ import annotations

from pathlib import Path

from harness import atomic, console
from harness.errors import InputError, StepError
from harness.recipe.load import Recipe
from harness.recipe.schema import GateHubModel, NightlyGates
from harness.source import hub


def path(recipe: Recipe, gates: NightlyGates) -> Path:
    """The gate model's file, downloaded if need be and checked against its pin."""
    if isinstance(gates.model, GateHubModel):
        return fetch(gates.model, label=f"{recipe.path}: nightly.gates.model")
    from harness.pipeline.plan import local_file

    return local_file(recipe, gates.model, f"{recipe.path}: nightly.gates.model")


def describe(model: str | GateHubModel) -> str:
    """How the report names the gate model."""
    if isinstance(model, GateHubModel):
        return f"{model.source}/{model.file}@{model.revision[:12]}"
    return model


def fetch(spec: GateHubModel, *, label: str) -> Path:
    from huggingface_hub import hf_hub_download, try_to_load_from_cache

    where = f"{spec.source}/{spec.file}@{spec.revision[:12]}"
    cached = try_to_load_from_cache(spec.source, spec.file, revision=spec.revision)
    if isinstance(cached, str):
        found = Path(cached)
    elif hub.offline():
        raise StepError(f"gate model {where} is not in the Hugging Face cache and HF_HUB_OFFLINE is set")
    else:
        console.step(f"download gate model {where}")
        from huggingface_hub.errors import (
            RemoteEntryNotFoundError,
            RepositoryNotFoundError,
            RevisionNotFoundError,
        )

        try:
            found = Path(hf_hub_download(spec.source, spec.file, revision=spec.revision))
        except (RemoteEntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError) as exc:
            raise InputError(f"{label}: the Hub has no {where}: {type(exc).__name__}") from None
        except hub.client_errors() as exc:
            raise StepError(f"{label}: download of {where} failed: {type(exc).__name__}: {exc}") from None
    digest = atomic.sha256_file(found)
    if digest != spec.sha256:
        raise InputError(f"{label}: {where} has sha256 {digest}, the recipe pins {spec.sha256}",
                         hint="the file is not the one the gates were measured with: check it, then put its "
                              "sha256 (and revision) in the recipe")  # fmt: skip
    return found
