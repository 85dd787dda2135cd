"""A one-file patch edit rebuilds what plain ninja rebuilds for the same edit and nothing the stamp
reaches (on Linux the stamp's digest is written over a placeholder in the published copies:
harness/build/stamp.py), by ninja's own account: the entries its ``.ninja_log`` gained.

The real llama.cpp tree in a build cache of its own (``<test cache>/incremental``, kept between
sessions, so a later session pays an incremental build): the session build's cache is shared with
other checkouts and must not be reconfigured by this one.  Compiles come from ccache (the same
command lines as the session build's), so the first build here is mostly links.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness import atomic
from harness.build import cmake
from harness.build import stamp as stamp_mod
from harness.build.cmake import Stamp
from tests import session_build
from tests.conftest import REPO

pytestmark = pytest.mark.slow

MARK = "built by llama-harness from a patched tree"
ARCHIVE = "common/libllama-common-base.a"  # build-info.cpp.o, the stamp every tool prints, lives here


def _harness(env: dict[str, str], *args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "harness", *map(str, args)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=3600)


def ninja_log(bdir: Path) -> dict[str, tuple[str, ...]]:
    """Each output's last entry in ``.ninja_log`` (start, end, mtime, command hash): an output
    whose entry changed was rebuilt (this survives ninja recompacting its log)."""
    entries: dict[str, tuple[str, ...]] = {}
    for line in (bdir / ".ninja_log").read_text().splitlines():
        fields = line.split("\t")
        if len(fields) == 5 and not line.startswith("#"):
            out = fields[3].removeprefix(f"{bdir}/")  # CMake names some outputs by their absolute path
            entries[out] = (fields[0], fields[1], fields[2], fields[4])
    return entries


def rebuilt(before: dict[str, tuple[str, ...]], after: dict[str, tuple[str, ...]]) -> set[str]:
    return {out for out, entry in after.items() if before.get(out) != entry}


def stamp_reach(bdir: Path) -> set[str]:
    """What a new stamp rebuilds, from ninja's graph: build-info.cpp.o, the archive, everything
    linking the archive, and the library symlinks of those (``ninja -t query``)."""
    ninja = cmake.program("ninja")

    def outputs(node: str) -> set[str]:
        text = subprocess.run([ninja, "-C", str(bdir), "-t", "query", node], capture_output=True, text=True,
                              check=True).stdout
        return {line.strip() for line in text.split("  outputs:", 1)[1].splitlines() if line.strip()}

    linked = outputs(ARCHIVE)
    links = {out for lib in linked for out in outputs(lib) if lib.startswith(out)}  # libx.so.0 -> libx.so.0.5.0
    return {"common/CMakeFiles/llama-common-base.dir/build-info.cpp.o", ARCHIVE, *linked, *links}


@pytest.fixture(scope="module")
def private(test_cache: Path) -> Iterator[dict[str, object]]:
    """The session recipe in a repository and build cache of its own, built (``--smoke version``:
    the decode proof is not what this measures) with the recipe's patch as shipped."""
    root = test_cache / "incremental"
    with atomic.lock(root / "test.lock", timeout=5400):
        repo = root / "repo"
        if not (repo / ".git").exists():
            repo.mkdir(parents=True, exist_ok=True)
            subprocess.run(["git", "init", "-q", str(repo)], check=True)
        recipe = repo / "recipes" / "session.yaml"
        patch = repo / "patches" / "quantize-print-harness.patch"
        recipe.parent.mkdir(exist_ok=True)
        patch.parent.mkdir(exist_ok=True)
        recipe.write_text(session_build.recipe_text())
        shutil.copyfile(REPO / "patches" / patch.name, patch)
        env = session_build.env(test_cache)
        env["HARNESS_CACHE"] = str(root / "harness-cache")
        build = ["build", recipe, "--builds-dir", root / "builds", "--smoke", "version", "--json"]
        # --force: configured with this checkout's cmake and ninja (another checkout's venv left other
        # paths in the build directory, and the edited build would configure again for that alone)
        res = _harness(env, *build, "--force")
        assert res.returncode == 0, res.stderr[-3000:]
        yield {"env": env, "recipe": recipe, "patch": patch, "build": build,
               "published": Path(json.loads(res.stdout)[0]["path"])}


def test_a_patch_edit_rebuilds_what_ninja_does_and_the_stamp_still_reaches_every_tool(private: dict[str, object]) -> None:
    env, recipe, patch, build = private["env"], private["recipe"], private["patch"], private["build"]
    assert isinstance(env, dict) and isinstance(recipe, Path) and isinstance(patch, Path) and isinstance(build, list)
    published = private["published"]
    assert isinstance(published, Path)
    manifest = json.loads((published / "manifest.json").read_text())
    bdir = Path(manifest["cmake"]["build"][2])
    tree = bdir.parent / "src"
    original = patch.read_text()
    assert MARK in original
    try:
        before = ninja_log(bdir)
        patch.write_text(original.replace(MARK, "built by llama-harness, patch v2"))
        assert _harness(env, "lock", recipe).returncode == 0
        res = _harness(env, *build)
        assert res.returncode == 0, res.stderr[-3000:]
        harness = rebuilt(before, ninja_log(bdir))

        # plain ninja, the same kind of edit to the same file of the same tree
        quantize = tree / "tools" / "quantize" / "quantize.cpp"
        text = quantize.read_text()
        assert "patch v2" in text
        ninja_cmd = manifest["cmake"]["build"]
        before = ninja_log(bdir)
        quantize.write_text(text.replace("patch v2", "patch v3"))
        try:
            subprocess.run(ninja_cmd, check=True, capture_output=True)
        finally:
            quantize.write_text(text)
        plain = rebuilt(before, ninja_log(bdir))
        subprocess.run(ninja_cmd, check=True, capture_output=True)  # the build directory matches the tree again

        reach = stamp_reach(bdir)
        account = f"harness rebuilt {sorted(harness)}; plain ninja {sorted(plain)}"
        assert "tools/quantize/CMakeFiles/llama-quantize-impl.dir/quantize.cpp.o" in plain & harness, account
        assert "build.ninja" not in harness, f"CMake ran again: {account}"
        assert not {o for o in harness if o.startswith(("ggml/", "bin/libggml"))}, f"ggml rebuilt: {account}"
        assert "src/CMakeFiles/llama.dir/llama.cpp.o" not in harness, account
        assert not harness - plain, f"beyond plain ninja: {sorted(harness - plain)}"
        assert not harness & reach - plain, f"the stamp relinked: {sorted(harness & reach)}"
        assert "common/libllama-common-base.a" in reach and "bin/llama-server" in reach  # what it would have cost

        # the stamp stays honest: every tool prints the new one, and the edit is in
        stamp = json.loads((published / "manifest.json").read_text())["stamp"]
        assert stamp["commit"] != manifest["stamp"]["commit"] and stamp["commit"].startswith("0c1e570+stack.")
        for tool in ("llama-server", "llama-imatrix", "llama-perplexity"):  # common's --version
            out = subprocess.run([published / "bin" / tool, "--version"], capture_output=True, text=True)
            assert f"(build 1, commit {stamp['commit']})" in out.stdout + out.stderr, tool
        # the stamp went in after the link: the build directory's files hold the placeholder, no published one does
        assert stamp_mod.placeholder(Stamp(1, stamp["commit"])) in (bdir / "bin" / "llama-server").read_bytes()
        assert not [f.name for f in (published / "bin").iterdir() if f.is_file() and not f.is_symlink()
                    and stamp_mod.placeholder(Stamp(1, stamp["commit"])) in f.read_bytes()]
        usage = subprocess.run([published / "bin" / "llama-quantize", "--help"], capture_output=True, text=True)
        said = [line for line in (usage.stdout + usage.stderr).splitlines() if "built by" in line]
        assert said == ["  (this llama-quantize was built by llama-harness, patch v2)"], said
    finally:
        patch.write_text(original)
        _harness(env, "lock", recipe)
        restored = _harness(env, *build)
    assert restored.returncode == 0, restored.stderr[-3000:]
