"""Where things live: the shared cache (mirrors, trees, build dirs) and the builds/ output."""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs

CACHEDIR_TAG = "Signature: 8a477f597d28d172789f06886806bc55\n# llama-harness cache (https://bford.info/cachedir/)\n"


def cache_root() -> Path:
    """``$HARNESS_CACHE``, else the platform's user cache dir; tagged with CACHEDIR.TAG."""
    env = os.environ.get("HARNESS_CACHE")
    root = Path(env).expanduser() if env else Path(platformdirs.user_cache_dir("llama-harness"))
    tag = root / "CACHEDIR.TAG"
    try:
        root.mkdir(parents=True, exist_ok=True)
        if not tag.exists():
            tag.write_text(CACHEDIR_TAG)
    except OSError as exc:
        from harness.errors import InputError

        raise InputError(f"the cache directory {root} ({'HARNESS_CACHE' if env else 'the user cache directory'}) "
                         f"cannot be used: {exc.strerror or exc}",
                         hint="set HARNESS_CACHE to a directory this user can write") from None
    return root.resolve()


def cache_dir(*parts: str) -> Path:
    path = cache_root().joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path
