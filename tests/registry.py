"""A real OCI registry on loopback for the cache tests: Debian's ``docker-registry``
(distribution 2.8), with htpasswd (bcrypt) basic auth, storage under the test's tmp dir.

Installed by ``make registry`` (``make test`` runs it, as it does ``make ccache``).  Without
it the tests that need it are skipped, except under CI, where that is a failure.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

PROGRAM = "docker-registry"
USER = "harness-test"
# a test secret: it must never show in a process's argv, a log or a manifest
SECRET = "s3cret-" + os.urandom(6).hex()


@dataclass
class Registry:
    host: str  # 127.0.0.1:PORT
    storage: Path
    log: Path
    process: subprocess.Popen[bytes]
    config: Path

    @property
    def url(self) -> str:
        return f"oci+http://{self.host}/harness-tests"

    def blobs(self) -> list[Path]:
        return sorted((self.storage / "docker" / "registry" / "v2" / "blobs").rglob("data"))

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def available() -> bool:
    return shutil.which(PROGRAM) is not None and shutil.which("htpasswd") is not None


def require() -> None:
    if not available():
        if os.environ.get("CI") == "true":
            pytest.fail(f"{PROGRAM} / htpasswd missing: make registry installs them (docker-registry, apache2-utils)")
        pytest.skip(f"{PROGRAM} not installed (make registry)")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def running(root: Path) -> Iterator[Registry]:
    require()
    root.mkdir(parents=True, exist_ok=True)
    htpasswd = root / "htpasswd"
    # -i: the password from stdin, never in argv
    res = subprocess.run(["htpasswd", "-niB", USER], input=SECRET + "\n", capture_output=True, text=True, check=True)
    htpasswd.write_text(res.stdout)
    port = _free_port()
    storage = root / "storage"
    config = root / "config.yml"
    config.write_text(f"""version: 0.1
log:
  level: info
storage:
  filesystem:
    rootdirectory: {storage}
  delete:
    enabled: true
http:
  addr: 127.0.0.1:{port}
auth:
  htpasswd:
    realm: harness-tests
    path: {htpasswd}
""")
    log = root / "registry.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([PROGRAM, "serve", str(config)], stdout=out, stderr=subprocess.STDOUT)
    reg = Registry(f"127.0.0.1:{port}", storage, log, proc, config)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if requests.get(f"http://{reg.host}/v2/", timeout=2).status_code == 401:
                    break
            except requests.ConnectionError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{PROGRAM} did not start: {log.read_text()[-2000:]}")
            time.sleep(0.1)
        yield reg
    finally:
        reg.stop()


def restart(reg: Registry) -> None:
    """Start the registry again on the same port and storage (after ``stop``)."""
    with open(reg.log, "ab") as out:
        reg.process = subprocess.Popen([PROGRAM, "serve", str(reg.config)], stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            requests.get(f"http://{reg.host}/v2/", timeout=2)
            return
        except requests.ConnectionError:
            time.sleep(0.1)
    raise RuntimeError("registry did not restart")
