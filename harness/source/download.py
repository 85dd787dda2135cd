"""URL patches over HTTP(S): bounded downloads, checked against their sha256, cached by digest.

A download has an overall deadline and a size cap besides the per-read timeout, so a server
that sends one byte every few seconds is cut off.  Retries (connection errors, 429 and 5xx,
never other 4xx, with backoff) are urllib3's ``Retry`` on a requests ``HTTPAdapter``.
The content is bytes from the socket to the cache file to ``git apply``: nothing decodes it.
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import requests
import urllib3
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from harness import atomic, console, paths
from harness.errors import InputError, StepError

DEADLINE_S = 120.0  # the whole download, retries included
READ_TIMEOUT_S = 30.0  # one read from the socket
MAX_BYTES = 32 << 20  # no patch is this big; a server that streams forever is stopped here
CHUNK = 64 << 10


class _Retry(Retry):
    """urllib3's Retry that gives up once the download's deadline has passed."""

    ends = float("inf")

    def is_exhausted(self) -> bool:
        return time.monotonic() > self.ends or bool(super().is_exhausted())


def _session(retries: int, ends: float) -> requests.Session:
    retry = type("_DeadlineRetry", (_Retry,), {"ends": ends})(
        total=retries,
        connect=retries,
        read=retries,
        status=retries,
        backoff_factor=0.5,
        status_forcelist=(429, 500, 502, 503, 504),
        allowed_methods=frozenset({"GET"}),
        raise_on_status=False,  # the last response is returned, and reported with its status
        respect_retry_after_header=True,
    )
    session = requests.Session()
    adapter = HTTPAdapter(max_retries=retry)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


def fetch(url: str, *, deadline_s: float = DEADLINE_S, max_bytes: int = MAX_BYTES, retries: int = 3) -> bytes:
    """The body of ``url`` as bytes; StepError on HTTP errors, a deadline overrun or a body over ``max_bytes``."""
    started = time.monotonic()
    ends = started + deadline_s
    try:
        with _session(retries, ends) as session:
            resp = session.get(url, stream=True, timeout=(min(10.0, deadline_s), min(READ_TIMEOUT_S, deadline_s)))
            with resp:
                if resp.status_code >= 400:
                    raise StepError(f"cannot download {url}: HTTP {resp.status_code} {resp.reason or ''}".rstrip())
                declared = resp.headers.get("Content-Length", "")
                if declared.isdigit() and int(declared) > max_bytes:
                    raise StepError(f"cannot download {url}: {int(declared)} bytes, more than the {max_bytes}-byte limit for a patch")
                body = bytearray()
                while True:
                    if time.monotonic() > ends:
                        raise StepError(
                            f"cannot download {url}: not finished after {deadline_s:.0f} s ({len(body)} bytes so far); "
                            "the server is stalled or too slow"
                        )
                    chunk = resp.raw.read1(CHUNK, decode_content=True)
                    if not chunk:
                        break
                    body += chunk
                    if len(body) > max_bytes:
                        raise StepError(f"cannot download {url}: more than the {max_bytes}-byte limit for a patch")
                return bytes(body)
    except (requests.RequestException, urllib3.exceptions.HTTPError, OSError) as exc:
        # a refused connection after the retries, a read that timed out, a reset connection
        raise StepError(f"cannot download {url}: {exc}") from None


def cached_path(sha256: str) -> Path:
    return paths.cache_dir("patches") / f"{sha256}.patch"


def patch(url: str, sha256: str, *, label: str, fresh: bool = False) -> bytes:
    """The patch at ``url`` whose digest must be ``sha256``: from the cache, else downloaded and checked.

    ``fresh`` downloads even when the cache has it (``harness lock --check`` asks what the URL
    serves now).  A digest that does not match is bad input (exit 2) naming ``label``.
    """
    cached = cached_path(sha256)
    if not fresh and cached.exists():
        data = cached.read_bytes()
        if hashlib.sha256(data).hexdigest() == sha256:
            return data
    console.step(f"downloading {url}")
    data = fetch(url)
    digest = hashlib.sha256(data).hexdigest()
    if digest != sha256:
        raise InputError(
            f"{label}: the file at {url} has sha256 {digest}, the recipe and lock say {sha256}",
            hint="the patch changed upstream: check the new content, then put its sha256 in the recipe and run `harness lock`",
        )
    with atomic.temp_file_beside(cached) as tmp:
        tmp.write_bytes(data)
    return data
