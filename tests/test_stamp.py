"""The build stamp (harness/build/stamp.py) on trees shaped like upstream's and like a fork's."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.build import stamp
from harness.build.cmake import Stamp
from harness.errors import StepError

TEMPLATE = '''int LLAMA_BUILD_NUMBER = @LLAMA_BUILD_NUMBER@;
char const * LLAMA_COMMIT = "@LLAMA_BUILD_COMMIT@";
char const * LLAMA_COMPILER = "@BUILD_COMPILER@";
'''
TOP = "if (NOT DEFINED LLAMA_BUILD_NUMBER)\n  set(LLAMA_BUILD_NUMBER ${BUILD_NUMBER})\nendif()\n" \
      "if (NOT DEFINED LLAMA_BUILD_COMMIT)\n  set(LLAMA_BUILD_COMMIT ${BUILD_COMMIT})\nendif()\n"
FULL = Stamp(1, "0c1e570+stack.61bf57a5")


def _tree(tmp_path: Path, template: str = TEMPLATE, top: str = TOP) -> Path:
    src = tmp_path / "src"
    (src / "common").mkdir(parents=True)
    (src / "common" / "build-info.cpp.in").write_text(template)
    (src / "CMakeLists.txt").write_text(top)
    return src


def _configure(bdir: Path, configured: Stamp) -> Path:
    """What CMake's configure_file makes of the template."""
    path = bdir / "common" / "build-info.cpp"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(TEMPLATE.replace("@LLAMA_BUILD_NUMBER@", str(configured.number))
                    .replace("@LLAMA_BUILD_COMMIT@", configured.commit).replace("@BUILD_COMPILER@", "GNU 12.2.0"))
    return path


def test_cmake_gets_a_stamp_patch_edits_do_not_change_and_build_info_the_full_one(tmp_path: Path) -> None:
    src = _tree(tmp_path)
    assert stamp.support(src) is None
    configured = stamp.for_cmake(FULL, src)
    assert configured == Stamp(1, "0c1e570+stack")
    assert stamp.for_cmake(Stamp(1, "0c1e570+stack.ffffffff"), src) == configured  # a patch edit: same configure
    assert stamp.for_cmake(Stamp(0, "0c1e570"), src) == Stamp(0, "0c1e570")  # nothing applied: nothing to split

    bdir = tmp_path / "build"
    path = _configure(bdir, configured)
    assert not stamp.applied(bdir, FULL)
    assert stamp.apply(bdir, FULL, configured)
    text = path.read_text()
    assert 'LLAMA_COMMIT = "0c1e570+stack.61bf57a5";' in text and "LLAMA_BUILD_NUMBER = 1;" in text
    assert 'LLAMA_COMPILER = "GNU 12.2.0";' in text and stamp.applied(bdir, FULL)
    mtime = path.stat().st_mtime_ns
    assert stamp.apply(bdir, FULL, configured) and path.stat().st_mtime_ns == mtime  # unchanged: ninja has nothing to do
    _configure(bdir, configured)  # ninja ran CMake again on its own and wrote the short stamp back
    assert not stamp.applied(bdir, FULL) and stamp.apply(bdir, FULL, configured) and stamp.applied(bdir, FULL)


def test_a_fork_whose_build_info_differs_gets_the_whole_stamp_and_a_reason(tmp_path: Path) -> None:
    computes = _tree(tmp_path / "a", top="set(LLAMA_BUILD_COMMIT ${BUILD_COMMIT})\n")
    why = stamp.support(computes)
    assert why and "does not take LLAMA_BUILD_COMMIT" in why
    assert stamp.for_cmake(FULL, computes) == FULL  # the old way: everything through CMake
    other = _tree(tmp_path / "b", template='const char * BUILD = "@BUILD_COMMIT@";\n')
    assert "@LLAMA_BUILD_COMMIT@" in (stamp.support(other) or "") and stamp.for_cmake(FULL, other) == FULL
    assert "no common/build-info.cpp.in" in (stamp.support(tmp_path / "empty") or "")
    bdir = tmp_path / "build"
    (bdir / "common").mkdir(parents=True)
    (bdir / "common" / "build-info.cpp").write_text('const char * BUILD = "x";\n')
    assert not stamp.apply(bdir, FULL, Stamp(1, "0c1e570+stack"))  # not upstream's shape: left alone


def test_a_new_commit_alone_does_not_re_run_cmake_but_a_changed_cmakelists_does(tmp_path: Path) -> None:
    """Real git, CMake and ninja: llama.cpp's common/ makes .git/index a configure dependency."""
    import subprocess

    from harness.build import cmake

    src = _tree(tmp_path)
    (src / "CMakeLists.txt").write_text("cmake_minimum_required(VERSION 3.14)\nproject(x NONE)\n" + TOP
                                        + 'set_property(DIRECTORY APPEND PROPERTY CMAKE_CONFIGURE_DEPENDS "${PROJECT_SOURCE_DIR}/.git/index")\n')
    git = ["git", "-C", str(src), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run(["git", "init", "-q", str(src)], check=True)
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-qm", "base"], check=True)
    bdir = tmp_path / "build"
    ninja = cmake.program("ninja")
    subprocess.run([cmake.program("cmake"), "-S", str(src), "-B", str(bdir), "-G", "Ninja", f"-DCMAKE_MAKE_PROGRAM={ninja}"],
                   check=True, capture_output=True)  # fmt: skip

    def plan() -> str:
        return subprocess.run([ninja, "-C", str(bdir), "-n"], check=True, capture_output=True, text=True).stdout

    assert "no work to do" in plan() and not stamp.settle_index(src, bdir)
    (src / "patched.txt").write_text("a patch edit\n")  # the harness's next patched commit
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-qm", "patch"], check=True)
    assert "Re-running CMake" in plan()  # ninja's own answer without the harness
    assert stamp.settle_index(src, bdir) and "no work to do" in plan()
    assert subprocess.run([*git, "status", "--porcelain"], capture_output=True, text=True).stdout == ""

    (src / "CMakeLists.txt").write_text((src / "CMakeLists.txt").read_text() + "# a patch to the build\n")
    subprocess.run([*git, "commit", "-qam", "cmake"], check=True)
    stamp.settle_index(src, bdir)
    assert "Re-running CMake" in plan()  # a real configure input still re-runs it

    fork = _tree(tmp_path / "fork", top="set(LLAMA_BUILD_COMMIT ${BUILD_COMMIT})\n")
    (fork / ".git").mkdir()
    (fork / ".git" / "index").write_text("")
    assert not stamp.settle_index(fork, bdir)  # computes its commit at configure: the index keeps its role


def test_on_linux_the_digest_goes_over_a_placeholder_after_the_link(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """build-info.cpp gets the same text on every patch edit; ``finish`` writes the digest into the
    copies being published, and refuses when no file holds the placeholder."""
    monkeypatch.setattr(stamp.sys, "platform", "linux")
    configured = stamp.for_cmake(FULL, _tree(tmp_path))
    assert stamp.late(FULL, configured) and not stamp.late(Stamp(0, "0c1e570"), Stamp(0, "0c1e570"))
    ph = stamp.placeholder(FULL)
    assert len(ph) == len(FULL.commit) and ph.startswith(b"0c1e570+stack.") and ph[-8:] == stamp.PAD[:8]
    bdir = tmp_path / "build"
    path = _configure(bdir, configured)
    assert stamp.apply(bdir, FULL, configured, late_ok=True) and stamp.applied(bdir, FULL, configured, late_ok=True)
    assert 'LLAMA_COMMIT = "0c1e570+stack.\\376\\375\\374\\373\\372\\371\\370\\367";' in path.read_text()
    text = path.read_text()
    edited = Stamp(1, "0c1e570+stack.ffffffff")  # another patch edit: the same text, nothing to rebuild
    assert stamp.apply(bdir, edited, configured, late_ok=True) and path.read_text() == text
    monkeypatch.setattr(stamp.sys, "platform", "darwin")  # signed binaries: the stamp is compiled in
    assert not stamp.late(FULL, configured)

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "llama-server").write_bytes(b"\x7fELF...\x00" + ph + b"\x00rest")
    (bin_dir / "libggml-cpu.so").write_bytes(ph)  # ggml never links common/: not read
    (bin_dir / "libllama-common.so").symlink_to("llama-server")
    assert stamp.finish(bin_dir, FULL) == ["llama-server"]
    assert (bin_dir / "llama-server").read_bytes() == b"\x7fELF...\x000c1e570+stack.61bf57a5\x00rest"
    with pytest.raises(StepError, match="placeholder is in none of the built files"):
        stamp.finish(bin_dir, FULL)
