"""URL patches from a real local HTTP server: bytes end to end, moved content noticed, bounded downloads."""

from __future__ import annotations

import hashlib
import http.server
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from harness.errors import StepError
from harness.source import download
from tests import world as w
from tests.conftest import run_harness, write_recipe

CORPUS = Path(__file__).parent / "data" / "patches"
UP = f"upstream:\n  repo: {w.UPSTREAM_URL}\n  ref: master\n"


@dataclass
class Server:
    """A local HTTP server: ``routes`` maps a path to a body, or to a callable that writes the response."""

    base: str
    routes: dict[str, object] = field(default_factory=dict)
    hits: dict[str, int] = field(default_factory=dict)


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[Server]:
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    state = Server("")

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            state.hits[self.path] = state.hits.get(self.path, 0) + 1
            route = state.routes.get(self.path)
            if route is None:
                self.send_error(404)
            elif callable(route):
                route(self, state.hits[self.path])
            else:
                assert isinstance(route, bytes)
                self.send_response(200)
                self.send_header("Content-Length", str(len(route)))
                self.end_headers()
                self.wfile.write(route)

        def log_message(self, *args: object) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    state.base = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield state
    httpd.shutdown()
    httpd.server_close()


def _url_recipe(directory: Path, url: str, data: bytes) -> Path:
    return write_recipe(directory, "url", UP + f"stack:\n  - patch: {url}\n    sha256: {hashlib.sha256(data).hexdigest()}\n")


def test_latin1_patch_by_url_keeps_its_bytes(tmp_path: Path, world_env: dict[str, str], server: Server) -> None:
    data = (CORPUS / "latin1.patch").read_bytes()
    server.routes["/latin1.patch"] = data
    recipe = _url_recipe(tmp_path, f"{server.base}/latin1.patch", data)
    assert run_harness("lock", recipe).returncode == 0
    res = run_harness("prepare", recipe, "--json")
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert out["items"][0]["status"] == "applied"
    assert b"Caf\xe9 na\xefve (Latin-1)." in (Path(out["tree"]) / "docs/build.md").read_bytes()


def test_latin1_patch_by_path_keeps_its_bytes(tmp_path: Path, world_env: dict[str, str]) -> None:
    (tmp_path / "patches").mkdir()
    (tmp_path / "patches" / "latin1.patch").write_bytes((CORPUS / "latin1.patch").read_bytes())
    recipe = write_recipe(tmp_path, "l1", UP + "stack:\n  - patch: patches/latin1.patch\n")
    res = run_harness("prepare", recipe, "--json")
    assert res.returncode == 0, res.stderr
    assert b"Caf\xe9 na\xefve" in (Path(json.loads(res.stdout)["tree"]) / "docs/build.md").read_bytes()


def test_lock_notices_a_url_patch_that_moved_or_a_digest_edited_in_the_recipe(
    tmp_path: Path, world_env: dict[str, str], server: Server
) -> None:
    data = (CORPUS / "crlf.patch").read_bytes()
    server.routes["/fix.patch"] = data
    url = f"{server.base}/fix.patch"
    recipe = _url_recipe(tmp_path, url, data)
    assert run_harness("lock", recipe).returncode == 0
    assert run_harness("lock", recipe, "--check").returncode == 0

    # the content at the URL changed upstream: --check downloads it again and says so
    server.routes["/fix.patch"] = data.replace(b"corpus", b"moved!")
    res = run_harness("lock", recipe, "--check")
    assert res.returncode == 1, res.stderr
    assert f"patch {url}: the file at {url} has sha256" in res.stderr
    # prepare on a cache without the old download refuses with both digests
    res = run_harness("prepare", recipe, env={**world_env, "HARNESS_CACHE": str(tmp_path / "other-cache")})
    assert res.returncode == 2 and hashlib.sha256(data).hexdigest() in res.stderr, res.stderr

    # the recipe's sha256 edited by hand: recipe and lock disagree (--check, --frozen)
    server.routes["/fix.patch"] = data
    recipe.write_text(recipe.read_text().replace(hashlib.sha256(data).hexdigest(), "ab" * 32))
    res = run_harness("lock", recipe, "--check", "--json")
    assert res.returncode == 1
    assert json.loads(res.stdout)["problems"] == [f"patch {url}: recipe says sha256 {'ab' * 6}, lock has {hashlib.sha256(data).hexdigest()[:12]}"]
    res = run_harness("prepare", recipe, "--frozen")
    assert res.returncode == 2 and "lock disagrees with the recipe" in res.stderr
    assert "Traceback" not in res.stderr


def test_a_dripping_server_is_cut_off_at_the_deadline(server: Server) -> None:
    def drip(handler: http.server.BaseHTTPRequestHandler, hit: int) -> None:
        handler.send_response(200)
        handler.send_header("Content-Length", "1000")
        handler.end_headers()
        for _ in range(1000):  # one byte every second: each read is quick, the whole never ends
            handler.wfile.write(b"x")
            handler.wfile.flush()
            time.sleep(1)

    server.routes["/drip.patch"] = drip
    started = time.monotonic()
    with pytest.raises(StepError, match="not finished after 3 s"):
        download.fetch(f"{server.base}/drip.patch", deadline_s=3)
    assert time.monotonic() - started < 8


def test_a_stalled_server_is_cut_off(server: Server) -> None:
    def stall(handler: http.server.BaseHTTPRequestHandler, hit: int) -> None:
        handler.send_response(200)
        handler.send_header("Content-Length", "1000")
        handler.end_headers()
        handler.wfile.write(b"x")
        handler.wfile.flush()
        time.sleep(15)  # one byte, then one every 5 s or slower

    server.routes["/stall.patch"] = stall
    started = time.monotonic()
    with pytest.raises(StepError, match="cannot download"):
        download.fetch(f"{server.base}/stall.patch", deadline_s=3)
    assert time.monotonic() - started < 8


def test_size_cap(server: Server) -> None:
    def endless(handler: http.server.BaseHTTPRequestHandler, hit: int) -> None:
        handler.send_response(200)
        handler.end_headers()  # no Content-Length: the cap is enforced while reading
        for _ in range(4096):
            handler.wfile.write(b"+" * 1024)

    server.routes["/big.patch"] = b"x" * 5000
    server.routes["/endless.patch"] = endless
    with pytest.raises(StepError, match="more than the 4096-byte limit"):
        download.fetch(f"{server.base}/big.patch", max_bytes=4096)
    with pytest.raises(StepError, match="more than the 65536-byte limit"):
        download.fetch(f"{server.base}/endless.patch", max_bytes=65536)


def test_retries_on_5xx_but_not_on_4xx(server: Server) -> None:
    def flaky(handler: http.server.BaseHTTPRequestHandler, hit: int) -> None:
        if hit < 3:
            handler.send_error(503)
            return
        handler.send_response(200)
        handler.send_header("Content-Length", "2")
        handler.end_headers()
        handler.wfile.write(b"ok")

    server.routes["/flaky.patch"] = flaky
    assert download.fetch(f"{server.base}/flaky.patch") == b"ok"
    assert server.hits["/flaky.patch"] == 3
    with pytest.raises(StepError, match="HTTP 404"):
        download.fetch(f"{server.base}/missing.patch")
    assert server.hits["/missing.patch"] == 1
