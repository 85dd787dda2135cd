"""The environments git runs in, each a fresh dict built from an allow-list (``os.environ`` is never changed).

Every ``GIT_*`` variable is dropped unless it says how to reach a remote or how to trace
(``runner.GIT_ALLOWED``, which every child gets), so a harness started from a git hook (``GIT_DIR``,
``GIT_INDEX_FILE``, ``GIT_SHALLOW_FILE``...) cannot point git at another repository.  The network one
keeps the user's git config (credentials, ``url.<base>.insteadOf`` rewrites, also given as
GIT_CONFIG_COUNT/KEY/VALUE) for talking to remotes; the local one ignores global and system config
but the settings for reaching remotes, and fixes the identity (and, when committing, the date) so
merges, applies and commits come out the same on every machine.
"""

from __future__ import annotations

import functools
import os
import re
from pathlib import Path

from harness import runner
from harness.errors import InputError

IDENTITY_NAME = "llama-harness"
IDENTITY_EMAIL = "harness@llama-harness.invalid"

_USER_CONFIG = re.compile(r"^GIT_CONFIG_(COUNT|KEY_\d+|VALUE_\d+|GLOBAL|SYSTEM|NOSYSTEM|PARAMETERS)$")
# the user's settings a git process needs to reach a remote: also given to local commands, because a
# partial clone fetches missing blobs lazily (from the remote's real URL) while merging or diffing
_REMOTE_KEYS = r"^(url\..*|http\..*|credential\..*|core\.sshcommand|protocol\..*|core\.askpass)$"


def network_env() -> dict[str, str]:
    """The environment for git commands that talk to remotes: the user's config and git's
    credential variables kept (a private remote may need them), other secrets left out."""
    env = {k: v for k, v in os.environ.items() if runner.git_variable_allowed(k)}
    return {**env, "GIT_TERMINAL_PROMPT": "0", "LC_ALL": "C"}


def remote_settings() -> tuple[tuple[str, str], ...]:
    """(key, value) of the user's git settings for reaching remotes (``url.<base>.insteadOf``, http,
    credentials), from every config level git reads, ``GIT_CONFIG_COUNT/KEY/VALUE`` included."""
    key = tuple(sorted((k, v) for k, v in os.environ.items()
                       if k.startswith("GIT_CONFIG") or k in ("HOME", "XDG_CONFIG_HOME", "PATH")))
    return _remote_settings(key)


@functools.lru_cache(maxsize=8)
def _remote_settings(_key: tuple[tuple[str, str], ...]) -> tuple[tuple[str, str], ...]:
    status, out, _, _ = _run_raw(["config", "--null", "--get-regexp", _REMOTE_KEYS], env=network_env())
    if status != 0:
        return ()
    pairs = []
    for entry in out.decode("utf-8", "replace").split("\0"):
        key, _, value = entry.partition("\n")
        if key:
            pairs.append((key, value))
    return tuple(pairs)


def local_env(date: int | None = None) -> dict[str, str]:
    """The environment for local git commands: no user config but the settings for reaching remotes
    (a partial clone's lazy fetch needs them; nothing that changes a merge, a diff or a commit), no
    secrets at all, a fixed identity (and date)."""
    remote = remote_settings()
    env = {k: v for k, v in os.environ.items() if runner.git_variable_allowed(k) and not _USER_CONFIG.match(k) and not runner.is_secret(k)}
    env.update({
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_CONFIG_GLOBAL": os.devnull,
        "GIT_CONFIG_COUNT": str(len(remote)),
        **{f"GIT_CONFIG_KEY_{n}": k for n, (k, _) in enumerate(remote)},
        **{f"GIT_CONFIG_VALUE_{n}": v for n, (_, v) in enumerate(remote)},
        "GIT_TERMINAL_PROMPT": "0",
        # no opportunistic index refresh (`git status` rewrites .git/index otherwise, and llama.cpp's
        # CMake takes a newer index for a reason to configure again: tests/test_build_incremental.py)
        "GIT_OPTIONAL_LOCKS": "0",
        "LC_ALL": "C",
        "GIT_AUTHOR_NAME": IDENTITY_NAME,
        "GIT_AUTHOR_EMAIL": IDENTITY_EMAIL,
        "GIT_COMMITTER_NAME": IDENTITY_NAME,
        "GIT_COMMITTER_EMAIL": IDENTITY_EMAIL,
    })
    if date is not None:
        env["GIT_AUTHOR_DATE"] = env["GIT_COMMITTER_DATE"] = f"@{date} +0000"
    return env


def _run_raw(args: list[str], *, env: dict[str, str], repo: Path | None = None) -> tuple[int, bytes, str, list[str]]:
    """git with exactly ``env``: for reading config before our environments exist."""
    argv = ["git", *(["-C", str(repo)] if repo else []), *args]
    try:
        status, out, err = runner.run_bytes(argv, env=env)
    except InputError:
        raise InputError("git not found on PATH (needed for every source operation)") from None
    return status, out, err, argv
