"""The binary cache against a real registry (Debian's docker-registry, basic auth, loopback)
and a plain directory, with the session's real llama.cpp build as the thing pushed.

Nothing here compiles llama.cpp: a pull is proven by the smoke checks only, and every
fallback to building is taken at the function level (``pull`` returns None).
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from harness.build import manifest, pack
from harness.build.cache import Tampered, oci, open_cache
from harness.build.cache import pull as cache_pull
from tests import registry as registry_mod
from tests import session_build
from tests.conftest import REPO

pytestmark = pytest.mark.slow


class CmdlineWatch:
    """Reads every process's argv (/proc/*/cmdline) while a test runs: the secret must never show."""

    def __init__(self, secret: str) -> None:
        self.secret = secret.encode()
        self.seen: list[str] = []
        self.scans = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            for entry in os.scandir("/proc"):
                if entry.name.isdigit():
                    try:
                        with open(f"/proc/{entry.name}/cmdline", "rb") as f:
                            argv = f.read()
                    except OSError:
                        continue
                    if self.secret in argv:
                        self.seen.append(argv.replace(b"\0", b" ").decode(errors="replace"))
            self.scans += 1
            self._stop.wait(0.02)

    def __enter__(self) -> CmdlineWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[registry_mod.Registry]:
    with registry_mod.running(tmp_path_factory.mktemp("registry")) as reg:
        yield reg


@pytest.fixture(scope="module")
def docker_config(tmp_path_factory: pytest.TempPathFactory, registry: registry_mod.Registry) -> Path:
    """What ``docker login 127.0.0.1:PORT`` writes."""
    d = tmp_path_factory.mktemp("docker")
    auth = base64.b64encode(f"{registry_mod.USER}:{registry_mod.SECRET}".encode()).decode()
    (d / "config.json").write_text(json.dumps({"auths": {registry.host: {"auth": auth}}}))
    return d


def _env(test_cache: Path, docker_config: Path, harness_cache: Path | None = None) -> dict[str, str]:
    env = session_build.env(test_cache)
    env["DOCKER_CONFIG"] = str(docker_config)
    env.pop(oci.creds.TOKEN_ENV, None)
    if harness_cache is not None:  # another machine: nothing cached
        env["HARNESS_CACHE"] = str(harness_cache)
    return env


def _harness(env: dict[str, str], *args: str | Path, timeout: float = 1800) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "harness", *map(str, args)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def private(llama_build: Path, test_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The session build, its recipe, lock and patch copied where no other test session rewrites them
    (the shared session recipe follows whichever checkout ran last)."""
    import shutil

    paths = session_build.layout(test_cache)
    root = tmp_path_factory.mktemp("private")
    for attempt in range(3):
        shutil.rmtree(root / "repo", ignore_errors=True)
        shutil.rmtree(root / "builds", ignore_errors=True)
        build = session_build.ensure(test_cache) if attempt else llama_build
        shutil.copytree(paths["repo"], root / "repo", symlinks=True)
        shutil.copytree(build, root / "builds" / "session" / "cpu", symlinks=True)
        copied = manifest.read_or_none(root / "builds" / "session" / "cpu")
        recipe = root / "repo" / "recipes" / "session.yaml"
        if copied and copied.key.targets == sorted(session_build.TARGETS) and recipe.read_text() == session_build.recipe_text():
            return {"recipe": recipe, "builds": root / "builds", "root": root / "builds" / "session" / "cpu"}
    raise AssertionError("the shared session build kept changing under this test")


@pytest.fixture(scope="module")
def pushed(private: dict[str, Path], test_cache: Path, registry: registry_mod.Registry, docker_config: Path) -> dict[str, Any]:
    """The session build pushed to the registry (``harness build --push``: up to date, so only pushed)."""
    with CmdlineWatch(registry_mod.SECRET) as watch:
        res = _harness(_env(test_cache, docker_config), "build", private["recipe"], "--builds-dir", private["builds"],
                       "--cache", registry.url, "--push", "--json")
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)[0]["noop"] is True, res.stderr
    published = manifest.read(private["root"])
    assert published is not None
    assert f"pushed {published.key_digest[:12]}" in res.stderr
    return {"manifest": published, "watch": watch, "output": res.stdout + res.stderr, "recipe": private["recipe"]}


def test_push_then_pull_on_a_fresh_machine(pushed: dict[str, Any], tmp_path: Path, test_cache: Path,
                                           registry: registry_mod.Registry, docker_config: Path) -> None:
    built: manifest.Manifest = pushed["manifest"]
    env = _env(test_cache, docker_config, tmp_path / "fresh-cache")
    listed = _harness(env, "cache", "ls", pushed["recipe"], "--cache", registry.url, "--json")
    assert listed.returncode == 0, listed.stderr
    [entry] = [e for e in json.loads(listed.stdout) if e["key"] == built.key_digest]
    assert entry["backend"] == "cpu" and entry["annotations"]["stamp"] == built.stamp.commit and entry["size"] > 0
    assert json.loads(entry["annotations"]["lock"])["digest"] == built.lock_digest

    builds = tmp_path / "builds"
    with CmdlineWatch(registry_mod.SECRET) as watch:
        res = _harness(env, "build", pushed["recipe"], "--builds-dir", builds, "--cache", registry.url, "--json")
    assert res.returncode == 0, res.stderr
    [result] = json.loads(res.stdout)
    assert result["origin"] == {"how": "pulled", "cache": registry.url, "built_on": built.origin.built_on}
    assert "building from source" not in res.stderr and "configuring" not in res.stderr
    root = builds / "session" / "cpu"
    pulled = manifest.read(root)
    assert pulled is not None and pulled.key == built.key and pulled.files == built.files
    assert pulled.smoke.names() >= {"version", "decode"} and pulled.smoke.decode is not None and pulled.smoke.decode.ok
    assert pack.verify_files(root, pulled) == []
    version = subprocess.run([root / "bin" / "llama-server", "--version"], capture_output=True, text=True, timeout=60)
    assert built.stamp.commit in version.stdout + version.stderr
    t = pulled.timings
    print(f"pull {t['pull_s']}s + verify {t['verify_s']}s + smoke {t['smoke_s']}s = {t['total_s']}s; "
          f"the build it came from: build_s {t['built_build_s']}s")

    # credentials: never in any process's argv, the output, the manifests, the registry's log
    for w in (pushed["watch"], watch):
        assert w.scans > 0 and w.seen == []
    for text in (pushed["output"], res.stdout + res.stderr, (root / "manifest.json").read_text(),
                 registry.log.read_text()):
        assert registry_mod.SECRET not in text

    # up to date now: a no-op, nothing pulled again
    again = _harness(env, "build", pushed["recipe"], "--builds-dir", builds, "--cache", registry.url, "--json")
    assert again.returncode == 0 and json.loads(again.stdout)[0]["noop"] is True, again.stderr


def test_a_key_one_stack_item_or_one_cpu_feature_away_misses(pushed: dict[str, Any], tmp_path: Path,
                                                              registry: registry_mod.Registry, docker_config: Path,
                                                              monkeypatch: pytest.MonkeyPatch,
                                                              capfd: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("DOCKER_CONFIG", str(docker_config))
    key: manifest.CacheKey = pushed["manifest"].key
    cache = open_cache(registry.url)
    features = key.isa.get("features", [])
    others = {"one more stack item": key.model_copy(update={"lock": "0" * 64}),
              "one more CPU feature": key.model_copy(update={"isa": {**key.isa, "features": sorted([*features, "avx10_2"])}})}
    for what, other in others.items():
        assert other.digest != key.digest, what
        out = tmp_path / "builds" / "session" / "cpu"
        assert cache_pull.pull(cache, other, recipe="session", backend="cpu", out=out, root=tmp_path / "builds",
                               ident="x", checks=[], smoke_model=None) is None, what
        assert f"not in cache {registry.url} (key {other.digest[:12]}); building from source" in capfd.readouterr().err
        assert not out.exists()


def test_a_flipped_byte_is_refused_and_nothing_published(pushed: dict[str, Any], tmp_path: Path, test_cache: Path,
                                                        registry: registry_mod.Registry, docker_config: Path) -> None:
    layer = max(registry.blobs(), key=lambda p: p.stat().st_size)  # the archive
    data = bytearray(layer.read_bytes())
    original = bytes(data)
    data[len(data) // 2] ^= 0x01
    layer.write_bytes(bytes(data))
    try:
        builds = tmp_path / "builds"
        res = _harness(_env(test_cache, docker_config, tmp_path / "fresh-cache"), "build", pushed["recipe"],
                       "--builds-dir", builds, "--cache", registry.url)
        assert res.returncode == 1, res.stderr
        assert "refusing the cached build" in res.stderr and "nothing was published" in res.stderr, res.stderr
        assert "Traceback" not in res.stderr
        assert not (builds / "session" / "cpu").exists()
        assert not list(builds.glob("session/.cpu*"))  # no temp left beside it
    finally:
        layer.write_bytes(original)


def test_the_registry_down_mid_pull_falls_back(pushed: dict[str, Any], tmp_path: Path, registry: registry_mod.Registry,
                                              docker_config: Path, monkeypatch: pytest.MonkeyPatch,
                                              capfd: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("DOCKER_CONFIG", str(docker_config))
    real = requests.Response.iter_content

    def first_chunk_then_stop(self: requests.Response, *args: Any, **kw: Any) -> Iterator[Any]:
        for n, chunk in enumerate(real(self, *args, **kw)):
            yield chunk
            if n == 0 and "/blobs/" in self.url:
                registry.stop()  # the registry dies with the rest of the archive unsent

    monkeypatch.setattr(requests.Response, "iter_content", first_chunk_then_stop)
    key: manifest.CacheKey = pushed["manifest"].key
    out = tmp_path / "builds" / "session" / "cpu"
    try:
        assert cache_pull.pull(open_cache(registry.url), key, recipe="session", backend="cpu", out=out,
                               root=tmp_path / "builds", ident="x", checks=[], smoke_model=None) is None
    finally:
        registry_mod.restart(registry)
    err = capfd.readouterr().err
    assert "building from source" in err and "the download stopped after" in err, err
    assert not out.exists()
    # with nothing listening at all: the same fallback
    registry.stop()
    try:
        assert cache_pull.pull(open_cache(registry.url), key, recipe="session", backend="cpu", out=out,
                               root=tmp_path / "builds", ident="x", checks=[], smoke_model=None) is None
        assert "cannot connect" in capfd.readouterr().err
    finally:
        registry_mod.restart(registry)


def test_two_concurrent_pulls_publish_one_whole_build(pushed: dict[str, Any], tmp_path: Path, test_cache: Path,
                                                      registry: registry_mod.Registry, docker_config: Path) -> None:
    env = _env(test_cache, docker_config, tmp_path / "fresh-cache")
    builds = tmp_path / "builds"
    argv = [sys.executable, "-m", "harness", "build", str(pushed["recipe"]), "--builds-dir", str(builds),
            "--cache", registry.url, "--json"]
    procs = [subprocess.Popen(argv, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    outs = [p.communicate(timeout=1800) for p in procs]
    for p, (_out, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err
    root = builds / "session" / "cpu"
    published = manifest.read(root)
    assert published is not None and published.origin.how == "pulled", [err for _out, err in outs]
    assert pack.verify_files(root, published) == []


def test_credentials_from_a_credential_helper(pushed: dict[str, Any], tmp_path: Path, test_cache: Path,
                                             registry: registry_mod.Registry) -> None:
    """``credsStore`` / ``credHelpers`` as docker runs them: ``docker-credential-NAME get``, server on stdin,
    JSON on stdout (the helper here is a script speaking that protocol; the registry checks its answer)."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    helper = bindir / "docker-credential-harness-test"
    helper.write_text(
        "#!/bin/sh\n[ \"$1\" = get ] || exit 1\nread server\n"
        f"case \"$server\" in {registry.host}|https://{registry.host})\n"
        f"  printf '{{\"ServerURL\":\"%s\",\"Username\":\"{registry_mod.USER}\",\"Secret\":\"{registry_mod.SECRET}\"}}' \"$server\";;\n"
        "  *) echo 'credentials not found in native keychain'; exit 1;;\nesac\n")
    helper.chmod(0o755)
    config = tmp_path / "docker"
    config.mkdir()
    env = _env(test_cache, config, tmp_path / "fresh-cache")
    env["PATH"] = f"{bindir}{os.pathsep}{env['PATH']}"
    key = pushed["manifest"].key_digest
    for settings in ({"auths": {registry.host: {}}, "credsStore": "harness-test"},
                     {"credsStore": "absent", "credHelpers": {registry.host: "harness-test"}}):
        (config / "config.json").write_text(json.dumps(settings))
        with CmdlineWatch(registry_mod.SECRET) as watch:
            listed = _harness(env, "cache", "ls", pushed["recipe"], "--cache", registry.url, "--json")
        assert listed.returncode == 0, listed.stderr
        assert key in [e["key"] for e in json.loads(listed.stdout)]
        assert watch.scans > 0 and watch.seen == [] and registry_mod.SECRET not in listed.stdout + listed.stderr

    # a helper that is not installed: said, and the registry is asked without credentials (and refuses)
    (config / "config.json").write_text(json.dumps({"credHelpers": {registry.host: "absent"}}))
    refused = _harness(env, "cache", "ls", pushed["recipe"], "--cache", registry.url)
    assert refused.returncode == 1, refused.stderr
    assert "docker-credential-absent is not on PATH" in refused.stderr and "Traceback" not in refused.stderr


def test_wrong_credentials_fall_back_and_a_url_with_credentials_is_refused(
        pushed: dict[str, Any], tmp_path: Path, registry: registry_mod.Registry, monkeypatch: pytest.MonkeyPatch,
        capfd: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("HARNESS_REGISTRY_USER", registry_mod.USER)
    monkeypatch.setenv("HARNESS_REGISTRY_TOKEN", "not-the-password")
    key: manifest.CacheKey = pushed["manifest"].key
    out = tmp_path / "builds" / "session" / "cpu"
    assert cache_pull.pull(open_cache(registry.url), key, recipe="session", backend="cpu", out=out,
                           root=tmp_path / "builds", ident="x", checks=[], smoke_model=None) is None
    err = capfd.readouterr().err
    assert "refused the credentials of harness-test (from $HARNESS_REGISTRY_TOKEN)" in err and "not-the-password" not in err
    with pytest.raises(Exception, match="credentials do not belong in a URL"):
        open_cache(f"oci+http://{registry_mod.USER}:{registry_mod.SECRET}@{registry.host}/x")


def test_a_directory_cache_and_the_pack_archive(private: dict[str, Path], test_cache: Path, tmp_path: Path,
                                                docker_config: Path) -> None:
    """file:// cache: push, pull on a fresh machine; a damaged archive refused; ``harness pack`` runs elsewhere."""
    paths = {"recipe": private["recipe"], "builds": private["builds"]}
    url = (tmp_path / "dircache").as_uri()
    res = _harness(_env(test_cache, docker_config), "build", paths["recipe"], "--builds-dir", paths["builds"],
                   "--cache", url, "--push")
    assert res.returncode == 0, res.stderr
    [archive] = (tmp_path / "dircache" / "session").glob("cpu-*.tar.*")
    fresh = _env(test_cache, docker_config, tmp_path / "fresh-cache")
    res = _harness(fresh, "build", paths["recipe"], "--builds-dir", tmp_path / "b1", "--cache", url, "--json")
    assert res.returncode == 0 and json.loads(res.stdout)[0]["origin"]["how"] == "pulled", res.stderr

    data = bytearray(archive.read_bytes())
    data[-100] ^= 0x01
    archive.write_bytes(bytes(data))
    res = _harness(fresh, "build", paths["recipe"], "--builds-dir", tmp_path / "b2", "--cache", url)
    assert res.returncode == 1 and "refusing the cached build" in res.stderr, res.stderr
    assert not (tmp_path / "b2" / "session" / "cpu").exists()

    out = tmp_path / "session.tar.gz"
    res = _harness(_env(test_cache, docker_config), "pack", paths["recipe"], "--builds-dir", paths["builds"],
                   "--out", out, "--json")
    assert res.returncode == 0, res.stderr
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    pack.unpack(out, elsewhere)
    packed = manifest.read(elsewhere)
    assert packed is not None and pack.verify_files(elsewhere, packed) == []
    assert (elsewhere / "LICENSE").exists() and (elsewhere / "convert_hf_to_gguf.py").exists()
    version = subprocess.run([elsewhere / "bin" / "llama-server", "--version"], capture_output=True, text=True,
                             timeout=60, env={"PATH": "/usr/bin:/bin"})
    assert version.returncode == 0 and packed.stamp.commit in version.stdout + version.stderr
    with pytest.raises(Tampered):
        open_cache(url).fetch("session", "cpu", packed.key_digest, tmp_path / "x.tar.gz")


def test_an_archive_cannot_write_outside_its_directory(tmp_path: Path) -> None:
    import io
    import tarfile

    for name, kind, link in [("../evil", tarfile.REGTYPE, ""), ("/abs", tarfile.REGTYPE, ""),
                             ("bin/libx.so", tarfile.SYMTYPE, "/etc/passwd"), ("dev", tarfile.CHRTYPE, "")]:
        archive = tmp_path / "a.tar.gz"
        with tarfile.open(archive, "w:gz") as tar:
            info = tarfile.TarInfo(name)
            info.type, info.linkname = kind, link
            tar.addfile(info, io.BytesIO(b""))
        dest = tmp_path / "dest"
        dest.mkdir(exist_ok=True)
        with pytest.raises(pack.BadArchive, match="refusing archive member"):
            pack.unpack(archive, dest)
        assert not (tmp_path / "evil").exists()
