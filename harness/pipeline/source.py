"""Where a model comes from: a local checkpoint directory, a Hugging Face repo id, or a GGUF.

A GGUF source (a file, or any shard of a split set) is a model that is already converted:
the pipeline skips download and convert and makes the importance matrix and the quants
from it (requantizing with ``--allow-requantize`` when its weights are quantized).

Downloads take only what conversion reads (config, tokenizer, safetensors and their index,
the model card) at one revision, into ``<model dir>/hf``.  The token comes from the
environment (``HF_TOKEN``, read by huggingface_hub itself): it is never passed in argv,
never printed, never written to a sidecar or a lock.  Which commit a revision names is the
lock's business (:mod:`harness.source.hub`); this module reads the pin back from the lock.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.errors import InputError, StepError
from harness.recipe.load import Recipe
from harness.source import hub

_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")

ALLOW_PATTERNS = [
    "*.json",  # config.json, generation_config.json, tokenizer*.json, model.safetensors.index.json
    "*.safetensors",
    "tokenizer.model",
    "*.tiktoken",
    "merges.txt",
    "vocab.txt",
    "*.jinja",
    "README.md",  # the converter reads license, languages, base models from the model card
]
# the converter reads the top level only; subfolders (original/, onnx/, ...) are other formats
IGNORE_PATTERNS = ["*/*", "consolidated*.safetensors"]


@dataclass(frozen=True)
class Source:
    spec: str  # as written: a directory, a GGUF file or a repo id
    path: Path | None  # the local checkpoint directory or GGUF file, when it is one
    gguf: bool = False  # a GGUF model (a file or a shard of a split set), already converted

    @property
    def is_local(self) -> bool:
        return self.path is not None

    @property
    def default_name(self) -> str:
        if self.path is None:
            return self.spec.rsplit("/", 1)[-1]
        if self.gguf:
            return _SHARD_SUFFIX.sub("", self.path.name).removesuffix(".gguf")
        return self.path.name


_SHARD_SUFFIX = re.compile(r"-\d{5}-of-\d{5}\.gguf$")


def parse(spec: str) -> Source:
    """A local directory or GGUF file (when one exists at ``spec``) or a Hugging Face repo id."""
    path = Path(spec).expanduser()
    if path.is_dir():
        return Source(spec, path.resolve())
    if path.is_file():
        with open(path, "rb") as f:
            if f.read(4) == b"GGUF":
                return Source(spec, path.resolve(), gguf=True)
        raise InputError(f"model source {spec!r} is a file but not a GGUF; give a checkpoint directory, "
                         "a GGUF or a Hugging Face repo id")  # fmt: skip
    if path.exists():
        raise InputError(f"model source {spec!r} is neither a directory nor a file")
    if _REPO_ID.match(spec) and not spec.startswith((".", "/", "~")):
        return Source(spec, None)
    raise InputError(f"model source {spec!r}: no such directory, and not a Hugging Face repo id (owner/name)")


def offline() -> bool:
    return hub.offline()


def resolve_revision(source: str, revision: str | None) -> str | None:
    """The commit to download for ``source``: None for a local directory, else :func:`harness.source.hub.resolve_revision`."""
    if parse(source).is_local:
        return None
    return hub.resolve_revision(source, revision)


def locked_revision(recipe: Recipe, source: str) -> str | None:
    """The revision the recipe's lock pins for ``source`` (the lock's ``model`` entry)."""
    from harness.source import lock

    the_lock = lock.read(recipe.lock_path)
    if the_lock is None or the_lock.model is None or the_lock.model.source != source:
        return None
    return the_lock.model.revision  # a full SHA: the lock's model is validated when read


def plan_download(repo: str, revision: str, dest: Path) -> tuple[int, list[str]]:
    """Bytes still to fetch for ``repo@revision`` into ``dest``, and the files it has (a dry run)."""
    from huggingface_hub import snapshot_download

    try:
        infos: Any = snapshot_download(
            repo,
            revision=revision,
            local_dir=dest,
            allow_patterns=ALLOW_PATTERNS,
            ignore_patterns=IGNORE_PATTERNS,
            dry_run=True,
        )
    except hub.client_errors() as exc:
        raise hub.unreachable(repo, revision[:12], exc) from None
    need = sum(int(i.file_size or 0) for i in infos if i.will_download)
    return need, sorted(i.filename for i in infos)


def remote_parameters(repo: str, revision: str) -> int:
    """The parameter count of ``repo@revision``'s safetensors, from their headers on the Hub
    (``huggingface_hub.get_safetensors_metadata``: a few KB per file, no weights)."""
    from huggingface_hub import get_safetensors_metadata
    from huggingface_hub.errors import NotASafetensorsRepoError

    try:
        meta = get_safetensors_metadata(repo, revision=revision)
    except NotASafetensorsRepoError:
        raise InputError(
            f"{repo}@{revision[:12]} has no safetensors weights",
            hint="the pipeline converts safetensors checkpoints (PyTorch .bin checkpoints are not supported)",
        ) from None
    except hub.client_errors() as exc:
        raise hub.unreachable(repo, revision[:12], exc) from None
    return sum(int(n) for n in meta.parameter_count.values())


def fetch_config(repo: str, revision: str, dest: Path) -> Path:
    """Only config.json, before the real download (the preflight reads the architecture)."""
    from huggingface_hub import hf_hub_download

    try:
        return Path(hf_hub_download(repo, "config.json", revision=revision, local_dir=dest))
    except hub.client_errors() as exc:
        raise StepError(f"cannot fetch config.json of {repo}@{revision[:12]}: {exc}") from None


def download(
    repo: str, revision: str, dest: Path, *, tqdm_class: Callable[..., Any] | None = None
) -> Path:
    """``repo`` at ``revision`` into ``dest``: only the files conversion needs."""
    from huggingface_hub import snapshot_download

    try:
        path = snapshot_download(
            repo,
            revision=revision,
            local_dir=dest,
            allow_patterns=ALLOW_PATTERNS,
            ignore_patterns=IGNORE_PATTERNS,
            tqdm_class=tqdm_class,  # type: ignore[arg-type]
        )
    except hub.client_errors() as exc:
        hint = "set HF_HUB_OFFLINE=0 and check the network" if offline() else None
        raise StepError(f"download of {repo}@{revision[:12]} failed: {exc}", hint=hint) from None
    return Path(str(path))
