"""Registry credentials, from where container tools keep them; never from argv.

In order: ``$HARNESS_REGISTRY_TOKEN`` (with ``$HARNESS_REGISTRY_USER``, default ``harness``: GHCR
takes any user name with a token, as does a registry's basic auth with its password), then
``$DOCKER_CONFIG/config.json`` or ``~/.docker/config.json`` as docker reads it: the host's
credential helper (``credHelpers.<host>``), else the default one (``credsStore``: Docker Desktop's
``desktop``, ``osxkeychain``, ``pass``, ``secretservice``, ``ecr-login``...), each run as
``docker-credential-<name> get`` with the server on stdin (the docker-credential-helpers protocol);
else ``auths.<host>`` (``auth``, base64 ``user:password``, or ``username``/``password``; what
``docker login`` / ``podman login --compat-auth-file`` / ``oras login`` write without a helper).

A :class:`Credentials` never prints its secret (``repr`` hides it), so it cannot reach a log by
accident; it is sent only in an ``Authorization`` header to the registry or its token realm.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness import console, readlimits, runner
from harness.errors import InputError

TOKEN_ENV = "HARNESS_REGISTRY_TOKEN"
USER_ENV = "HARNESS_REGISTRY_USER"
HELPER_TIMEOUT_S = 30.0  # a keychain that asks a human to unlock it must not hang a build
IDENTITY_TOKEN_USER = "<token>"  # what a helper returns for an OAuth identity token (docker's convention)


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
        config = readlimits.load_json(path, what="docker config")
    except (OSError, InputError):
        return None
    if not isinstance(config, dict):
        return None
    helpers = config.get("credHelpers")
    helper = helpers.get(host) if isinstance(helpers, dict) else None
    helper = helper or config.get("credsStore")
    if isinstance(helper, str) and helper:
        found = _from_helper(helper, host, path)
        if found is not None:
            return found
    return _from_auths(config.get("auths"), host, path)


def _names(host: str) -> tuple[str, ...]:
    return (host, f"https://{host}", f"http://{host}", f"https://{host}/v1/", f"https://{host}/v2/")


def _from_auths(auths: Any, host: str, path: Path) -> Credentials | None:
    if not isinstance(auths, dict):
        return None
    for name in _names(host):
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


def _from_helper(helper: str, host: str, path: Path) -> Credentials | None:
    """``docker-credential-<helper> get`` for ``host`` as ``docker login`` stored it (plain host, then
    with a scheme); None when the helper has none.  Its output holds the secret: never in a message."""
    program = f"docker-credential-{helper}"
    if shutil.which(program) is None:
        console.warn(f"{path} names the credential helper {helper!r}, but {program} is not on PATH; "
                     f"asking {host} without credentials")
        return None
    for server in _names(host)[:2]:
        try:
            res = runner.run([program, "get"], input=server, check=False, timeout=HELPER_TIMEOUT_S)
        except runner.TimeoutExpired:
            console.warn(f"{program} get did not answer in {HELPER_TIMEOUT_S:.0f} s (a locked keychain?); "
                         f"asking {host} without credentials")
            return None
        if res.returncode != 0:  # "credentials not found in native keychain": try the next spelling
            continue
        try:
            data = json.loads(res.stdout)
        except ValueError:
            data = None
        user = data.get("Username") if isinstance(data, dict) else None
        secret = data.get("Secret") if isinstance(data, dict) else None
        if not (isinstance(user, str) and isinstance(secret, str) and secret):
            console.warn(f"{program} get answered for {server} with no Username/Secret; asking {host} without credentials")
            return None
        if user == IDENTITY_TOKEN_USER:
            console.warn(f"{program} holds an identity (OAuth refresh) token for {server}, which llama-harness "
                         f"does not exchange; set ${TOKEN_ENV} (and ${USER_ENV}) instead")
            return None
        return Credentials(user, secret, f"{program} ({path})")
    return None
