"""A build whose binaries cannot decode is never published; a crash rebuilds without the extension at fault.

The upstream here is tests/data/fake_llama, a real CMake project whose llama-server executes a
real illegal instruction (ud2, SIGILL) at its first decode unless it was built without the
extension the test picks: the harness runs exactly its build path (lock, mirror, stack, CMake,
Ninja, smoke checks, publish) on it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO, write_recipe

FAKE = Path(__file__).parent / "data" / "fake_llama"
CPUINFO = Path(__file__).parent / "data" / "cpuinfo"


def _upstream(tmp_path: Path) -> tuple[str, str]:
    repo = tmp_path / "fake-llama.git"
    work = tmp_path / "fake-llama"
    shutil.copytree(FAKE, work)
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t", "GIT_AUTHOR_DATE": "@1760000000 +0000", "GIT_COMMITTER_DATE": "@1760000000 +0000"}
    for args in (["init", "-q"], ["add", "."], ["commit", "-qm", "fake llama.cpp"]):
        subprocess.run(["git", "-C", work, *args], check=True, env=env)
    subprocess.run(["git", "clone", "-q", "--bare", work, repo], check=True)
    subprocess.run(["git", "-C", repo, "config", "uploadpack.allowAnySHA1InWant", "true"], check=True)
    sha = subprocess.run(["git", "-C", repo, "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    return f"file://{repo}", sha


def _recipe(tmp_path: Path, crash: str, extra: str = "") -> Path:
    url, sha = _upstream(tmp_path)
    return write_recipe(tmp_path / "recipes", "fake", f"""upstream:
  repo: {url}
  ref: {sha}
build:
  targets: [llama-server]
  cmake_args: {{FAKE_CRASH: {crash}}}
{extra}""")


def _build(recipe: Path, builds: Path, *args: str, cpuinfo: str | None = None,
           env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    e = {**os.environ, **(env or {})}
    if cpuinfo:
        e["HARNESS_CPUINFO"] = str(CPUINFO / cpuinfo)
    return subprocess.run([sys.executable, "-m", "harness", "build", str(recipe), "--builds-dir", str(builds), *args],
                          capture_output=True, text=True, cwd=REPO, env=e, timeout=600)


def _gcc(version: str, tmp_path: Path) -> dict[str, str]:
    """CC/CXX wrappers that report gcc ``version`` and compile with the real gcc."""
    env = {}
    for name, real in (("cc", "gcc"), ("c++", "g++")):
        wrapper = tmp_path / "bin" / name
        wrapper.parent.mkdir(exist_ok=True)
        wrapper.write_text(f'#!/bin/sh\nif [ "$1" = --version ]; then echo "gcc (Test) {version}"; '
                           f'echo "Copyright (C) 2024 Free Software Foundation, Inc."; exit 0; fi\nexec {real} "$@"\n')
        wrapper.chmod(0o755)
        env["CC" if name == "cc" else "CXX"] = str(wrapper)
    return env


def test_a_build_that_crashes_at_decode_is_never_published(tmp_path: Path) -> None:
    recipe = _recipe(tmp_path, "always")
    builds = tmp_path / "builds"
    res = _build(recipe, builds, cpuinfo="epyc-zen3.txt")
    assert res.returncode == 1, res.stderr
    assert "killed by SIGILL (illegal instruction) decoding the F16 smoke model with its weights on the CPU" in res.stderr
    assert "with --no-repack it crashed too" in res.stderr
    assert "rebuilding without avx2" in res.stderr  # the one extension left to try on this CPU
    assert "nothing was published" in res.stderr and "Traceback" not in res.stderr
    assert not (builds / "fake" / "cpu").exists()
    assert not [p for p in (builds / "fake").iterdir() if not p.name.endswith(".lock")] if (builds / "fake").exists() else True


def test_gcc_12_on_an_amx_cpu_builds_without_amx_up_front(tmp_path: Path) -> None:
    recipe = _recipe(tmp_path, "amx")
    builds = tmp_path / "builds"
    res = _build(recipe, builds, "--json", cpuinfo="sapphirerapids.txt", env=_gcc("12.2.0", tmp_path))
    assert res.returncode == 0, res.stderr
    manifest = json.loads((builds / "fake" / "cpu" / "manifest.json").read_text())
    assert "_tile_loadconfig" in manifest["isa"]["disabled"]["amx"]
    assert "-mno-amx-tile" in " ".join(manifest["cmake"]["configure"])
    assert manifest["isa"]["fallbacks"] == [] and manifest["isa"]["ggml_features"] == {"SSE3": "1", "AVX2": "1", "REPACK": "1"}
    assert manifest["smoke"]["decode"]["types"]["F16"]["cpu"]["tokens"] == 4
    assert json.loads(res.stdout)[0]["isa"]["disabled"]["amx"]


def test_a_crash_in_the_repack_path_rebuilds_without_amx_and_remembers(tmp_path: Path) -> None:
    """gcc 13 is trusted with AMX; the fake still faults there: --no-repack tells the path, AMX goes."""
    recipe = _recipe(tmp_path, "amx")
    builds = tmp_path / "builds"
    gcc13 = _gcc("13.3.0", tmp_path)
    res = _build(recipe, builds, cpuinfo="sapphirerapids.txt", env=gcc13)
    assert res.returncode == 0, res.stderr
    assert "with --no-repack it decoded fine" not in res.stderr  # the crash is a warning, then a rebuild
    assert "SIGILL (illegal instruction) decoding F16 (cpu) in the repacked-weight path" in res.stderr and "rebuilding without amx" in res.stderr
    manifest = json.loads((builds / "fake" / "cpu" / "manifest.json").read_text())
    [fallback] = manifest["isa"]["fallbacks"]
    assert fallback["disabled"] == "amx" and fallback["details"]["no_repack_ok"] is True
    assert fallback["details"]["signal"] == "SIGILL (illegal instruction)"
    assert "-mno-amx-tile" in " ".join(manifest["cmake"]["configure"])
    again = _build(recipe, builds, "--json", cpuinfo="sapphirerapids.txt", env=gcc13)
    assert again.returncode == 0 and json.loads(again.stdout)[0]["noop"] is True, again.stderr


def test_strict_refuses_to_rebuild(tmp_path: Path) -> None:
    recipe = _recipe(tmp_path, "avx512")
    builds = tmp_path / "builds"
    res = _build(recipe, builds, "--strict", cpuinfo="sapphirerapids.txt", env=_gcc("12.2.0", tmp_path))
    assert res.returncode == 1
    assert "killed by SIGILL" in res.stderr and "--strict: not rebuilding" in res.stderr
    assert "build.cpu.disable: [avx512]" in res.stderr
    assert not (builds / "fake" / "cpu").exists()
    ok = _build(recipe, builds, cpuinfo="sapphirerapids.txt", env=_gcc("12.2.0", tmp_path))
    assert ok.returncode == 0, ok.stderr
    manifest = json.loads((builds / "fake" / "cpu" / "manifest.json").read_text())
    assert manifest["isa"]["fallbacks"][0]["disabled"] == "avx512" and "-mno-avx512f" in " ".join(manifest["cmake"]["configure"])


def test_smoke_version_alone_skips_the_decode(tmp_path: Path) -> None:
    recipe = _recipe(tmp_path, "always")
    builds = tmp_path / "builds"
    res = _build(recipe, builds, "--smoke", "version")
    assert res.returncode == 0, res.stderr
    assert set(json.loads((builds / "fake" / "cpu" / "manifest.json").read_text())["smoke"]) == {"version"}
    bad = _build(recipe, builds, "--smoke", "version,decodee")
    assert bad.returncode == 2 and "unknown check 'decodee'" in bad.stderr


@pytest.mark.parametrize("recipe_smoke", ["[version]"])
def test_recipe_chooses_its_smoke_checks(tmp_path: Path, recipe_smoke: str) -> None:
    recipe = _recipe(tmp_path, "always", f"  smoke: {recipe_smoke}\n")
    res = _build(recipe, tmp_path / "builds")
    assert res.returncode == 0, res.stderr


def test_a_quantizer_that_exits_0_with_a_zeroed_file_fails_the_decode_smoke(tmp_path: Path) -> None:
    recipe = _recipe(tmp_path, "never").with_suffix(".yaml")
    recipe.write_text(recipe.read_text().replace("targets: [llama-server]", "targets: [llama-server, llama-quantize]"))
    builds = tmp_path / "builds"
    res = _build(recipe, builds)
    assert res.returncode == 1 and "Traceback" not in res.stderr
    assert "llama-quantize exited 0 but wrote an unreadable Q8_0 file" in res.stderr
    assert not (builds / "fake" / "cpu").exists()


def test_nightly_reports_a_failed_smoke_check_and_goes_on(tmp_path: Path) -> None:
    """A zeroed quantize output is `smoke:quantize` failed in the report, not a traceback; the next recipe runs."""
    from harness.smoke import tiny_model

    url, sha = _upstream(tmp_path)
    bad = write_recipe(tmp_path / "recipes", "bad", f"""upstream: {{repo: {url}, ref: {sha}}}
build:
  targets: [llama-server, llama-quantize]
  cmake_args: {{FAKE_CRASH: never, FAKE_QUANTIZE: missing}}
nightly:
  smoke: [version, quantize]
""")
    good = write_recipe(tmp_path / "recipes", "good", f"""upstream: {{repo: {url}, ref: {sha}}}
build:
  targets: [llama-server]
  cmake_args: {{FAKE_CRASH: never}}
nightly:
  smoke: [version, decode]
""")
    model = tiny_model.write(tmp_path / "tiny.gguf")
    builds, report = tmp_path / "builds", tmp_path / "report"
    res = subprocess.run([sys.executable, "-m", "harness", "nightly", str(bad), str(good), "--builds-dir", str(builds),
                          "--report", str(report), "--smoke-model", str(model)],
                         capture_output=True, text=True, cwd=REPO, timeout=600)
    assert res.returncode == 1 and "Traceback" not in res.stderr, res.stderr
    entries = {e["recipe"]: e for e in json.loads((report / "report.json").read_text())["recipes"]}
    assert entries["bad"]["failed_step"] == "smoke:quantize:cpu" and entries["bad"]["adopted"] is False
    assert "not a valid GGUF" in entries["bad"]["error"]
    assert entries["bad"]["smoke"]["quantize:cpu"]["ok"] is False
    assert not (builds / "bad" / "cpu").exists() and not (tmp_path / "recipes" / "bad.lock").exists()
    assert entries["good"]["status"] == "passed" and entries["good"]["smoke"]["decode:cpu"]["ok"]
    assert (builds / "good" / "cpu" / "manifest.json").exists()
    assert "smoke:quantize:cpu" in (report / "report.md").read_text()


# --- the proof is what the decoder counted, not the text (issue 20, part 2) ---

CONTENT_ONLY_500 = "The model produced output that does not match the expected Content-only format"
WORDS = ["▁", *"abcdefghijklmnopqrstuvwxyz", "▁the", "▁a", "▁is", "▁of", "▁and", "▁to", "▁in", "▁Hello",
         "▁world", "▁model", "▁llama", "."]


def _byte_vocab() -> tuple[list[str], list[float], list[int]]:
    """The smoke model's vocabulary until issue 20: byte fallback, 256 byte tokens a random model samples."""
    tokens = ["<unk>", "<s>", "</s>", *[f"<0x{b:02X}>" for b in range(256)], *WORDS]
    return tokens, [0.0] * (3 + 256) + [-float(i + 1) for i in range(len(WORDS))], [2, 3, 3, *[6] * 256, *[1] * len(WORDS)]


def _fake_server(tmp_path: Path, decode: str = "ok", text: str = "strict") -> Path:
    """tests/data/fake_llama's llama-server, compiled as its CMakeLists.txt does, with FAKE_DECODE/FAKE_TEXT."""
    out = tmp_path / f"fake-{decode}-{text}" / "llama-server"
    out.parent.mkdir(parents=True)
    subprocess.run(["cc", "-O1", "-o", out, FAKE / "server.c", "-DBUILD_NUMBER=0", '-DBUILD_COMMIT="t"', "-DCRASH_never=1",
                    "-DHELP_upstream=1", f"-DDECODE_{decode}=1", f"-DTEXT_{text}=1"], check=True)
    return out


def test_the_byte_vocabulary_reproduces_the_http_500_and_the_new_one_decodes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A b10018-era server answers 500 to the old smoke model's invalid UTF-8: "could not decode" for
    a build that decodes.  The new vocabulary gives valid text, and the proof is ids, counts, probabilities."""
    from harness.errors import StepError
    from harness.smoke import decoder, tiny_model

    server = _fake_server(tmp_path)
    new = tiny_model.write(tmp_path / "tiny.gguf")
    monkeypatch.setattr(tiny_model, "vocab", _byte_vocab)
    old = tiny_model.write(tmp_path / "tiny-bytes.gguf")
    with pytest.raises(StepError) as refused:
        decoder.decode(server, old, [], n_predict=4, log_path=tmp_path / "old.log")
    assert "llama-server answered HTTP 500: " in str(refused.value) and CONTENT_ONLY_500 in str(refused.value)
    got = decoder.decode(server, new, [], n_predict=4, log_path=tmp_path / "new.log")
    assert decoder.problem(got, 4) is None
    assert got.tokens == 4 and got.token_ids == (40, 41, 42, 43) and got.logprobs == (-1.25,) * 4


@pytest.mark.parametrize(("mode", "why"), [
    ("nan", "the probabilities of generated tokens [0, 1, 2, 3] are not finite numbers"),
    ("zero", "no tokens were generated (asked for 4)"),
])
def test_a_server_that_answers_200_without_evaluating_is_no_proof(tmp_path: Path, mode: str, why: str) -> None:
    from harness.smoke import decoder, tiny_model

    got = decoder.decode(_fake_server(tmp_path, mode), tiny_model.write(tmp_path / "tiny.gguf"), [], n_predict=4,
                         log_path=tmp_path / "d.log")
    assert (decoder.problem(got, 4) or "").startswith(why)


def test_a_server_that_never_answers_fails(tmp_path: Path) -> None:
    from harness.errors import StepError
    from harness.smoke import decoder, tiny_model

    with pytest.raises(StepError, match="llama-server did not answer"):
        decoder.decode(_fake_server(tmp_path, "hang"), tiny_model.write(tmp_path / "tiny.gguf"), [], n_predict=4,
                       log_path=tmp_path / "d.log", timeout=3)


def test_a_build_whose_server_answers_nan_is_never_published(tmp_path: Path) -> None:
    """Through `harness build`: HTTP 200 with null log-probabilities is a failed decode smoke."""
    recipe = _recipe(tmp_path, "never").with_suffix(".yaml")
    recipe.write_text(recipe.read_text().replace("FAKE_CRASH: never}", "FAKE_CRASH: never, FAKE_DECODE: nan}"))
    builds = tmp_path / "builds"
    res = _build(recipe, builds)
    assert res.returncode == 1, res.stderr
    assert "llama-server did not prove it decoded the F16 smoke model (cpu): the probabilities of generated tokens" in res.stderr
    assert "Traceback" not in res.stderr and not (builds / "fake" / "cpu").exists()


def test_llama_completion_counts_its_sampled_tokens() -> None:
    """llama-completion's perf lines (common/sampling.cpp, src/llama-context.cpp): the sampler's count
    is the proof; older builds print ``sampling time = ... / N runs``; no lines, no proof."""
    from harness.smoke import decoder

    new = ("common_perf_print:    samplers time =       0.10 ms /     4 tokens\n"
           "common_perf_print: prompt eval time =       2.00 ms /     9 tokens (    0.22 ms per token,  4500.00 tokens per second)\n"
           "common_perf_print:        eval time =       3.00 ms /     3 runs   (    1.00 ms per token,  1000.00 tokens per second)\n")
    got = decoder._from_completion(" the a", new, 0.1)
    assert (got.tokens, got.tokens_per_s) == (4, 1000.0) and decoder.problem(got, 4) is None
    old = new.replace("samplers time =       0.10 ms /     4 tokens", "sampling time =       0.10 ms /     4 runs")
    assert decoder._from_completion("", old, 0.1).tokens == 4
    assert decoder._from_completion("", new.splitlines()[2], 0.1).tokens == 4  # eval runs + the last sample
    assert decoder.problem(decoder._from_completion("text", "", 0.1), 4) == "no tokens were generated (asked for 4)"


def test_the_real_build_proves_every_type_by_token_ids(tmp_path: Path, llama_bin: Path) -> None:
    """The session's real llama-server: every quant type decodes 4 tokens, ids and finite probabilities."""
    from harness.smoke import Context, decode

    ctx = Context(bin_dir=llama_bin, backend="cpu", targets=[], stamp="", work=tmp_path / "work")
    result = decode.run(ctx).model_dump()
    assert set(result["types"]) == set(decode.TYPES)
    for qtype, entry in result["types"].items():
        cpu = entry["cpu"]
        assert cpu["tokens"] == 4 and len(cpu["token_ids"]) == 4 and cpu["probs_checked"], (qtype, cpu)


def test_a_rebuild_with_the_same_kernel_bytes_proves_one_type_and_new_bytes_all(tmp_path: Path, llama_bin: Path) -> None:
    """The narrowed proof of a rebuild: one type by the new quantizer and decoder, only while
    libggml*/libllama are the bytes a full proof passed with; a changed byte there: every type."""
    from harness.smoke import Context, decode
    from harness.smoke.results import DecodeResult

    bin_dir = tmp_path / "bin"
    shutil.copytree(llama_bin, bin_dir, symlinks=True)

    def proof(proven: dict[str, Any] | None, name: str) -> dict[str, Any]:
        """The decode check given the previous proof as the manifest's JSON holds it; its result as JSON."""
        ctx = Context(bin_dir=bin_dir, backend="cpu", targets=[], stamp="", work=tmp_path / name,
                      proven=DecodeResult.model_validate(proven) if proven is not None else None)
        return decode.run(ctx).model_dump(mode="json")

    full = proof(None, "full")
    assert full["scope"] == "full" and set(full["types"]) == set(decode.TYPES)
    assert {"libllama.so", "libggml-cpu.so", "libggml-base.so"} <= {n.split(".so")[0] + ".so" for n in full["kernels"]["files"]}
    rebuild = proof(full, "rebuild")
    assert rebuild["scope"] == "rebuild" and set(rebuild["types"]) == {decode.REBUILD_TYPE}
    entry = rebuild["types"][decode.REBUILD_TYPE]["cpu"]
    assert entry["tokens"] == 4 and len(entry["token_ids"]) == 4 and entry["probs_checked"]
    assert rebuild["features"] == full["features"]  # ggml's feature line, from the one decode
    assert proof(rebuild, "again")["scope"] == "rebuild"  # a narrowed proof carries the full one forward
    lib = next(p for p in bin_dir.iterdir() if p.name.startswith("libggml-cpu.so") and not p.is_symlink())
    with open(lib, "ab") as f:  # trailing bytes: the library still loads, but it is other bytes
        f.write(b"\0")
    again = proof(rebuild, "changed")
    assert again["scope"] == "full" and set(again["types"]) == set(decode.TYPES)


@pytest.mark.parametrize("vocab", ["new", "bytes"])
def test_every_token_of_the_smoke_vocabulary_is_valid_utf8_to_llama_cpp(
        tmp_path: Path, llama_bin: Path, monkeypatch: pytest.MonkeyPatch, vocab: str) -> None:
    """llama.cpp's own pieces (the server's ``bytes`` of every token's probability) are valid UTF-8,
    so whatever the random weights sample, a server that parses its text accepts it; the old byte
    vocabulary's 128 high bytes are not."""
    import requests

    from harness.serve.server import running_server
    from harness.smoke import tiny_model

    if vocab == "bytes":
        monkeypatch.setattr(tiny_model, "vocab", _byte_vocab)
    model = tiny_model.write(tmp_path / "tiny.gguf")
    n_vocab = len(tiny_model.vocab()[0])
    with running_server(llama_bin / "llama-server", model, ["-c", "256", "-np", "1"], log_path=tmp_path / "s.log") as srv:
        body = requests.post(f"{srv.url}/completion", timeout=120, json={
            "prompt": "Hello world, the llama model is", "n_predict": 1, "n_probs": n_vocab, "temperature": 0}).json()
    [first] = body["completion_probabilities"]
    pieces = {p["id"]: bytes(p["bytes"]) for p in first["top_logprobs"]}
    assert len(pieces) == n_vocab
    invalid = {i: b for i, b in pieces.items() if not _utf8(b)}
    assert sorted(invalid.values()) == ([] if vocab == "new" else [bytes([b]) for b in range(0x80, 0x100)])


def _utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True
