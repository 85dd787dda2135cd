"""A local stand-in for the Hugging Face Hub, spoken to by the real huggingface_hub client.

The Hub is not reachable from the tests; ``HF_ENDPOINT`` points huggingface_hub at this
server instead, the way ``tests/world.py`` points git at local repositories.  It answers the
two requests the harness makes, as the Hub documents them:

- ``GET /api/models/{repo}/revision/{revision}``: the model info (``sha``, ``siblings``), what
  ``HfApi.model_info`` reads (``harness lock`` pins revisions and draft files with it);
- ``HEAD``/``GET /{repo}/resolve/{revision}/{file}``: a file, with ``X-Repo-Commit``,
  ``ETag`` and ``Content-Length``, what ``hf_hub_download`` reads and stores in its cache.

Every repository has one commit (``main``), whose SHA is a digest of its files.
"""

from __future__ import annotations

import hashlib
import json
import threading
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


@dataclass
class Repo:
    files: dict[str, bytes]
    sha: str = ""

    def __post_init__(self) -> None:
        digest = hashlib.sha1()
        for name in sorted(self.files):
            digest.update(name.encode() + b"\0" + hashlib.sha256(self.files[name]).digest())
        self.sha = digest.hexdigest()


@dataclass
class Hub:
    endpoint: str = ""
    repos: dict[str, Repo] = field(default_factory=dict)
    requests: list[str] = field(default_factory=list)

    def add(self, repo: str, files: dict[str, bytes | Path]) -> str:
        """Publish ``files`` (name -> bytes or a file to read) as ``repo``'s only commit; its SHA."""
        self.repos[repo] = Repo({name: data.read_bytes() if isinstance(data, Path) else data
                                 for name, data in files.items()})  # fmt: skip
        return self.repos[repo].sha

    def env(self, home: Path) -> dict[str, str]:
        return {"HF_ENDPOINT": self.endpoint, "HF_HOME": str(home), "HF_HUB_DISABLE_TELEMETRY": "1",
                "HF_HUB_DISABLE_PROGRESS_BARS": "1"}  # fmt: skip


@contextmanager
def serve() -> Iterator[Hub]:
    hub = Hub()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:  # quiet
            pass

        def do_GET(self) -> None:
            self._answer(body=True)

        def do_HEAD(self) -> None:
            self._answer(body=False)

        def _answer(self, *, body: bool) -> None:
            path = urllib.parse.unquote(urllib.parse.urlsplit(self.path).path)
            hub.requests.append(f"{self.command} {path}")
            parts = path.strip("/").split("/")
            if parts[:2] == ["api", "models"] and len(parts) >= 6 and parts[4] == "revision":
                repo, revision = "/".join(parts[2:4]), "/".join(parts[5:])
                found = self._repo(repo, revision)
                if found is not None:
                    info = {"id": repo, "modelId": repo, "sha": found.sha, "private": False,
                            "siblings": [{"rfilename": name} for name in sorted(found.files)]}  # fmt: skip
                    self._send(200, json.dumps(info).encode(), {"Content-Type": "application/json"}, body)
                return
            if len(parts) >= 5 and parts[2] == "resolve":
                repo, revision, name = "/".join(parts[:2]), parts[3], "/".join(parts[4:])
                found = self._repo(repo, revision)
                if found is None:
                    return
                if name not in found.files:
                    self._send(404, b"Entry not found", {"X-Error-Code": "EntryNotFound"}, body)
                    return
                data = found.files[name]
                self._send(200, data, {"X-Repo-Commit": found.sha, "ETag": f'"{hashlib.sha256(data).hexdigest()}"',
                                       "Content-Type": "application/octet-stream"}, body)  # fmt: skip
                return
            self._send(404, b"not found", {}, body)

        def _repo(self, repo: str, revision: str) -> Repo | None:
            found = hub.repos.get(repo)
            if found is None:
                self._send(404, b"Repository not found", {"X-Error-Code": "RepoNotFound"}, self.command == "GET")
                return None
            if revision not in ("main", found.sha):
                self._send(404, b"Invalid rev id", {"X-Error-Code": "RevisionNotFound"}, self.command == "GET")
                return None
            return found

        def _send(self, status: int, data: bytes, headers: dict[str, str], body: bool) -> None:
            self.send_response(status)
            for key, value in {**headers, "Content-Length": str(len(data))}.items():
                self.send_header(key, value)
            self.end_headers()
            if body:
                self.wfile.write(data)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    hub.endpoint = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield hub
    finally:
        server.shutdown()
        server.server_close()
