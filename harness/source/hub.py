"""The Hugging Face Hub as the lock sees it: which commit a model repository's revision names now.

``harness lock`` pins ``model.revision`` through :func:`resolve_revision`; the pipeline
(:mod:`harness.pipeline.source`) reads the pin from the lock.  This module imports neither,
so the lock and the pipeline never import each other.

- ``HF_HUB_OFFLINE`` set: nothing is asked, the revision stays unresolved (a warning), and
  ``harness lock --check`` / ``--frozen`` fail until it is resolved;
- the Hub unreachable (no network, DNS, a proxy, a 5xx): a :class:`StepError` (exit 1) naming the
  repository and the cause, with the ways to go on offline;
- a repository or revision the Hub does not know: an :class:`InputError` (exit 2).
"""

from __future__ import annotations

import fnmatch
import os
import re
from pathlib import Path

from harness import console
from harness.errors import InputError, StepError

SHA40 = re.compile(r"^[0-9a-f]{40}$")
TIMEOUT = 30.0


def client_errors() -> tuple[type[Exception], ...]:
    """What the Hub client raises when the Hub cannot be asked or answers with an error: OSError
    (connection errors, ``HfHubHTTPError``, offline mode, a missing cache entry), the HTTP client's
    own errors (httpx under huggingface_hub 1.x, httpx2 under 2.x; requests for older code paths),
    an answer that is not JSON, and the Xet download and revision resolution errors.  A bug in
    our code or theirs (a TypeError, a KeyError...) is none of these and reaches the CLI's
    error boundary as one."""
    import importlib
    import json

    found: list[type[Exception]] = [OSError, json.JSONDecodeError]
    for module, names in (
        ("httpx", ("HTTPError", "InvalidURL")),
        ("httpx2", ("HTTPError", "InvalidURL")),
        ("requests", ("RequestException",)),
        ("huggingface_hub.errors", ("XetDownloadError", "RevisionResolutionError", "EntryNotFoundError")),
    ):
        try:
            loaded = importlib.import_module(module)
        except ImportError:
            continue
        found += [getattr(loaded, name) for name in names if isinstance(getattr(loaded, name, None), type)]
    return tuple(found)


def offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def is_local(spec: str) -> bool:
    """A model source that names a local checkpoint directory rather than a repo id."""
    return spec.startswith((".", "/", "~")) or Path(spec).expanduser().exists()


def resolve_revision(repo: str, revision: str | None) -> str | None:
    """The commit SHA ``revision`` (default ``main``) of model repo ``repo`` names now.

    A full SHA is returned as it is, without asking; None (with a warning) under ``HF_HUB_OFFLINE``.
    """
    if revision is not None and SHA40.match(revision):
        return revision
    wanted = revision or "main"
    if offline():
        console.warn(f"HF_HUB_OFFLINE is set: revision {wanted} of {repo} not resolved")
        return None
    sha, _ = _model_info(repo, wanted)
    return sha


def draft_files(repo: str, revision: str | None, pattern: str) -> tuple[str, list[str]] | None:
    """The commit ``revision`` (default ``main``) of ``repo`` names now, and the files of that commit that
    ``pattern`` (a file name or an fnmatch glob) matches: one GGUF, or every shard of one split set.

    A commit SHA and a plain file name are returned as they are, without asking; None (with a
    warning) under ``HF_HUB_OFFLINE``; InputError when nothing or too much matches.
    """
    if revision is not None and SHA40.match(revision) and not any(c in pattern for c in "*?["):
        return revision, [pattern]
    wanted = revision or "main"
    if offline():
        console.warn(f"HF_HUB_OFFLINE is set: draft {repo} {pattern} at {wanted} not resolved")
        return None
    sha, files = _model_info(repo, wanted)
    matched = sorted(f for f in files if fnmatch.fnmatchcase(f, pattern))
    if not matched:
        ggufs = [f for f in files if f.endswith(".gguf")]
        raise InputError(
            f"{repo}@{sha[:12]}: no file matches {pattern!r}",
            hint=("its GGUF files: " + ", ".join(ggufs[:12]) + (" ..." if len(ggufs) > 12 else "")) if ggufs
            else "the repository holds no .gguf file",
        )
    sets = {_SHARD.sub("", f) for f in matched}
    if len(sets) > 1:
        raise InputError(
            f"{repo}@{sha[:12]}: {pattern!r} matches {len(matched)} files: {', '.join(matched[:8])}",
            hint="name one file (or one split set's shards) in draft.file",
        )
    return sha, matched


_SHARD = re.compile(r"-\d{5}-of-\d{5}(?=\.gguf$)")


def _model_info(repo: str, wanted: str) -> tuple[str, list[str]]:
    """The commit SHA of ``repo@wanted`` and its file names, asked of the Hub."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import (
        GatedRepoError,
        HFValidationError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    try:
        info = HfApi().model_info(repo, revision=wanted, timeout=TIMEOUT)
    except HFValidationError as exc:
        raise InputError(f"{repo}: not a Hugging Face Hub repo id (owner/name): {exc}") from None
    except RevisionNotFoundError:
        raise InputError(f"{repo}: no revision {wanted!r} on the Hugging Face Hub") from None
    except GatedRepoError:
        raise InputError(f"{repo}: a gated model", hint="accept its terms on the Hub and export HF_TOKEN") from None
    except RepositoryNotFoundError:
        raise InputError(
            f"{repo}: no such model on the Hugging Face Hub (or it is gated/private)",
            hint="for a gated or private model, export HF_TOKEN",
        ) from None
    except client_errors() as exc:
        raise unreachable(repo, wanted, exc) from None
    sha = info.sha
    if not isinstance(sha, str) or not SHA40.match(sha):
        raise StepError(f"{repo}@{wanted}: the Hugging Face Hub gave no commit SHA ({sha!r})")
    return sha, [s.rfilename for s in (info.siblings or [])]


def unreachable(repo: str, revision: str, exc: BaseException) -> StepError:
    cause = str(exc).strip() or type(exc).__name__
    return StepError(
        f"cannot reach the Hugging Face Hub to resolve {repo}@{revision}: {type(exc).__name__}: {cause}",
        hint="check the network (or HF_ENDPOINT), or work offline: HF_HUB_OFFLINE=1 leaves the model revision "
        "unresolved (lock --check and --frozen fail until it is), or pin model.revision to a commit SHA",
    )
