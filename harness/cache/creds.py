"""Registry credentials, from where container tools keep them; never from argv.

In order: ``$HARNESS_REGISTRY_TOKEN`` (with ``$HARNESS_REGISTRY_USER``, default ``harness``: GHCR
takes any user name with a token, as does a registry's basic auth with its password), then
``$DOCKER_CONFIG/config.json`` or ``~/.docker/config.json`` (``auths.<host>.auth``, base64
``user:password``, or ``username``/``password``; what ``docker login`` / ``podman login
--compat-auth-file`` / ``oras login`` write).  Credential helpers (``credsStore``) are not run.

A :class:`Credentials` never prints its secret (``repr`` hides it), so it cannot reach a log by
accident; it is sent only in an ``Authorization`` header to the registry or its token realm.
"""

from __future__ import annotations

import base64
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

TOKEN_ENV = "HARNESS_REGISTRY_TOKEN"
USER_ENV = "HARNESS_REGISTRY_USER"


@dataclass(frozen=True)
class Credentials:
    user: str
    secret: str = field(repr=False)
    source: str  # where they came from, for messages

    def __str__(self) -> str:
        return f"{self.user} (from {self.source})"


def docker_config() -> Path:
    base = os.environ.get("DOCKER_CONFIG")
    return Path(base) / "config.json" if base else Path.home() / ".docker" / "config.json"


def lookup(host: str) -> Credentials | None:
    """Credentials for registry ``host`` (``host:port`` as in the URL); None: anonymous."""
    token = os.environ.get(TOKEN_ENV)
    if token:
        return Credentials(os.environ.get(USER_ENV) or "harness", token, f"${TOKEN_ENV}")
    path = docker_config()
    try:
        auths = json.loads(path.read_text()).get("auths", {})
    except (OSError, ValueError, AttributeError):
        return None
    if not isinstance(auths, dict):
        return None
    for name in (host, f"https://{host}", f"http://{host}", f"https://{host}/v1/", f"https://{host}/v2/"):
        entry = auths.get(name)
        if not isinstance(entry, dict):
            continue
        if isinstance(entry.get("auth"), str) and entry["auth"]:
            try:
                user, _, secret = base64.b64decode(entry["auth"]).decode().partition(":")
            except (ValueError, UnicodeDecodeError):
                continue
            return Credentials(user, secret, str(path))
        if isinstance(entry.get("username"), str) and isinstance(entry.get("password"), str):
            return Credentials(entry["username"], entry["password"], str(path))
    return None
