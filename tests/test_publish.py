"""Publishing copies only the tree: links that lead out of it are refused, never followed."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.build import publish


def _layout(tmp_path: Path) -> tuple[Path, Path, Path]:
    bdir, src, outside = tmp_path / "build", tmp_path / "src", tmp_path / "outside"
    (bdir / "bin").mkdir(parents=True)
    (bdir / "bin" / "llama-server").write_bytes(b"\x7fELF server")
    (bdir / "bin" / "libllama.so.0").write_bytes(b"\x7fELF lib")
    (bdir / "bin" / "libllama.so").symlink_to("libllama.so.0")
    (src / "conversion").mkdir(parents=True)
    (src / "conversion" / "__init__.py").write_text("# converter\n")
    (src / "convert_hf_to_gguf.py").write_text("print('convert')\n")
    (src / "gguf-py" / "gguf").mkdir(parents=True)
    (src / "gguf-py" / "gguf" / "__init__.py").write_text("")
    outside.mkdir()
    (outside / "secret").write_text("not ours\n")
    return bdir, src, outside


def test_collect_copies_the_tree(tmp_path: Path) -> None:
    bdir, src, _ = _layout(tmp_path)
    (src / "conversion" / "alias.py").symlink_to("__init__.py")  # a link inside the tree: copied as the file
    dest = tmp_path / "dest"
    publish.collect(bdir, src, ["llama-server"], dest)
    assert (dest / "bin" / "libllama.so").readlink() == Path("libllama.so.0")
    assert (dest / "conversion" / "alias.py").read_text() == "# converter\n"
    assert (dest / "convert_hf_to_gguf.py").is_file()


@pytest.mark.parametrize("case", ["converter-file", "conversion-dir", "link-inside-conversion", "linked-dir-with-link",
                                  "gguf-py", "target", "library", "dangling"])
def test_collect_refuses_links_out_of_the_tree(tmp_path: Path, case: str) -> None:
    bdir, src, outside = _layout(tmp_path)
    if case == "converter-file":
        (src / "convert_hf_to_gguf.py").unlink()
        (src / "convert_hf_to_gguf.py").symlink_to(outside / "secret")
    elif case == "conversion-dir":
        (src / "conversion" / "__init__.py").unlink()
        (src / "conversion").rmdir()
        (src / "conversion").symlink_to(outside)
    elif case == "link-inside-conversion":
        (src / "conversion" / "leak.py").symlink_to(outside / "secret")
    elif case == "linked-dir-with-link":  # conversion/sub -> ../gguf-py (inside), which holds a link out
        (src / "conversion" / "sub").symlink_to("../gguf-py")
        (src / "gguf-py" / "leak").symlink_to(outside)
    elif case == "gguf-py":
        (src / "gguf-py" / "gguf" / "leak").symlink_to("/etc")
    elif case == "target":
        (bdir / "bin" / "llama-server").unlink()
        (bdir / "bin" / "llama-server").symlink_to(outside / "secret")
    elif case == "library":
        (bdir / "bin" / "libevil.so").symlink_to(outside / "secret")
    elif case == "dangling":
        (src / "conversion" / "gone.py").symlink_to(src / "nowhere")
    dest = tmp_path / "dest"
    with pytest.raises(publish.OutsideTree, match="refusing to publish"):
        publish.collect(bdir, src, ["llama-server"], dest)
    assert not any(p.is_file() and p.read_text(errors="replace") == "not ours\n" for p in dest.rglob("*"))
