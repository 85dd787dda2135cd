"""An OCI distribution registry as a binary cache, over its HTTP API (``requests``).

Why not oras-py: the cache needs five calls of the distribution API (manifest get/put, blob
head/get, blob upload, tag list) and full control over what carries credentials; oras-py
(0.2.x, pre-1.0) brings its own auth flows and dependencies, logs requests at debug level, and
would still need the digest checks below.  The API is stable (distribution spec v1.0) and
small, so it is spoken directly here, with the session's ``requests``.

One artifact per build: an OCI image manifest (``artifactType`` ``application/vnd.llama-harness.
build.v1``) whose config blob is the build's ``manifest.json`` and whose single layer is the
archive of harness/build/pack.py; annotations carry the recipe, backend, key, stamp, lock digest and
the lock itself, so ``harness cache ls`` needs no download.  Repository ``NAMESPACE/<recipe>``,
tag ``<backend>-<key>``.  Every blob is checked against its digest as it streams in.

Auth: a 401 is answered the way the registry asks (``WWW-Authenticate``): Basic with the
credentials of harness/build/cache/creds.py, or Bearer with a token from the realm (GHCR, Docker Hub,
Harbor).  Credentials go only into headers; URLs and messages never hold them.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from pathlib import Path
from typing import Any

import requests

from harness.build.cache import Entry, Tampered, Unreachable, check_name, creds, tag
from harness.errors import StepError

ARTIFACT_TYPE = "application/vnd.llama-harness.build.v1"
CONFIG_TYPE = "application/vnd.llama-harness.build.manifest.v1+json"
LAYER_TYPES = {".tar.gz": "application/vnd.llama-harness.build.layer.v1.tar+gzip",
               ".tar.zst": "application/vnd.llama-harness.build.layer.v1.tar+zstd"}
MANIFEST_TYPE = "application/vnd.oci.image.manifest.v1+json"
TIMEOUT = (10.0, 60.0)  # connect, between bytes
_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
_PARAM = re.compile(r'(\w+)="([^"]*)"')


class Denied(Unreachable):
    """The registry refused the credentials (or wants some and there are none)."""


class OciCache:
    def __init__(self, url: str, host: str, namespace: str, *, insecure: bool) -> None:
        self.url = url
        self.host = host
        self.namespace = namespace.lower()
        self.base = ("http" if insecure else "https") + "://" + host
        self.creds = creds.lookup(host)
        self._session = requests.Session()
        self._auth: dict[str, str] = {}  # scope -> Authorization header value

    # --- the API ---------------------------------------------------------------------------

    def _repo(self, recipe: str) -> str:
        return f"{self.namespace}/{check_name(recipe)}"

    def fetch(self, recipe: str, backend: str, key: str, dest: Path) -> bool:
        repo = self._repo(recipe)
        r = self._request("GET", f"/v2/{repo}/manifests/{tag(backend, key)}", repo, push=False,
                          headers={"Accept": MANIFEST_TYPE})
        if r.status_code == 404:
            return False
        self._expect(r, 200, "reading the artifact's manifest")
        try:
            layer = r.json()["layers"][0]
            digest, size = str(layer["digest"]), int(layer["size"])
        except (ValueError, KeyError, IndexError, TypeError):
            raise Tampered(f"cache {self.url}: {repo}:{tag(backend, key)} is not a llama-harness build artifact") from None
        if not _DIGEST.match(digest):
            raise Tampered(f"cache {self.url}: {repo}: unsupported layer digest {digest[:80]!r}")
        self._download(repo, digest, size, dest)
        return True

    def push(self, recipe: str, backend: str, key: str, archive: Path, manifest_json: bytes,
             annotations: dict[str, str]) -> None:
        repo = self._repo(recipe)
        layer_digest = _sha256_file(archive)
        config_digest = "sha256:" + hashlib.sha256(manifest_json).hexdigest()
        self._upload(repo, config_digest, manifest_json)
        with open(archive, "rb") as f:
            self._upload(repo, layer_digest, f, archive.stat().st_size)
        suffix = "".join(archive.suffixes[-2:])
        body = {
            "schemaVersion": 2, "mediaType": MANIFEST_TYPE, "artifactType": ARTIFACT_TYPE,
            "config": {"mediaType": CONFIG_TYPE, "digest": config_digest, "size": len(manifest_json)},
            "layers": [{"mediaType": LAYER_TYPES.get(suffix, LAYER_TYPES[".tar.gz"]), "digest": layer_digest,
                        "size": archive.stat().st_size,
                        "annotations": {"org.opencontainers.image.title": tag(backend, key) + suffix}}],
            "annotations": {f"org.llama-harness.{k}": v for k, v in annotations.items()},
        }
        r = self._request("PUT", f"/v2/{repo}/manifests/{tag(backend, key)}", repo, push=True,
                          headers={"Content-Type": MANIFEST_TYPE}, data=json.dumps(body).encode())
        self._expect(r, 201, "storing the artifact's manifest")

    def list(self, recipe: str) -> list[Entry]:
        repo = self._repo(recipe)
        r = self._request("GET", f"/v2/{repo}/tags/list", repo, push=False)
        if r.status_code == 404:
            return []
        self._expect(r, 200, "listing tags")
        entries = []
        for t in sorted(r.json().get("tags") or []):
            m = self._request("GET", f"/v2/{repo}/manifests/{t}", repo, push=False, headers={"Accept": MANIFEST_TYPE})
            if m.status_code != 200:
                continue
            try:
                body = m.json()
                ann = {k.removeprefix("org.llama-harness."): v for k, v in (body.get("annotations") or {}).items()
                       if k.startswith("org.llama-harness.")}
                if body.get("artifactType") not in (None, ARTIFACT_TYPE) or "key" not in ann:
                    continue
                entries.append(Entry(recipe, ann.get("backend", t.split("-", 1)[0]), ann["key"],
                                     int(body["layers"][0]["size"]), ann))
            except (ValueError, KeyError, IndexError, TypeError, AttributeError):
                continue
        return entries

    # --- blobs -----------------------------------------------------------------------------

    def _download(self, repo: str, digest: str, size: int, dest: Path) -> None:
        h, got = hashlib.sha256(), 0
        r = self._request("GET", f"/v2/{repo}/blobs/{digest}", repo, push=False, stream=True)
        self._expect(r, 200, "downloading the archive")
        try:
            with open(dest, "wb") as f:
                for chunk in r.iter_content(1 << 20):
                    h.update(chunk)
                    got += len(chunk)
                    if got > size:
                        break
                    f.write(chunk)
        except requests.RequestException as exc:
            raise Unreachable(f"cache {self.url}: the download stopped after {got} of {size} bytes ({type(exc).__name__})") from None
        finally:
            r.close()
        if got != size or "sha256:" + h.hexdigest() != digest:
            raise Tampered(f"cache {self.url}: {repo}@{digest[:19]}...: got {got} bytes with sha256 {h.hexdigest()[:12]}..., "
                           f"the artifact says {size} bytes, {digest[7:19]}...",
                           hint="nothing was published; the artifact in the registry is damaged or was altered")

    def _upload(self, repo: str, digest: str, data: Any, size: int | None = None) -> None:
        head = self._request("HEAD", f"/v2/{repo}/blobs/{digest}", repo, push=True)
        if head.status_code == 200:
            return
        start = self._request("POST", f"/v2/{repo}/blobs/uploads/", repo, push=True)
        self._expect(start, 202, "starting an upload")
        location = start.headers.get("Location", "")
        if location.startswith("/"):
            location = self.base + location
        elif not location.startswith(self.base + "/"):
            raise StepError(f"cache {self.url}: the registry sent the upload elsewhere ({location[:80]!r}); refused")
        sep = "&" if "?" in location else "?"
        length = size if size is not None else len(data)
        r = self._request("PUT", f"{location}{sep}digest={digest}", repo, push=True, data=data,
                          headers={"Content-Type": "application/octet-stream", "Content-Length": str(length)})
        self._expect(r, 201, "uploading a blob")

    # --- HTTP and auth ---------------------------------------------------------------------

    def _request(self, method: str, path: str, repo: str, *, push: bool, headers: dict[str, str] | None = None,
                 **kw: Any) -> requests.Response:
        url = path if path.startswith(("http://", "https://")) else self.base + path
        scope = f"repository:{repo}:" + ("pull,push" if push else "pull")
        for attempt in (0, 1):
            h = dict(headers or {})
            if scope in self._auth:
                h["Authorization"] = self._auth[scope]
            try:
                r = self._session.request(method, url, headers=h, timeout=TIMEOUT, **kw)
            except requests.RequestException as exc:
                raise Unreachable(f"cache {self.url}: {_reason(exc)}") from None
            if r.status_code == 401 and attempt == 0 and not _is_body(kw.get("data")):
                self._auth[scope] = self._authenticate(r.headers.get("WWW-Authenticate", ""), scope)
                continue
            if r.status_code in (401, 403):
                raise Denied(f"cache {self.url}: the registry refused "
                             + (f"the credentials of {self.creds}" if self.creds else "anonymous access")
                             + f" (HTTP {r.status_code} for {method} {repo})",
                             hint=f"log in with 'docker login {self.host}' or set {creds.TOKEN_ENV}")
            return r
        raise AssertionError("unreachable")

    def _authenticate(self, challenge: str, scope: str) -> str:
        scheme, _, rest = challenge.partition(" ")
        if scheme.lower() == "basic":
            if not self.creds:
                raise Denied(f"cache {self.url}: the registry wants credentials and none were found",
                             hint=f"log in with 'docker login {self.host}' or set {creds.TOKEN_ENV}")
            return "Basic " + base64.b64encode(f"{self.creds.user}:{self.creds.secret}".encode()).decode()
        if scheme.lower() != "bearer":
            raise Denied(f"cache {self.url}: unsupported authentication {scheme[:20]!r}")
        params = dict(_PARAM.findall(rest))
        realm = params.pop("realm", "")
        if not realm.startswith(("https://", "http://")):
            raise Denied(f"cache {self.url}: the registry named no token service")
        params["scope"] = scope
        auth = (self.creds.user, self.creds.secret) if self.creds else None
        try:
            r = self._session.get(realm, params=params, auth=auth, timeout=TIMEOUT)
        except requests.RequestException as exc:
            raise Unreachable(f"cache {self.url}: token service: {_reason(exc)}") from None
        if r.status_code != 200:
            raise Denied(f"cache {self.url}: the token service refused (HTTP {r.status_code})",
                         hint=f"log in with 'docker login {self.host}' or set {creds.TOKEN_ENV}")
        try:
            body = r.json()
            token = body.get("token") or body.get("access_token")
        except (ValueError, AttributeError):
            token = None
        if not isinstance(token, str) or not token:
            raise Denied(f"cache {self.url}: the token service answered no token")
        return f"Bearer {token}"

    def _expect(self, r: requests.Response, status: int, what: str) -> None:
        if r.status_code == status:
            return
        detail = ""
        try:
            errors = r.json().get("errors") or []
            detail = "; ".join(f"{e.get('code')}: {e.get('message')}" for e in errors[:3])
        except (ValueError, AttributeError):
            pass
        err = Unreachable if r.status_code >= 500 else StepError
        raise err(f"cache {self.url}: {what}: HTTP {r.status_code}" + (f" ({detail[:300]})" if detail else ""))


def _is_body(data: Any) -> bool:
    return data is not None and not isinstance(data, (bytes, str))  # a stream cannot be sent twice


def _reason(exc: requests.RequestException) -> str:
    if isinstance(exc, requests.ConnectionError):
        return "cannot connect (or the connection dropped)"
    if isinstance(exc, requests.Timeout):
        return "timed out"
    return type(exc).__name__


def _sha256_file(path: Path) -> str:
    from harness import atomic

    return "sha256:" + atomic.sha256_file(path)
