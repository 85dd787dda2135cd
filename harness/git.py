"""The one git module: small named functions over the git CLI, run through the runner.

Two environments: ``network_env`` keeps the user's git config (credentials,
``url.<base>.insteadOf`` rewrites, also given as GIT_CONFIG_COUNT/KEY/VALUE) for talking to
remotes; ``local_env`` ignores global and system config so merges, applies and commits
come out the same on every machine.  Both scrub leaked GIT_* variables that would
point git at another repository.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path

from harness import runner
from harness.runner import Result

IDENTITY_NAME = "llama-harness"
IDENTITY_EMAIL = "harness@llama-harness.invalid"

_LEAKY = (
    "GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE", "GIT_OBJECT_DIRECTORY", "GIT_ALTERNATE_OBJECT_DIRECTORIES",
    "GIT_COMMON_DIR", "GIT_NAMESPACE", "GIT_PREFIX", "GIT_AUTHOR_NAME", "GIT_AUTHOR_EMAIL", "GIT_AUTHOR_DATE",
    "GIT_COMMITTER_NAME", "GIT_COMMITTER_EMAIL", "GIT_COMMITTER_DATE", "GIT_QUARANTINE_PATH",
)


def network_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _LEAKY}
    env["GIT_TERMINAL_PROMPT"] = "0"
    env["LC_ALL"] = "C"
    return env


def local_env(date: int | None = None) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in _LEAKY and not k.startswith("GIT_CONFIG")
    }
    env.update(
        GIT_CONFIG_NOSYSTEM="1",
        GIT_CONFIG_GLOBAL=os.devnull,
        GIT_TERMINAL_PROMPT="0",
        LC_ALL="C",
        GIT_AUTHOR_NAME=IDENTITY_NAME,
        GIT_AUTHOR_EMAIL=IDENTITY_EMAIL,
        GIT_COMMITTER_NAME=IDENTITY_NAME,
        GIT_COMMITTER_EMAIL=IDENTITY_EMAIL,
    )
    if date is not None:
        env["GIT_AUTHOR_DATE"] = env["GIT_COMMITTER_DATE"] = f"@{date} +0000"
    return env


def git(
    args: Iterable[str | os.PathLike[str]],
    *,
    repo: Path | None = None,
    env: Mapping[str, str] | None = None,
    check: bool = True,
    input: str | None = None,
    timeout: float | None = None,
) -> Result:
    argv: list[str | os.PathLike[str]] = ["git"]
    if repo is not None:
        argv += ["-C", repo]
    argv += list(args)
    return runner.run(argv, env=env if env is not None else local_env(), check=check, input=input, timeout=timeout)


def ls_remote(url: str, patterns: Iterable[str], *, timeout: float = 60) -> dict[str, str]:
    """Ref name -> SHA for the refs of ``url`` matching ``patterns`` (no objects are fetched)."""
    out = git(["ls-remote", "--", url, *patterns], env=network_env(), timeout=timeout).stdout
    refs: dict[str, str] = {}
    for line in out.splitlines():
        sha, _, name = line.partition("\t")
        if sha and name:
            refs[name] = sha
    return refs


def init_bare(path: Path) -> None:
    git(["init", "--bare", "--quiet", path])


def init(path: Path) -> None:
    git(["init", "--quiet", path])


def config_set(repo: Path, key: str, value: str) -> None:
    git(["config", key, value], repo=repo)


def has_commit(repo: Path, sha: str) -> bool:
    return git(["cat-file", "-e", f"{sha}^{{commit}}"], repo=repo, check=False).returncode == 0


def rev_parse(repo: Path, rev: str) -> str | None:
    res = git(["rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}"], repo=repo, check=False)
    return res.stdout.strip() or None if res.returncode == 0 else None


def update_ref(repo: Path, ref: str, sha: str) -> None:
    git(["update-ref", ref, sha], repo=repo)


def delete_ref(repo: Path, ref: str) -> None:
    git(["update-ref", "-d", ref], repo=repo, check=False)


def merge_base(repo: Path, a: str, b: str) -> str | None:
    res = git(["merge-base", a, b], repo=repo, check=False)
    return res.stdout.strip() or None if res.returncode == 0 else None


def is_ancestor(repo: Path, ancestor: str, descendant: str) -> bool:
    return git(["merge-base", "--is-ancestor", ancestor, descendant], repo=repo, check=False).returncode == 0


def commit_time(repo: Path, sha: str) -> int:
    return int(git(["show", "-s", "--format=%ct", sha], repo=repo).stdout.strip())


def subject(repo: Path, sha: str) -> str:
    return git(["show", "-s", "--format=%s", sha], repo=repo).stdout.strip()


def tree_of(repo: Path, rev: str) -> str:
    return git(["rev-parse", f"{rev}^{{tree}}"], repo=repo).stdout.strip()


def diff(repo: Path, a: str, b: str, *, binary: bool = True) -> str:
    args = ["diff", "--no-color", "--no-ext-diff", "--full-index"]
    if binary:
        args.append("--binary")
    return git([*args, a, b], repo=repo).stdout


def patch_id(repo: Path, patch_text: str) -> str | None:
    out = git(["patch-id", "--stable"], repo=repo, input=patch_text).stdout.split()
    return out[0] if out else None


def patch_ids_of_range(repo: Path, rev_range: str) -> dict[str, str]:
    """patch-id -> commit for every non-merge commit in ``rev_range``."""
    log = git(["log", "-p", "--no-merges", "--no-color", "--full-index", rev_range], repo=repo).stdout
    if not log.strip():
        return {}
    out = git(["patch-id", "--stable"], repo=repo, input=log).stdout
    ids: dict[str, str] = {}
    for line in out.splitlines():
        pid, _, commit = line.partition(" ")
        ids.setdefault(pid, commit)
    return ids


def is_shallow(repo: Path) -> bool:
    return git(["rev-parse", "--is-shallow-repository"], repo=repo).stdout.strip() == "true"


def status_porcelain(repo: Path) -> str:
    return git(["status", "--porcelain"], repo=repo).stdout


def unmerged_files(repo: Path) -> list[str]:
    out = git(["diff", "--name-only", "--diff-filter=U"], repo=repo).stdout
    return [line for line in out.splitlines() if line]


def staged_changes(repo: Path) -> bool:
    return git(["diff", "--cached", "--quiet"], repo=repo, check=False).returncode != 0


def commit(repo: Path, message: str, date: int) -> str:
    git(["commit", "--quiet", "--no-verify", "--allow-empty-message", "-m", message], repo=repo, env=local_env(date))
    return git(["rev-parse", "HEAD"], repo=repo).stdout.strip()


def worktree_add(repo: Path, path: Path, sha: str) -> None:
    git(["worktree", "add", "--quiet", "--force", "--detach", path, sha], repo=repo)


def worktree_remove(repo: Path, path: Path) -> None:
    git(["worktree", "remove", "--force", path], repo=repo, check=False)
    git(["worktree", "prune"], repo=repo, check=False)


def checkout_detached(repo: Path, sha: str) -> None:
    """Move a work tree to ``sha``; only files that differ are rewritten (their mtimes change, no others)."""
    git(["checkout", "--quiet", "--force", "--detach", sha], repo=repo)
    git(["clean", "-fdq"], repo=repo)
