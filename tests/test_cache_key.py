"""The build identity: the manifest model and the cache key (no llama.cpp build needed)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.build import isa, manifest
from harness.build import run as build
from harness.recipe.load import load_recipe
from harness.source.lock import Lock, LockedItem
from tests import fake_manifest
from tests.conftest import run_harness, write_recipe

CPUINFO = Path(__file__).parent / "data" / "cpuinfo"
GCC13 = isa.detect_compiler("gcc (Ubuntu 13.3.0-6ubuntu2~24.04) 13.3.0\nCopyright (C) 2023 Free Software Foundation, Inc.")
TOOLS = {"cmake": "cmake version 3.31.6", "ninja": "1.13.0", "cc": "cc (Debian 14.2.0-19) 14.2.0",
         "c++": "c++ (Debian 14.2.0-19) 14.2.0"}
PATCH = LockedItem(kind="patch", ref="patches/a.patch", sha256="1" * 64)


def _lock(*items: LockedItem) -> Lock:
    return Lock(recipe="r", upstream={"repo": "https://github.com/ggml-org/llama.cpp", "ref": "master", "sha": "a" * 40},
                stack=items)


def _key(tmp_path: Path, variant: str, cpu: isa.Cpu, the_lock: Lock, backend: str = "cpu",
         tools: dict[str, str] = TOOLS) -> manifest.CacheKey:
    recipe = load_recipe(write_recipe(tmp_path / "repo", "r", f"build: {{backends: [cpu, cuda], cpu: {{variant: {variant}}}, "
                                                                 "cuda: {archs: [89]}}\n"))
    return build.cache_key(the_lock, recipe, backend, tools, isa.plan(recipe.spec.build, GCC13, cpu))


def _cpu(name: str, extra_flag: str | None = None) -> isa.Cpu:
    text = (CPUINFO / name).read_text()
    if extra_flag:
        text = text.replace("flags\t\t: ", f"flags\t\t: {extra_flag} ", 1)
    return isa.parse_cpuinfo(text)


def test_the_key_is_the_same_build_on_any_machine_and_only_that(tmp_path: Path) -> None:
    spr, zen3 = _cpu("sapphirerapids.txt"), _cpu("epyc-zen3.txt")
    one_more = _cpu("sapphirerapids.txt", "avx10_2")
    assert one_more.flags != spr.flags
    native = _key(tmp_path, "native", spr, _lock(PATCH))
    assert _key(tmp_path, "native", spr, _lock(PATCH)) == native  # computed again: the same key
    assert _key(tmp_path, "native", one_more, _lock(PATCH)).digest != native.digest  # one CPU feature more
    assert _key(tmp_path, "native", spr, _lock()).digest != native.digest  # one stack item less
    other_patch = LockedItem(kind="patch", ref="patches/a.patch", sha256="2" * 64)
    assert _key(tmp_path, "native", spr, _lock(other_patch)).digest != native.digest  # the patch edited
    assert _key(tmp_path, "native", spr, _lock(PATCH), tools={**TOOLS, "cc": "cc 15"}).digest != native.digest
    assert native.isa["features"] == sorted(spr.flags)
    # portable and all-variants code does not depend on the CPU that compiled it: keyed by arch only
    portable = _key(tmp_path, "portable", spr, _lock(PATCH))
    assert _key(tmp_path, "portable", zen3, _lock(PATCH)).digest == portable.digest
    assert "features" not in portable.isa and portable.isa["arch"] == "x86_64"
    assert _key(tmp_path, "all-variants", spr, _lock(PATCH)).digest == _key(tmp_path, "all-variants", one_more, _lock(PATCH)).digest
    # no launcher in it: ccache makes a build faster, not another build
    assert not any("LAUNCHER" in k for k in native.cmake)


def test_a_cuda_key_holds_its_architectures_and_cuda_major(tmp_path: Path) -> None:
    spr = _cpu("sapphirerapids.txt")
    k12 = _key(tmp_path, "portable", spr, _lock(), "cuda", {**TOOLS, "nvcc": "12.4.131"})
    assert k12.gpu == {"cuda_archs": "89", "cuda_major": "12"}
    k13 = _key(tmp_path, "portable", spr, _lock(), "cuda", {**TOOLS, "nvcc": "13.0.48"})
    assert k13.gpu["cuda_major"] == "13" and k13.digest != k12.digest
    assert manifest.cuda_major("Cuda compilation tools, release 12.4, V12.4.131") == "12"


@pytest.mark.parametrize("schema, words", [(3, "written by an older harness (manifest schema 3"),
                                           (9, "written by a newer harness"), (None, "not a llama-harness build manifest")])
def test_a_manifest_of_another_schema_is_a_clean_message(tmp_path: Path, schema: int | None, words: str) -> None:
    recipe = write_recipe(tmp_path / "repo", "r", "name: r\nbuild: {backends: [cpu]}\n")
    root = tmp_path / "builds" / "r" / "cpu"
    (root / "bin").mkdir(parents=True)
    old = {"identity": "x", "stamp": {"number": 0, "commit": "0c1e570"}, "files": {}, "patched_commit": "p" * 40,
           **({"schema": schema} if schema is not None else {})}
    (root / "manifest.json").write_text(json.dumps(old))
    for argv in (["pack", recipe], ["verify", recipe], ["rpc-server", recipe]):
        res = run_harness(*argv, "--builds-dir", tmp_path / "builds")
        assert res.returncode == 2, (argv, res.stderr)
        assert words in res.stderr and "harness build" in res.stderr and "Traceback" not in res.stderr, res.stderr
    assert manifest.read_or_none(root) is None  # for a build, it is only something to replace


# the smoke section as the current harness writes it (one target, one type, the narrowed proof's digests)
DECODE = {"ok": True, "decoder": "llama-server", "n_predict": 4,
          "types": {"Q4_0": {"cpu": {"tokens": 4, "token_ids": [20, 20, 95, 95], "probs_checked": True,
                                     "seconds": 0.4, "tokens_per_s": 539.5}}},
          "scope": "full", "kernels": {"files": {"libggml-cpu.so": "c" * 64}, "machine": "m" * 16},
          "features": {"CPU": {"AVX2": "1"}}, "cpu_variant": None, "seconds": 3.45}
SMOKE = {"version": {"llama-server": {"ok": True, "returncode": 0, "version": "version: 1 (0c1e570)"}},
         "decode": DECODE, "rpc": {"ok": True, "skipped": "the build has no rpc-server or no llama-server"}}


def test_the_smoke_section_reads_typed_and_writes_back_the_same_json(tmp_path: Path) -> None:
    from harness.smoke.results import DecodeResult, Skipped

    (tmp_path / "manifest.json").write_text(json.dumps(fake_manifest.data(smoke=SMOKE)))
    read = manifest.read(tmp_path)
    assert read is not None and read.smoke.names() == {"version", "decode", "rpc"}
    assert isinstance(read.smoke.decode, DecodeResult) and isinstance(read.smoke.rpc, Skipped)
    assert read.smoke.decode.kernels is not None and read.smoke.decode.kernels.files == {"libggml-cpu.so": "c" * 64}
    assert read.smoke.decode.types["Q4_0"]["cpu"].token_ids == [20, 20, 95, 95]
    assert read.to_json()["smoke"] == SMOKE  # cpu_variant null kept, note never set left out
    # a decode result written before the narrowed proof (no scope, no kernels) still reads, and narrows nothing
    old = {k: v for k, v in DECODE.items() if k not in ("scope", "kernels")}
    older = manifest.parse(fake_manifest.data(smoke={"decode": old}), tmp_path / "manifest.json")
    assert older.to_json()["smoke"] == {"decode": old} and older.smoke.decode is not None
    from harness.smoke import decode

    assert not decode.narrowed(older.smoke.decode, read.smoke.decode.kernels)
    assert decode.narrowed(read.smoke.decode, read.smoke.decode.kernels)


FOREIGN_SMOKE = {
    "a decode result without its types": {"decode": {k: v for k, v in DECODE.items() if k != "types"}},
    "a decoded type of another shape": {"decode": {**DECODE, "types": {"Q4_0": {"cpu": {"tokens": "four"}}}}},
    "per-target versions as a list": {"version": [{"target": "llama-server", "ok": True}]},
    "a check this harness does not know": {"bogus": {"ok": True}},
    "a skipped check that failed": {"rpc": {"ok": False, "skipped": "why"}},
}


@pytest.mark.parametrize("smoke", FOREIGN_SMOKE.values(), ids=FOREIGN_SMOKE.keys())
def test_a_manifest_whose_smoke_section_is_foreign_is_a_clean_message(tmp_path: Path, smoke: dict[str, object]) -> None:
    root = tmp_path / "builds" / "r" / "cpu"
    root.mkdir(parents=True)
    (root / "manifest.json").write_text(json.dumps({**fake_manifest.data(), "smoke": smoke}))
    with pytest.raises(manifest.ManifestError, match=r"manifest.json: smoke\.") as exc:
        manifest.read(root)
    assert exc.value.hint is not None and "harness build" in exc.value.hint
    assert manifest.read_or_none(root) is None  # for a build, it is only something to replace


def test_verify_of_a_build_whose_decode_result_lost_its_types_is_a_clean_message(tmp_path: Path) -> None:
    recipe = write_recipe(tmp_path / "repo", "r", "name: r\nbuild: {backends: [cpu]}\n")
    root = tmp_path / "builds" / "r" / "cpu"
    (root / "bin").mkdir(parents=True)
    smoke = FOREIGN_SMOKE["a decode result without its types"]
    (root / "manifest.json").write_text(json.dumps({**fake_manifest.data(), "smoke": smoke}))
    res = run_harness("verify", recipe, "--builds-dir", tmp_path / "builds")
    assert res.returncode == 2, res.stderr
    assert "smoke.decode" in res.stderr and "harness build" in res.stderr and "Traceback" not in res.stderr, res.stderr
