"""MTP surgery checked against the real llama-server of the session's llama.cpp build.

A tiny qwen35 model with llama.cpp's real Qwen3.5 tokenizer (tests/models.py) is cut and
re-assembled with ``harness gguf extract-mtp`` / ``graft``; llama-server must load the
results and run MTP speculative decoding (``--spec-type draft-mtp``), and the rigged model,
whose heads always agree, must have every draft accepted.
"""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from harness.cli import main
from tests import hf_models, models

pytestmark = pytest.mark.slow
N_PREDICT = 24


@pytest.fixture(scope="session")
def qwen35_vocab(test_cache: Path) -> Path:
    """llama.cpp's models/ggml-vocab-qwen35.gguf, from the llama-cpp-python sdist of the session."""
    return hf_models.sdist_vocab(test_cache, "ggml-vocab-qwen35.gguf", "HARNESS_TEST_QWEN35_VOCAB")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory, qwen35_vocab: Path) -> dict[str, Path]:
    """full / none / dropped, rigged full / none, and the donors and grafted files made from them."""
    d = tmp_path_factory.mktemp("tiny-qwen35")
    f: dict[str, Path] = {}
    for rigged in (False, True):
        tag = "rigged-" if rigged else ""
        for mtp in ("full", "none") if rigged else ("full", "none", "dropped"):
            f[tag + mtp] = models.write_qwen35(
                d / f"{tag}{mtp}.gguf", vocab=qwen35_vocab, mtp=mtp, rigged=rigged
            )
        f[tag + "donor"], f[tag + "grafted"] = d / f"{tag}donor.gguf", d / f"{tag}grafted.gguf"
        assert main(["gguf", "extract-mtp", str(f[tag + "full"]), "-o", str(f[tag + "donor"])]) == 0
        assert (
            main(
                ["gguf", "graft", str(f[tag + "none"]), str(f[tag + "donor"]), "-o", str(f[tag + "grafted"])]
            )
            == 0
        )
    return f


@dataclass
class Server:
    url: str
    log: Path

    def complete(self, prompt: str) -> dict[str, Any]:
        body = json.dumps({"prompt": prompt, "n_predict": N_PREDICT}).encode()
        request = urllib.request.Request(
            self.url + "/completion", data=body, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=300) as response:
            result: dict[str, Any] = json.load(response)
        return result


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextlib.contextmanager
def llama_server(bin_dir: Path, log: Path, *args: str | Path) -> Iterator[Server]:
    port = _free_port()
    argv = [bin_dir / "llama-server", "--host", "127.0.0.1", "--port", str(port), "-c", "1024", *args]
    with open(log, "w") as out:
        proc = subprocess.Popen([str(a) for a in argv], stdout=out, stderr=subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 180
        while True:
            if proc.poll() is not None:
                pytest.fail(f"llama-server exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
            with (
                contextlib.suppress(urllib.error.URLError, ConnectionError, TimeoutError),
                urllib.request.urlopen(url + "/health", timeout=5) as response,
            ):
                if response.status == 200:
                    break
            if time.monotonic() > deadline:
                pytest.fail(f"llama-server did not come up:\n{log.read_text()[-3000:]}")
            time.sleep(0.5)
        yield Server(url, log)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_grafted_model_runs_mtp_speculative_decoding(llama_bin, tiny, tmp_path):
    with llama_server(
        llama_bin, tmp_path / "server.log", "-m", tiny["grafted"], "--spec-type", "draft-mtp"
    ) as srv:
        result = srv.complete("Hello world")
    assert result["tokens_predicted"] == N_PREDICT
    assert "draft-mtp" in result["generation_settings"]["speculative.types"].split(",")
    assert result["timings"]["draft_n"] > 0
    assert "creating MTP draft context" in (tmp_path / "server.log").read_text()


def test_donor_loads_as_a_draft_model_next_to_a_base_without_heads(llama_bin, tiny, tmp_path):
    log = tmp_path / "server.log"
    with llama_server(llama_bin, log, "-m", tiny["none"], "-md", tiny["donor"]) as srv:
        result = srv.complete("Hello world")
    # not asked for: llama.cpp infers draft-mtp from the donor's blk.4.nextn.eh_proj.weight
    assert "draft-mtp" in result["generation_settings"]["speculative.types"].split(",")
    assert result["timings"]["draft_n"] > 0
    assert "loading draft model" in log.read_text()


def test_rigged_model_accepts_every_draft(llama_bin, tiny, tmp_path):
    runs = {
        "rigged-full": ["-m", tiny["rigged-full"], "--spec-type", "draft-mtp"],
        "rigged-grafted": ["-m", tiny["rigged-grafted"], "--spec-type", "draft-mtp"],
        "rigged-donor": ["-m", tiny["rigged-none"], "-md", tiny["rigged-donor"]],
    }
    for name, args in runs.items():
        with llama_server(llama_bin, tmp_path / f"{name}.log", *args) as srv:
            result = srv.complete("The weather today is")
        timings = result["timings"]
        assert result["content"] == models.RIGGED_TOKEN * N_PREDICT, name
        assert timings["draft_n"] > 0 and timings["draft_n_accepted"] == timings["draft_n"], (name, timings)


def test_a_qwen35_file_with_dropped_heads_does_not_load(llama_bin, tiny, tmp_path):
    """What `harness gguf audit` reports as heads-dropped is indeed fatal for llama.cpp."""
    proc = subprocess.run(
        [
            str(llama_bin / "llama-server"),
            "--host",
            "127.0.0.1",
            "--port",
            str(_free_port()),
            "-m",
            str(tiny["dropped"]),
        ],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode != 0
    assert "tensor 'blk.4.attn_norm.weight' not found" in proc.stdout + proc.stderr


# --- split sets: llama-gguf-split's, and grafts into them ----------------------------------------


def gguf_split(bin_dir: Path, src: Path, prefix: Path, max_tensors: int) -> list[Path]:
    subprocess.run([str(bin_dir / "llama-gguf-split"), "--split", "--split-max-tensors", str(max_tensors), str(src), str(prefix)],
                   check=True, capture_output=True)  # fmt: skip
    return sorted(prefix.parent.glob(f"{prefix.name}-*-of-*.gguf"))


def test_shard_1_of_a_split_mtp_model_audits_ok_and_drafts(llama_bin, tiny, tmp_path, capsys):
    """The case of issue 13: audit on shard 1 said heads-dropped although llama-server drafts with it."""
    shards = gguf_split(llama_bin, tiny["rigged-full"], tmp_path / "rigged", 30)
    assert len(shards) == 3
    for shard in (shards[0], shards[2]):
        assert main(["gguf", "audit", str(shard), "--json"]) == 0
        report = json.loads(capsys.readouterr().out)
        assert report["status"] == "ok" and report["shards"] == [str(s) for s in shards]
    with llama_server(llama_bin, tmp_path / "server.log", "-m", shards[0], "--spec-type", "draft-mtp") as srv:
        result = srv.complete("The weather today is")
    timings = result["timings"]
    assert result["content"] == models.RIGGED_TOKEN * N_PREDICT
    assert timings["draft_n"] > 0 and timings["draft_n_accepted"] == timings["draft_n"]


@pytest.mark.parametrize("split", [[], ["--split-max-tensors", "40"]])
def test_graft_into_a_split_base_loads_and_drafts(llama_bin, tiny, tmp_path, capsys, split):
    """A base split by llama-gguf-split, grafted as a whole file or as a new split set: llama-server
    loads the result (every trunk tensor is there) and the rigged heads' drafts are all accepted."""
    base = gguf_split(llama_bin, tiny["rigged-none"], tmp_path / "base", 25)
    assert len(base) == 3
    out = tmp_path / "grafted.gguf"
    assert main(["gguf", "graft", str(base[0]), str(tiny["rigged-donor"]), "-o", str(out), *split, "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    files = [Path(p) for p in result["files"]]
    assert len(files) == (2 if split else 1) and result["tensors"] == 69
    with llama_server(llama_bin, tmp_path / "server.log", "-m", files[0], "--spec-type", "draft-mtp") as srv:
        completion = srv.complete("The weather today is")
    timings = completion["timings"]
    assert completion["content"] == models.RIGGED_TOKEN * N_PREDICT
    assert timings["draft_n"] > 0 and timings["draft_n_accepted"] == timings["draft_n"]
