"""llama.cpp's RPC backend: build flags (fast), endpoint checks against a real rpc-server, and a model
split over two real rpc-servers on loopback (slow: the session build has ``build.rpc: true``)."""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from harness import hosts
from harness.backends import get as get_backend
from harness.build import cmake, isa, manifest
from harness.build import run as build
from harness.errors import InputError, StepError
from harness.hosts import free_port
from harness.recipe.load import Recipe, load_recipe
from harness.serve.rpc import endpoints, process, protocol
from tests import fake_manifest, session_build
from tests.conftest import REPO, run_harness, write_recipe

HEAD = endpoints.BuildId(stamp="0c1e570+stack.61bf57a5", patched_commit="52c8f7d6" + "0" * 32,
                         base="0c1e57098bba43ac29e6e3b677cdceebdd22334f", lock_digest="61bf57a5" + "1" * 56,
                         protocol="7.0.0", root="builds/x/cpu")


# --- fast -------------------------------------------------------------------------------------


def test_endpoints_parse_as_llama_server_takes_them() -> None:
    eps = hosts.parse_list(["127.0.0.1:50052,gpu-box:50053@0c1e570+stack.61bf57a5", " 10.0.0.2:1 "])
    assert [str(e) for e in eps] == ["127.0.0.1:50052", "gpu-box:50053@0c1e570+stack.61bf57a5", "10.0.0.2:1"]
    assert endpoints.flags(eps) == ["--rpc", "127.0.0.1:50052,gpu-box:50053,10.0.0.2:1"]
    for bad, why in [("127.0.0.1", "not host:port"), ("[::1]:50052", "IPv4 only"), ("h:70000", "out of range"),
                     ("h:1@main", "not a build stamp"), ("h:1,h:1", "listed twice")]:
        with pytest.raises(InputError, match=why):
            hosts.parse_list([bad])


def test_a_mismatch_names_the_commit_or_the_stack() -> None:
    assert endpoints.mismatch(HEAD, "0c1e570+stack.61bf57a5") is None
    assert endpoints.mismatch(HEAD, "0c1e57098bba+stack.61bf57a5c6") is None  # longer prefixes agree
    assert endpoints.mismatch(HEAD, "1234567+stack.61bf57a5") == "llama.cpp commit 1234567 there, 0c1e570 on the head"
    assert endpoints.mismatch(HEAD, "0c1e570+stack.deadbeef") == "stack +stack.deadbeef there, +stack.61bf57a5 on the head"
    assert endpoints.mismatch(HEAD, "0c1e570") == "stack (none) there, +stack.61bf57a5 on the head"
    other = endpoints.BuildId(**{**HEAD.to_json(), "patched_commit": "f" * 40, "lock_digest": "ab" * 32})
    assert endpoints.mismatch(HEAD, other) == "stack (lock digest) abababab there, 61bf57a5 on the head"
    assert endpoints.mismatch(HEAD, HEAD) is None


def test_build_rpc_adds_ggml_rpc_and_the_server_target_and_nothing_else(tmp_path: Path) -> None:
    plain = load_recipe(write_recipe(tmp_path / "a", "plain", "build: {backends: [cpu, cuda]}\n"))
    rpc = load_recipe(write_recipe(tmp_path / "b", "rpc", "build: {backends: [cpu, cuda], rpc: true}\n"))
    plan = isa.plan(rpc.spec.build, isa.Compiler("gcc", "gcc", (13, 2)))

    def entries(recipe: Recipe, backend: str) -> dict[str, str]:
        return cmake.cache_entries(recipe.spec.build, get_backend(backend), cmake.Stamp(0, "-"), Path("/s"), Path("/b"),
                                   ccache=None, isa=plan)

    for backend in ("cpu", "cuda"):
        assert entries(rpc, backend)["GGML_RPC"] == "ON"
        assert "GGML_RPC" not in entries(plain, backend)
        assert build.options_of(rpc, backend)["rpc"] is True
        assert "rpc" not in build.options_of(plain, backend)  # builds without rpc keep their identity and build dir


def test_dry_run_shows_the_rpc_build(tmp_path: Path) -> None:
    recipe = write_recipe(tmp_path / "r", "split", "build: {backends: [cuda], cuda: {archs: [90]}, rpc: true}\n")
    res = run_harness("build", recipe, "--dry-run", "--json")
    assert res.returncode == 0, res.stderr
    [plan] = json.loads(res.stdout)
    assert "-DGGML_RPC=ON" in plan["configure"] and "-DGGML_CUDA=ON" in plan["configure"]
    assert plan["build"][-1] == "ggml-rpc-server" and plan["rpc"]["server"] == "ggml-rpc-server"
    assert plan["smoke"] == ["version", "decode", "rpc"]
    text = run_harness("build", recipe, "--dry-run")
    assert "rpc:       -DGGML_RPC=ON, target ggml-rpc-server" in text.stdout + text.stderr


def test_rpc_server_binds_loopback_unless_allowed(tmp_path: Path) -> None:
    recipe = write_recipe(tmp_path / "r", "split", "build: {rpc: true}\n")
    res = run_harness("rpc-server", recipe, "--host", "0.0.0.0")
    assert res.returncode == 2
    assert "refusing to bind 0.0.0.0" in res.stderr and "no authentication" in res.stderr
    assert "SSH tunnel" in res.stderr and "--allow-remote" in res.stderr
    res = run_harness("rpc-server", recipe, "--host", "localhost")
    assert res.returncode == 2 and "IPv4 address only" in res.stderr
    # allowed, the next thing it needs is a build
    res = run_harness("rpc-server", recipe, "--host", "0.0.0.0", "--allow-remote", "--builds-dir", tmp_path / "none")
    assert res.returncode == 2 and "no build in" in res.stderr and "Traceback" not in res.stderr


def test_rpc_server_and_serve_need_a_build_with_rpc(tmp_path: Path) -> None:
    recipe = write_recipe(tmp_path / "r", "plain", "build: {backends: [cpu]}\n")
    root = tmp_path / "builds" / "plain" / "cpu"
    (root / "bin").mkdir(parents=True)
    (root / "manifest.json").write_text(json.dumps(fake_manifest.data()))
    res = run_harness("rpc-server", recipe, "--builds-dir", tmp_path / "builds")
    assert res.returncode == 2 and "built without the RPC backend" in res.stderr and "build.rpc: true" in res.stderr
    no_rpc = endpoints.BuildId(**{**HEAD.to_json(), "protocol": None})
    with pytest.raises(InputError, match="has no RPC backend: its llama-server refuses --rpc"):
        endpoints.check([hosts.parse("127.0.0.1:9")], no_rpc)


def test_nothing_listening_is_refused_at_once() -> None:
    port = free_port("127.0.0.1")
    t0 = time.monotonic()
    with pytest.raises(StepError) as exc:
        endpoints.check([hosts.parse(f"127.0.0.1:{port}")], HEAD)
    assert time.monotonic() - t0 < 5
    assert f"127.0.0.1:{port}: Connection refused (is rpc-server running there?)" in str(exc.value)


def _published(root: Path) -> manifest.Manifest:
    found = manifest.read(root)
    assert found is not None, root
    return found


# --- a real rpc-server --------------------------------------------------------------------------


@pytest.fixture
def rpc_build(tmp_path: Path, llama_build: Path) -> tuple[Path, Path]:
    """A recipe with ``build.rpc: true`` whose builds/split/cpu is the session's build (manifest and all)."""
    manifest = json.loads((llama_build / "manifest.json").read_text())
    assert manifest.get("rpc", {}).get("server") == session_build.RPC_TARGET, "the session build needs build.rpc: true"
    recipe = write_recipe(tmp_path / "repo", "split", "name: split\nbuild: {backends: [cpu], rpc: true}\nserve: {ctx: 512}\n")
    builds = tmp_path / "builds"
    (builds / "split").mkdir(parents=True)
    (builds / "split" / "cpu").symlink_to(llama_build.resolve())
    return recipe, builds


@pytest.mark.slow
def test_the_rpc_build_was_proven_through_its_rpc_server_before_publishing(llama_build: Path) -> None:
    manifest = json.loads((llama_build / "manifest.json").read_text())
    assert session_build.RPC_TARGET in manifest["targets"] and f"bin/{session_build.RPC_TARGET}" in manifest["files"]
    smoke = manifest["smoke"]["rpc"]
    assert smoke["ok"] and smoke["protocol"] == manifest["rpc"]["protocol"] == "7.0.0" and smoke["devices"]
    assert smoke["rpc_tokens_per_s"] > 0


@pytest.fixture
def plain_rpc_server(llama_build: Path, tmp_path: Path) -> Iterator[process.RpcServer]:
    """The build's rpc-server started directly (no harness rpc-server: not in the registry)."""
    port = free_port("127.0.0.1")
    argv = process.command(llama_build / "bin" / "ggml-rpc-server", "127.0.0.1", port)
    with process.running(argv, "127.0.0.1", port, log_path=tmp_path / "plain-rpc.log") as rs:
        yield rs


@pytest.mark.slow
def test_endpoint_checks_against_a_real_rpc_server(plain_rpc_server: process.RpcServer, llama_build: Path) -> None:
    head = endpoints.BuildId.from_manifest(llama_build, _published(llama_build))
    ep = plain_rpc_server.endpoint
    said = protocol.hello("127.0.0.1", plain_rpc_server.port)
    assert said.protocol == head.protocol == "7.0.0" and said.devices and said.devices[0].total > 0
    with pytest.raises(InputError, match=f"{ep}: cannot tell which llama.cpp it runs") as exc:
        endpoints.check([hosts.parse(ep)], head)
    assert "--rpc HOST:PORT@STAMP" in str(exc.value) and "--rpc-unverified" in str(exc.value)
    [ok] = endpoints.check([hosts.parse(f"{ep}@{head.stamp}")], head)
    assert ok.verified == "stamp" and ok.protocol == "7.0.0"
    with pytest.raises(InputError, match=f"{ep}: llama.cpp commit 1234567 there, 0c1e570 on the head"):
        endpoints.check([hosts.parse(f"{ep}@1234567+stack.61bf57a5")], head)
    assert endpoints.check([hosts.parse(ep)], head, unverified=True)[0].verified == "unverified"
    # as if harness rpc-server had started it: the registry names its build
    binary, log = Path(plain_rpc_server.argv[0]), plain_rpc_server.log_path
    other = endpoints.BuildId(**{**head.to_json(), "patched_commit": "f" * 40, "lock_digest": "ab" * 32})
    entry = endpoints.register("127.0.0.1", plain_rpc_server.port, plain_rpc_server.pid, binary, other, log)
    with pytest.raises(InputError, match=f"{ep}: stack \\(lock digest\\) abababab there, 61bf57a5 on the head"):
        endpoints.check([hosts.parse(ep)], head)
    endpoints.register("127.0.0.1", plain_rpc_server.port, plain_rpc_server.pid, binary, head, log)
    [ok] = endpoints.check([hosts.parse(ep)], head)
    assert ok.verified == "registry" and ok.build is not None and ok.build["pid"] == plain_rpc_server.pid
    endpoints.register("127.0.0.1", plain_rpc_server.port, 999999999, binary, head, log)  # a dead server's entry
    with pytest.raises(InputError, match=r"cannot tell which llama\.cpp"):
        endpoints.check([hosts.parse(ep)], head)
    endpoints.unregister(entry, 999999999)
    assert not entry.exists()
    older = endpoints.BuildId(**{**head.to_json(), "protocol": "6.1.0"})
    with pytest.raises(InputError, match=f"{ep}: RPC protocol 7.0.0, the head's build speaks 6.1.0"):
        endpoints.check([hosts.parse(f"{ep}@{head.stamp}")], older)


@pytest.mark.slow
def test_a_busy_rpc_server_is_refused_and_survives_the_probe(plain_rpc_server: process.RpcServer,
                                                             llama_build: Path) -> None:
    """rpc-server serves one client at a time: llama-server would wait forever on a held one."""
    head = endpoints.BuildId.from_manifest(llama_build, _published(llama_build))
    holder = socket.create_connection(("127.0.0.1", plain_rpc_server.port), timeout=10)
    holder.sendall(struct.pack("<BQ", protocol.CMD_HELLO, protocol.CONN_CAPS_SIZE) + bytes(protocol.CONN_CAPS_SIZE))
    assert struct.unpack("<Q", holder.recv(8))[0] == 4 + protocol.CONN_CAPS_SIZE
    try:
        with pytest.raises(StepError, match="did not answer HELLO within 2s; rpc-server serves one client at a time"):
            endpoints.check([hosts.parse(f"{plain_rpc_server.endpoint}@{head.stamp}")], head, timeout=2)
    finally:
        holder.close()
    # the probe's HELLO was still queued: rpc-server answers it into a closed socket (SIGPIPE, ignored)
    time.sleep(1)
    assert protocol.hello("127.0.0.1", plain_rpc_server.port).protocol == "7.0.0"
    assert plain_rpc_server.process is not None and plain_rpc_server.process.poll() is None


@pytest.mark.slow
def test_rpc_server_says_what_it_cannot_do(rpc_build: tuple[Path, Path], plain_rpc_server: process.RpcServer) -> None:
    recipe, builds = rpc_build
    res = run_harness("rpc-server", recipe, "--builds-dir", builds, "--mem", "2048", timeout=120)
    assert res.returncode == 2 and "has no --mem option" in res.stderr and "--tensor-split" in res.stderr
    res = run_harness("rpc-server", recipe, "--builds-dir", builds, "--port", str(plain_rpc_server.port), timeout=120)
    assert res.returncode == 2 and f"127.0.0.1:{plain_rpc_server.port} is in use" in res.stderr
    assert "Traceback" not in res.stderr


def _start(args: list[str], env: dict[str, str]) -> tuple[subprocess.Popen[str], dict[str, object]]:
    """A harness command that prints one JSON line when ready (rpc-server, serve)."""
    proc = subprocess.Popen([sys.executable, "-m", "harness", args[0], "--json", *args[1:]], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], 180)
    line = proc.stdout.readline() if ready else ""
    if not line:
        proc.kill()
        pytest.fail(f"harness {args[0]} printed nothing; stderr:\n{proc.communicate()[1]}")
    return proc, json.loads(line)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _ask(recipe: Path, builds: Path, model: Path, *rpc: str) -> dict[str, object]:
    res = run_harness("serve", recipe, "--builds-dir", builds, "--model", model, "--prompt", "The capital of France is",
                      "--n-predict", "24", "--json", *rpc, "--", "-ngl", "20", "-t", "2", timeout=600)
    assert res.returncode == 0, res.stderr
    data: dict[str, object] = json.loads(res.stdout)
    return data


@pytest.mark.slow
def test_a_model_split_over_two_rpc_servers_answers_as_it_does_locally(
    rpc_build: tuple[Path, Path], smollm2_gguf: Path, tmp_path: Path
) -> None:
    recipe, builds = rpc_build
    env = {**os.environ, "GGML_RPC_DEBUG": "1"}  # rpc-server logs every command it serves
    servers = []
    try:
        for name in ("a", "b"):
            servers.append(_start(["rpc-server", str(recipe), "--builds-dir", str(builds), "--port", "0",
                                   "--log", str(tmp_path / f"rpc-{name}.log")], env))
        (_, a), (proc_b, b) = servers
        assert a["host"] == "127.0.0.1" and a["port"] != b["port"] and a["protocol"] == "7.0.0"
        assert a["rpc"] == f"127.0.0.1:{a['port']}@{a['build']['stamp']}"  # type: ignore[index]
        both = f"{a['endpoint']},{b['endpoint']}"

        # 30 layers: 20 split over the two rpc-servers, the rest and the output on the local CPU
        local = _ask(recipe, builds, smollm2_gguf)
        split = _ask(recipe, builds, smollm2_gguf, "--rpc", both)
        assert split["content"] and split["content"] == local["content"]
        for info in (a, b):
            log = Path(str(info["log"])).read_text()
            assert log.count("[set_tensor]") > 10 and "[graph_compute]" in log, log[-2000:]

        # bench records the endpoints it split over
        prompts = tmp_path / "prompts" / "code"
        prompts.mkdir(parents=True)
        (prompts / "one.txt").write_text("Write a Python function that adds two numbers.")
        res = run_harness("bench", recipe, "--builds-dir", builds, "--model", smollm2_gguf, "--spec", "none",
                          "--prompts", prompts.parent, "--no-builtin", "--n-predict", "8", "--rpc", both,
                          "--out", tmp_path / "bench", "--json", "--", "-ngl", "20", "-t", "2", timeout=600)
        assert res.returncode == 0, res.stderr
        bench = json.loads(res.stdout)
        assert [r["endpoint"] for r in bench["rpc"]] == [a["endpoint"], b["endpoint"]]
        assert {r["verified"] for r in bench["rpc"]} == {"registry"}
        assert "--rpc" in bench["modes"][0]["argv"]

        # an rpc-server stopped under a running llama-server: serve fails cleanly and names it
        serve, info = _start(["serve", str(recipe), "--builds-dir", str(builds), "--model", str(smollm2_gguf),
                              "--rpc", both, "--", "-ngl", "20", "-t", "2"], env)
        assert [r["endpoint"] for r in info["rpc"]] == [a["endpoint"], b["endpoint"]]  # type: ignore[attr-defined]
        try:
            proc_b.send_signal(signal.SIGINT)
            assert proc_b.wait(timeout=60) == 130
            assert not _alive(int(b["pid"]))  # type: ignore[call-overload]  # no orphan rpc-server
            assert not list(endpoints.registry_dir().glob(f"*_{b['port']}.json"))
            with pytest.raises(requests.RequestException):
                requests.post(f"{info['url']}/completion", json={"prompt": "Hi", "n_predict": 4}, timeout=120)
            assert serve.wait(timeout=120) == 1
            err = serve.communicate()[1]
            assert f"rpc-server {b['endpoint']} is gone (Connection refused" in err and "Traceback" not in err
        finally:
            if serve.poll() is None:
                serve.send_signal(signal.SIGINT)
                serve.wait(timeout=60)

        # and a stopped one is refused before anything starts
        t0 = time.monotonic()
        res = run_harness("serve", recipe, "--builds-dir", builds, "--model", smollm2_gguf, "--prompt", "Hi",
                          "--rpc", both, timeout=120)
        assert res.returncode == 1 and time.monotonic() - t0 < 30
        assert f"{b['endpoint']}: Connection refused (is rpc-server running there?)" in res.stderr
        assert "refusing --rpc (1 of 2 endpoints)" in res.stderr and "Traceback" not in res.stderr
    finally:
        for proc, info in servers:
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
                assert proc.wait(timeout=60) == 130
            assert not _alive(int(info["pid"]))  # type: ignore[call-overload]
