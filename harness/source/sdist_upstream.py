"""A local stand-in for GitHub: the llama.cpp tree vendored in PyPI's llama-cpp-python sdist.

The sdist ships ``vendor/llama.cpp`` with a depth-1 git repository of the real upstream
commit, so a bare repository made from it serves the real commit SHA.  ``redirect_env``
points the real GitHub URL at it with git's own ``url.<base>.insteadOf`` (through
GIT_CONFIG_COUNT/KEY/VALUE), so the harness runs exactly the code path users run.
"""

from __future__ import annotations

import os
import shlex
import sys
import tarfile
from pathlib import Path

from harness import atomic, console, runner
from harness.errors import StepError
from harness.source import git, git_repo

SDIST = "llama-cpp-python==0.3.36"
SDIST_FILE = "llama_cpp_python-0.3.36.tar.gz"
UPSTREAM_URL = "https://github.com/ggml-org/llama.cpp"


def sdist(cache: Path) -> Path:
    """The sdist tarball, downloaded from PyPI once."""
    target = cache / SDIST_FILE
    if not target.exists():
        cache.mkdir(parents=True, exist_ok=True)
        with atomic.temp_dir_beside(target) as tmp:
            # --no-binary names the one package: with ":all:" pip also builds the sdist's build
            # requirements (scikit-build-core, flit_core...) from source to read its metadata,
            # minutes on a machine with no pip cache; this way they come as wheels (11 s here).
            runner.run(
                [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", SDIST.split("==")[0],
                 SDIST, "-d", tmp],
                echo=True,
            )
            found = list(tmp.glob("*.tar.gz"))
            if not found:
                raise StepError(f"pip download {SDIST} produced no sdist")
            os.replace(found[0], target)
    return target


def upstream_repo(cache: Path) -> Path:
    """A bare git repository holding the sdist's llama.cpp commit (shallow, the real SHA)."""
    bare = cache / "llama.cpp-upstream.git"
    if (bare / "HEAD").exists():
        return bare
    tarball = sdist(cache)
    with atomic.lock(cache / "upstream.lock"):
        if (bare / "HEAD").exists():
            return bare
        with atomic.temp_dir_beside(bare) as tmp:
            console.step(f"extracting llama.cpp from {tarball.name}")
            root = _extract(tarball, tmp / "x")
            work = root / "vendor" / "llama.cpp"
            gitdir = root / ".git" / "modules" / "vendor" / "llama.cpp"
            head = git.git(["--git-dir", gitdir, "--work-tree", work, "rev-parse", "HEAD"]).stdout.strip()
            git.git(["clone", "--quiet", "--bare", "--no-local", f"file://{gitdir}", tmp / "bare.git"])
            git_repo.config_set(tmp / "bare.git", "uploadpack.allowAnySHA1InWant", "true")
            git_repo.config_set(tmp / "bare.git", "uploadpack.allowFilter", "true")  # partial clones, as GitHub serves them
            git.update_ref(tmp / "bare.git", "refs/heads/master", head)
            os.replace(tmp / "bare.git", bare)
    return bare


def _extract(tarball: Path, dest: Path) -> Path:
    wanted = ("/vendor/llama.cpp/", "/.git/modules/vendor/llama.cpp/")
    with tarfile.open(tarball) as tar:
        members = [m for m in tar.getmembers() if any(w in m.name + "/" for w in wanted)]
        tar.extractall(dest, members=members, filter="data")
    roots = [p for p in dest.iterdir() if p.is_dir()]
    if len(roots) != 1:
        raise StepError(f"unexpected layout in {tarball}")
    return roots[0]


def redirect_env(mapping: dict[str, Path | str], base: dict[str, str] | None = None) -> dict[str, str]:
    """Environment variables making git fetch ``url`` from ``path`` for each pair of ``mapping``."""
    env = dict(os.environ if base is None else base)
    n = int(env.get("GIT_CONFIG_COUNT", "0") or 0)
    for url, path in mapping.items():
        target = path if isinstance(path, str) else f"file://{Path(path).resolve()}"
        env[f"GIT_CONFIG_KEY_{n}"] = f"url.{target}.insteadOf"
        env[f"GIT_CONFIG_VALUE_{n}"] = url
        n += 1
    env["GIT_CONFIG_COUNT"] = str(n)
    return env


def main(argv: list[str] | None = None) -> int:
    """``python -m harness.source.sdist_upstream CACHE``: print shell exports redirecting GitHub's llama.cpp to the sdist."""
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m harness.source.sdist_upstream",
        description="Make a local llama.cpp upstream from PyPI's llama-cpp-python sdist and print the shell "
                    "exports that redirect GitHub's llama.cpp to it (eval them).")
    parser.add_argument("cache", nargs="?", default=".cache-offline", help="where the sdist and the bare repository go")
    cache = Path(parser.parse_args(argv).cache).resolve()
    bare = upstream_repo(cache)
    env = redirect_env({UPSTREAM_URL: bare}, base={})
    for key, value in env.items():
        print(f"export {key}={shlex.quote(value)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
