"""The draft / assistant model a recipe names (``draft:``): the file on disk, and whether it fits its target.

Gemma 4's MTP comes as a separate assistant GGUF (architecture ``gemma4-assistant``, loaded
with ``-md`` and ``--spec-type draft-mtp``); a classic draft is a small model of the same
vocabulary (``draft-simple``).  Either is named in a recipe as

- a GGUF in a Hugging Face model repository: ``source: owner/name`` and ``file:`` (a name or a
  glob).  ``harness lock`` pins it like the main model: the commit of ``revision`` and the
  file names the glob matched there (one file, or the shards of one split set;
  :func:`harness.source.hub.draft_files`).  :func:`path` downloads exactly those files at that commit
  with huggingface_hub's ``hf_hub_download`` into the Hugging Face cache, which every HF tool
  shares and which huggingface_hub itself guards with file locks and fills atomically; a file
  already there is used without asking the Hub (the revision is a commit);
- a local GGUF: ``source: ./models/x.gguf`` (relative to the recipe, else to its repository),
  an absolute path or ``~/...``.

:func:`fit` audits the draft against the model it will serve with (``harness gguf audit
--target``, :mod:`harness.gguf_files.audit`): an MTP draft is ``draft``, a plain small model
``not-applicable``; one llama.cpp would refuse (architecture, the hidden width the MTP head
reads, vocabulary: common/speculative.cpp) is ``wrong-target`` and stops ``serve``/``bench``
with exit 2 before anything starts.
"""

from __future__ import annotations

from pathlib import Path

from harness import console
from harness.errors import InputError, StepError
from harness.gguf_files import audit as audit_mod
from harness.gguf_files.split import open_model
from harness.recipe.load import Recipe
from harness.source import hub
from harness.source.lock_models import DraftPin


def path(recipe: Recipe, *, download: bool = True) -> Path | None:
    """The recipe's draft GGUF on this machine (its first shard), downloaded at the locked revision
    if need be; None when the recipe names no draft."""
    spec = recipe.spec.draft
    if spec is None:
        return None
    local = recipe.draft_path()
    if local is not None:
        if not local.is_file():
            raise InputError(f"{recipe.path}: draft.source {spec.source}: no such file ({local})")
        return local
    pinned = pin(recipe)
    files = [_cached_or_fetched(pinned.source, pinned.revision, name, download=download) for name in pinned.files]
    return files[0]


def pin(recipe: Recipe) -> DraftPin:
    """The lock's pin of the recipe's Hub draft (``{source, file, revision, files}``), locking it first if
    need be; a hand-edited one that is not a pin (wrong types, missing keys, not a full SHA, a file
    name outside the repository) is an InputError (exit 2) naming the lock file and the key."""
    from harness.source import locking

    spec = recipe.spec.draft
    assert spec is not None and not spec.is_local
    pinned = locking.ensure(recipe).draft
    if not pinned:
        raise StepError(
            f"{recipe.path}: the draft {spec.source} {spec.file} is not pinned (HF_HUB_OFFLINE?)",
            hint="run `harness lock` with the Hugging Face Hub reachable, or pin draft.revision to a commit SHA "
            "and name one file",
        )
    return pinned  # validated when the lock was read


def _cached_or_fetched(repo: str, revision: str, filename: str, *, download: bool) -> Path:
    from huggingface_hub import hf_hub_download, try_to_load_from_cache

    cached = try_to_load_from_cache(repo, filename, revision=revision)
    if isinstance(cached, str):
        return Path(cached)
    if not download:
        raise InputError(f"draft {repo}/{filename}@{revision[:12]} is not downloaded",
                         hint="run `harness pipeline` or `harness serve`, which fetch it")  # fmt: skip
    if hub.offline():
        raise StepError(f"draft {repo}/{filename}@{revision[:12]} is not in the Hugging Face cache and "
                        "HF_HUB_OFFLINE is set")  # fmt: skip
    console.step(f"download draft {repo}/{filename}@{revision[:12]}")
    try:
        return Path(hf_hub_download(repo, filename, revision=revision))
    except hub.client_errors() as exc:
        raise StepError(f"download of draft {repo}/{filename}@{revision[:12]} failed: {exc}") from None


def fit(draft: Path, target: Path | None) -> audit_mod.Audit:
    """Audit ``draft`` (against ``target`` when given); InputError (exit 2) naming each problem when
    llama.cpp would refuse it or draft nothing with it."""
    report = audit_mod.audit_path(draft, target)
    if not report.ok:
        against = f" for {target}" if target is not None else ""
        raise InputError(
            f"draft model {draft}{against}: {report.status}\n  " + "\n  ".join(report.problems),
            hint=f"see `harness gguf audit {draft}" + (f" --target {target}`" if target else "`"),
        )
    for warning in report.warnings:
        console.warn(f"draft {draft.name}: {warning}")
    return report


def spec_type_for(report: audit_mod.Audit) -> str:
    """The speculative type a draft file implies: ``draft-mtp`` for an MTP draft (a Gemma 4 assistant,
    an MTP head), ``draft-simple`` for a model of its own."""
    return "draft-mtp" if report.kind == "draft" else "draft-simple"


def infers_type(draft: Path) -> bool:
    """Whether llama.cpp infers a speculative type from ``draft`` alone (common_speculative_types_from_gguf:
    an MTP head, ``blk.<last>.nextn.eh_proj.weight``, or a ``dflash`` draft); False when unreadable."""
    try:
        with open_model(draft) as gf:
            arch = gf.value("general.architecture")
            if arch == "dflash":
                return True
            blocks = gf.value(f"{arch}.block_count")
            names = {t.name for t in gf.tensors}
    except (InputError, OSError):
        return False
    return isinstance(blocks, int) and f"blk.{blocks - 1}.nextn.eh_proj.weight" in names
