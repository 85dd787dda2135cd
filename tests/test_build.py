"""The real CPU build of the real llama.cpp tree (made once per session by `harness build`)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from harness import atomic
from tests import session_build
from tests.conftest import REPO

pytestmark = pytest.mark.slow


def _harness(test_cache: Path, *args: str, timeout: float = 3600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "harness", *args], cwd=REPO, env=session_build.env(test_cache),
        capture_output=True, text=True, timeout=timeout,
    )


def test_binaries_run_and_carry_the_stamp(llama_build: Path) -> None:
    manifest = json.loads((llama_build / "manifest.json").read_text())
    stamp = manifest["stamp"]["commit"]
    assert stamp.startswith("0c1e570+stack.") and manifest["stamp"]["number"] == 1
    out = subprocess.run([llama_build / "bin" / "llama-server", "--version"], capture_output=True, text=True, check=True)
    assert f"(build 1, commit {stamp})" in out.stdout + out.stderr
    assert "unknown" not in out.stdout + out.stderr
    usage = subprocess.run([llama_build / "bin" / "llama-quantize", "--help"], capture_output=True, text=True)
    assert "built by llama-harness from a patched tree" in usage.stdout + usage.stderr
    versions = manifest["smoke"]["version"]
    assert all(r["ok"] for r in versions.values()) and set(versions) == {*session_build.TARGETS, session_build.RPC_TARGET}
    # the converter of the same tree is published beside the binaries
    assert (llama_build / "convert_hf_to_gguf.py").exists() and (llama_build / "gguf-py" / "gguf").is_dir()


def test_manifest_describes_every_file(llama_build: Path) -> None:
    manifest = json.loads((llama_build / "manifest.json").read_text())
    files = manifest["files"]
    assert "bin/llama-server" in files and any(f.startswith("bin/libllama.so") for f in files)
    for rel, digest in files.items():
        path = llama_build / rel
        if digest.startswith("-> "):
            assert path.is_symlink() and str(path.readlink()) == digest[3:]
        else:
            assert atomic.sha256_file(path) == digest, rel
    assert manifest["lock"]["upstream"]["sha"] == "0c1e57098bba43ac29e6e3b677cdceebdd22334f"
    assert manifest["stack"][0]["status"] == "applied" and len(manifest["stack"][0]["pin"]) == 64
    configure = manifest["cmake"]["configure"]
    # CMake gets a stamp that survives patch edits; build-info.cpp (what --version prints) the full one
    assert "-DLLAMA_BUILD_COMMIT=0c1e570+stack" in configure
    assert "-DCMAKE_INSTALL_RPATH=$ORIGIN" in configure
    assert set(manifest["toolchain"]) >= {"cmake", "ninja", "cc", "c++"}
    assert "-DGGML_RPC=ON" in configure and manifest["rpc"] == {"server": session_build.RPC_TARGET, "protocol": "7.0.0"}
    assert manifest["timings"]["build_s"] >= 0


def test_published_build_decoded_every_kernel_family_first(llama_build: Path) -> None:
    """The decode smoke ran the published binaries on a model of each type before publishing."""
    manifest = json.loads((llama_build / "manifest.json").read_text())
    decode = manifest["smoke"]["decode"]
    assert decode["decoder"] == "llama-server"
    # a rebuild with the kernel libraries of a full proof proves one type (tests/test_decode_smoke.py)
    full = {"F16", "Q8_0", "Q4_0", "Q4_1", "Q4_K_S", "IQ4_XS"}
    assert set(decode["types"]) == ({"Q4_0"} if decode.get("scope") == "rebuild" else full)
    assert all(d["cpu"]["tokens"] == 4 for d in decode["types"].values())
    isa = manifest["isa"]
    assert isa["variant"] == "native" and isa["cmake"]["GGML_NATIVE"] == "ON"
    features = isa["ggml_features"]  # ggml's own system_info line, from the running server
    assert features.get("AVX2") == ("1" if "avx2" in isa["enabled"] else None)
    assert features.get("AMX_INT8") is None or "amx" in isa["enabled"]


def test_binaries_run_from_anywhere(llama_build: Path, tmp_path: Path) -> None:
    import shutil

    moved = tmp_path / "elsewhere"
    shutil.copytree(llama_build / "bin", moved, symlinks=True)
    out = subprocess.run([moved / "llama-server", "--version"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    readelf = subprocess.run(["readelf", "-d", moved / "llama-server"], capture_output=True, text=True).stdout
    assert "[$ORIGIN]" in readelf


def test_second_build_is_a_noop(llama_build: Path, test_cache: Path) -> None:
    paths = session_build.layout(test_cache)
    log_before = (llama_build / "manifest.json").stat().st_mtime_ns
    res = _harness(test_cache, "build", str(paths["recipe"]), "--builds-dir", str(paths["builds"]), "--json")
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)[0]["noop"] is True
    assert "+ " not in res.stderr  # no command ran: no cmake, no ninja, no git
    assert (llama_build / "manifest.json").stat().st_mtime_ns == log_before


def test_patch_change_rebuilds_little_and_a_broken_one_publishes_nothing(llama_build: Path, test_cache: Path) -> None:
    paths = session_build.layout(test_cache)
    recipe, patch = paths["recipe"], paths["patch"]
    original = patch.read_text()
    build = ["build", str(recipe), "--builds-dir", str(paths["builds"]), "--json"]
    # a test cache shared by two checkouts: the build directory was configured with the other one's
    # cmake and ninja (their paths are in the configure command), so this build would configure again
    bdir = Path(json.loads((llama_build / "manifest.json").read_text())["cmake"]["build"][2])
    if str(Path(sys.executable).parent) not in (bdir / "harness-configure.json").read_text():
        assert _harness(test_cache, *build, "--force").returncode == 0
    try:
        patch.write_text(original.replace("built by llama-harness from a patched tree", "built by llama-harness, patch v2"))
        res = _harness(test_cache, "lock", str(recipe))
        assert res.returncode == 0, res.stderr
        res = _harness(test_cache, *build)
        assert res.returncode == 0, res.stderr
        manifest = json.loads((llama_build / "manifest.json").read_text())
        # what plain ninja runs for quantize.cpp (3 steps at 0c1e570) when the stamp goes in after the link
        # (Linux); elsewhere also build-info.cpp and the relinks of what links it (14); never CMake,
        # src/llama.cpp or ggml.c (harness/build/stamp.py; the exact set: tests/test_build_incremental.py)
        assert manifest["ninja_steps"] <= (3 if manifest["stamp"].get("late") else 14), manifest["ninja_steps"]
        log = Path(manifest["log"]).read_text()
        assert "Building CXX object tools/quantize/" in log and "llama.dir/llama.cpp.o" not in log
        version = subprocess.run([llama_build / "bin" / "llama-server", "--version"], capture_output=True, text=True)
        assert manifest["stamp"]["commit"] in version.stdout + version.stderr
        usage = subprocess.run([llama_build / "bin" / "llama-quantize", "--help"], capture_output=True, text=True)
        assert "built by llama-harness, patch v2" in usage.stdout

        before = (llama_build / "manifest.json").read_bytes()
        patch.write_text(original.replace('from a patched tree)\\n\\n");', 'from a patched tree)\\n\\n") SYNTAX ERROR;'))
        assert _harness(test_cache, "lock", str(recipe)).returncode == 0
        res = _harness(test_cache, *build)
        assert res.returncode == 1
        assert "command failed with exit code" in res.stderr and "quantize.cpp" in res.stderr
        assert "full log: " in res.stderr
        assert (llama_build / "manifest.json").read_bytes() == before
        usage = subprocess.run([llama_build / "bin" / "llama-quantize", "--help"], capture_output=True, text=True)
        assert "built by llama-harness, patch v2" in usage.stdout
    finally:
        patch.write_text(original)
        _harness(test_cache, "lock", str(recipe))
        restored = _harness(test_cache, *build)
    assert restored.returncode == 0, restored.stderr


def test_verify_rebuilds_identically(llama_build: Path, test_cache: Path) -> None:
    # --ccache keeps CI inside its time budget: compiles are replayed from the cache (same
    # relative command lines), links and publishing happen again at another path.  The
    # strict form (no ccache, every file compiled again) is the default for users.
    paths = session_build.layout(test_cache)
    res = _harness(test_cache, "verify", str(paths["recipe"]), "--builds-dir", str(paths["builds"]), "--json", "--ccache",
                   timeout=5400)
    verdict = json.loads(res.stdout)
    assert res.returncode == 0, (verdict, res.stderr[-2000:])
    assert verdict["identical"] is True and verdict["compared"] > 10
