"""harness pack RECIPE [--backend B] [--out FILE]: one relocatable archive of a published build."""

from __future__ import annotations

import argparse
from pathlib import Path

from harness import console


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("pack", help="archive a published build (bin, libraries, converter, LICENSE, manifest)")
    p.add_argument("recipe", metavar="RECIPE")
    p.add_argument("--backend", help="which build (default: the recipe's first backend)")
    p.add_argument("--out", type=Path, help="archive path (default: <recipe>-<backend>-<stamp>.tar.zst or .tar.gz here)")
    p.add_argument("--builds-dir", type=Path, help="where builds/<recipe>/<backend> are (default: ./builds)")
    p.add_argument("--json", action="store_true")


def run(args: argparse.Namespace) -> int:
    from harness.build import pack, published
    from harness.errors import InputError
    from harness.recipe.load import load_recipe

    recipe = load_recipe(args.recipe)
    backend = args.backend or recipe.spec.build.backends[0]
    root = published.build_root(args.builds_dir, recipe.name, backend)
    manifest = published.read_manifest(root)
    if manifest is None:
        raise published.not_built(recipe, "manifest.json", backend=backend, builds_dir=args.builds_dir)
    out = args.out or Path(f"{recipe.name}-{backend}-{manifest.stamp.commit.replace('+', '-')}{pack.suffix()}")
    if out.suffix not in (".gz", ".zst") or (out.suffix == ".zst" and not pack.zstd_available()):
        raise InputError(f"--out {out}: name a .tar.gz" + (" or .tar.zst" if pack.zstd_available() else
                                                           " (.tar.zst needs the zstandard module)"), key="--out")
    path, packed = pack.pack(root, out, bundle_cuda=backend == "cuda")
    size = path.stat().st_size
    if args.json:
        console.emit_json({"path": str(path), "size": size, "key": packed.key_digest, "files": len(packed.files),
                           "bundled": packed.bundled})
    else:
        console.out(f"{path}: {size / 1e6:.1f} MB, {len(packed.files)} files, key {packed.key_digest[:12]}"
                    + (f", bundled {', '.join(packed.bundled)}" if packed.bundled else ""))
    return 0
