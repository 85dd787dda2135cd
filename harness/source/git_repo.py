"""Repositories: creating one, its config and refs, and what it holds, asked without fetching anything
(commits and blobs present or missing in a partial clone, walkable history, merge bases, the blobs a
tree or a range of commits reads).  Commands run through :func:`harness.source.git.run`."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from harness.errors import CommandFailed
from harness.source import git


def init_bare(path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True)
    git.run(["init", "--quiet", "--bare", str(path)])


def init(path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True)
    git.run(["init", "--quiet", str(path)])


def config_set(repo: Path, key: str, value: str) -> None:
    """Set ``key`` in the repository's own config (``.git/config``)."""
    git.run(["config", "--local", "--replace-all", key, value], repo=repo)


def config_get(repo: Path, key: str) -> str | None:
    status, out, _, _ = git.run(["config", "--get", key], repo=repo, check=False)
    return out.decode().strip() if status == 0 else None


def has_commit(repo: Path, sha: str) -> bool:
    """Is commit ``sha`` here?  Never fetched to find out: in a partial clone, git's own lazy fetch of a
    missing commit from a shallow server (the sdist's llama.cpp) recurses without end (git 2.39), so this
    asks ``rev-list --missing=print``, which turns lazy fetching off."""
    status, out, _, _ = git.run(["rev-list", "--missing=print", "--no-walk", sha], repo=repo, check=False)
    return status == 0 and not any(line.startswith(b"?") for line in out.splitlines())


def missing_objects(repo: Path, names: Iterable[str]) -> list[str]:
    """Those of ``names`` (full or abbreviated object names) the repository cannot find."""
    names = list(dict.fromkeys(names))
    if not names:
        return []
    out = git.run(["cat-file", "--batch-check"], repo=repo, input="".join(f"{n}\n" for n in names).encode())[1]
    return [line.split()[0] for line in out.decode().splitlines() if line.endswith((" missing", " ambiguous"))]


def has_ref(repo: Path, ref: str, sha: str) -> bool:
    """Does ``ref`` exist, point at ``sha``, and is that commit here?  (Nothing is fetched to find out.)"""
    status, out, _, _ = git.run(["rev-parse", "--verify", "--quiet", "--end-of-options", ref], repo=repo, check=False)
    return status == 0 and out.decode().strip() == sha and has_commit(repo, sha)


def refs_under(repo: Path, prefix: str) -> dict[str, str]:
    """Ref name -> SHA of every ref under ``prefix`` (e.g. ``refs/harness/pin/``)."""
    out = git.git(["for-each-ref", "--format=%(objectname) %(refname)", prefix], repo=repo).stdout
    return {name: sha for sha, _, name in (line.partition(" ") for line in out.splitlines()) if name}


def delete_ref(repo: Path, ref: str) -> None:
    """Remove ``ref`` if it exists (a broken or dangling ref too)."""
    git.run(["update-ref", "--no-deref", "-d", ref], repo=repo, check=False)


def merge_base(repo: Path, a: str, b: str) -> str | None:
    """One merge base of ``a`` and ``b`` (git's pick), or None when they share no history."""
    found = merge_bases(repo, a, b)
    return found[0] if found else None


def merge_bases(repo: Path, a: str, b: str) -> list[str]:
    """Every merge base of ``a`` and ``b`` (``merge-base --all``: more than one in a criss-cross)."""
    status, out, err, argv = git.run(["merge-base", "--all", a, b], repo=repo, check=False)
    if status == 1 and not err.strip():
        return []
    if status != 0:
        raise CommandFailed(["git", "-C", str(repo), *argv[1:]], status, git.failure_tail(err, out))
    return out.decode().split()


def tree_of(repo: Path, rev: str) -> str:
    return git.git(["rev-parse", "--verify", "--end-of-options", f"{rev}^{{tree}}"], repo=repo).stdout.strip()


def missing_blobs(repo: Path, sha: str) -> list[str]:
    """The blobs of ``sha``'s tree a partial clone does not have yet (nothing is fetched to find them)."""
    out = git.git(["rev-list", "--objects", "--missing=print", "--no-walk", sha], repo=repo).stdout
    return [line[1:].strip() for line in out.splitlines() if line.startswith("?")]


def blobs_touched(repo: Path, rev_range: list[str], paths: Iterable[str]) -> set[str]:
    """Every blob on either side of the changes the non-merge commits of ``rev_range`` make to ``paths``
    (whole commits: what ``log -p --full-diff`` will read).  Trees only: nothing is fetched."""
    paths = list(paths)
    if not paths:
        return set()
    out = git.git(["--literal-pathspecs", "log", "--no-merges", "--root", "--raw", "--no-abbrev", "--no-renames", "--full-diff",
                   "--format=", *rev_range, "--", *paths], repo=repo).stdout
    blobs: set[str] = set()
    for line in out.splitlines():
        if line.startswith(":"):
            fields = line[1:].split(None, 4)
            blobs.update(b for b in fields[2:4] if b.strip("0"))
    return blobs


def blobs_at(repo: Path, commit: str, paths: list[str]) -> set[str]:
    """The blobs ``paths`` name in ``commit``'s tree (trees only: nothing is fetched)."""
    if not paths:
        return set()
    out = git.run(["--literal-pathspecs", "ls-tree", "-r", "-z", "--full-tree", commit, "--", *paths], repo=repo)[1]
    found = set()
    for entry in out.split(b"\0"):
        meta = entry.split(b"\t", 1)[0].split()
        if len(meta) == 3 and meta[1] == b"blob":
            found.add(meta[2].decode())
    return found


def changed_paths(repo: Path, a: str, b: str) -> list[str]:
    """Paths that differ between two commits (trees only)."""
    out = git.run(["diff-tree", "-r", "-z", "--name-only", "--no-renames", a, b], repo=repo)[1]
    return [p.decode("utf-8", "surrogateescape") for p in out.split(b"\0") if p]


def history_complete(repo: Path, shas: Iterable[str]) -> bool:
    """Can every commit behind ``shas`` be walked (parents present or marked shallow)?"""
    shas = list(shas)
    if not shas:
        return True
    # --missing=print: no lazy fetch (see has_commit); git 2.39 fails on a missing commit, later gits print it
    status, out, _, _ = git.run(["rev-list", "--missing=print", *shas], repo=repo, check=False)
    return status == 0 and not any(line.startswith(b"?") for line in out.splitlines())
