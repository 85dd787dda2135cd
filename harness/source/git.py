"""The one git module: small named functions on the git command line.

Every command goes through ``_run``, which runs the ``git`` program through the runner
(``runner.run_bytes``: argv lists, bytes in and out, git stopped when the harness dies): echoed
like the runner's commands, and a failure raises :class:`~harness.errors.CommandFailed`
(command, exit code, git's own reason first).

Two environments, each built as a fresh dict from an allow-list (``os.environ`` is never
changed): every ``GIT_*`` variable is dropped unless it says how to reach a remote or how to
trace (``runner.GIT_ALLOWED``, which every child gets), so a harness started from a git hook (``GIT_DIR``, ``GIT_INDEX_FILE``,
``GIT_SHALLOW_FILE``...) cannot point git at another repository.  The network one keeps the
user's git config (credentials, ``url.<base>.insteadOf`` rewrites, also given as
GIT_CONFIG_COUNT/KEY/VALUE) for talking to remotes; the local one ignores global and system
config but the settings for reaching remotes, and fixes the identity (and, when committing, the
date) so merges, applies and commits come out the same on every machine.
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from harness import console, runner
from harness.errors import CommandFailed, InputError
from harness.runner import Result

IDENTITY_NAME = "llama-harness"
IDENTITY_EMAIL = "harness@llama-harness.invalid"

_USER_CONFIG = re.compile(r"^GIT_CONFIG_(COUNT|KEY_\d+|VALUE_\d+|GLOBAL|SYSTEM|NOSYSTEM|PARAMETERS)$")
# the user's settings a git process needs to reach a remote: also given to local commands, because a
# partial clone fetches missing blobs lazily (from the remote's real URL) while merging or diffing
_REMOTE_KEYS = r"^(url\..*|http\..*|credential\..*|core\.sshcommand|protocol\..*|core\.askpass)$"


def network_env() -> dict[str, str]:
    """The environment for git commands that talk to remotes: the user's config and git's
    credential variables kept (a private remote may need them), other secrets left out."""
    env = {k: v for k, v in os.environ.items() if runner.git_variable_allowed(k)}
    return {**env, "GIT_TERMINAL_PROMPT": "0", "LC_ALL": "C"}


def remote_settings() -> tuple[tuple[str, str], ...]:
    """(key, value) of the user's git settings for reaching remotes (``url.<base>.insteadOf``, http,
    credentials), from every config level git reads, ``GIT_CONFIG_COUNT/KEY/VALUE`` included."""
    key = tuple(sorted((k, v) for k, v in os.environ.items()
                       if k.startswith("GIT_CONFIG") or k in ("HOME", "XDG_CONFIG_HOME", "PATH")))
    return _remote_settings(key)


@functools.lru_cache(maxsize=8)
def _remote_settings(_key: tuple[tuple[str, str], ...]) -> tuple[tuple[str, str], ...]:
    status, out, _, _ = _run_raw(["config", "--null", "--get-regexp", _REMOTE_KEYS], env=network_env())
    if status != 0:
        return ()
    pairs = []
    for entry in out.decode("utf-8", "replace").split("\0"):
        key, _, value = entry.partition("\n")
        if key:
            pairs.append((key, value))
    return tuple(pairs)


def local_env(date: int | None = None) -> dict[str, str]:
    """The environment for local git commands: no user config but the settings for reaching remotes
    (a partial clone's lazy fetch needs them; nothing that changes a merge, a diff or a commit), no
    secrets at all, a fixed identity (and date)."""
    remote = remote_settings()
    env = {k: v for k, v in os.environ.items() if runner.git_variable_allowed(k) and not _USER_CONFIG.match(k) and not runner.is_secret(k)}
    env.update({
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_CONFIG_GLOBAL": os.devnull,
        "GIT_CONFIG_COUNT": str(len(remote)),
        **{f"GIT_CONFIG_KEY_{n}": k for n, (k, _) in enumerate(remote)},
        **{f"GIT_CONFIG_VALUE_{n}": v for n, (_, v) in enumerate(remote)},
        "GIT_TERMINAL_PROMPT": "0",
        # no opportunistic index refresh (`git status` rewrites .git/index otherwise, and llama.cpp's
        # CMake takes a newer index for a reason to configure again: tests/test_build_incremental.py)
        "GIT_OPTIONAL_LOCKS": "0",
        "LC_ALL": "C",
        "GIT_AUTHOR_NAME": IDENTITY_NAME,
        "GIT_AUTHOR_EMAIL": IDENTITY_EMAIL,
        "GIT_COMMITTER_NAME": IDENTITY_NAME,
        "GIT_COMMITTER_EMAIL": IDENTITY_EMAIL,
    })
    if date is not None:
        env["GIT_AUTHOR_DATE"] = env["GIT_COMMITTER_DATE"] = f"@{date} +0000"
    return env


def _run_raw(args: list[str], *, env: dict[str, str], repo: Path | None = None) -> tuple[int, bytes, str, list[str]]:
    """git with exactly ``env``: for reading config before our environments exist."""
    argv = ["git", *(["-C", str(repo)] if repo else []), *args]
    try:
        status, out, err = runner.run_bytes(argv, env=env)
    except InputError:
        raise InputError("git not found on PATH (needed for every source operation)") from None
    return status, out, err, argv


def _run(
    args: Iterable[str | os.PathLike[str]],
    *,
    repo: Path | None = None,
    network: bool = False,
    date: int | None = None,
    input: bytes | None = None,
    check: bool = True,
    timeout: float | None = None,
) -> tuple[int, bytes, str, list[str]]:
    """Run ``git ARGS`` (in ``repo``): (exit code, stdout bytes, stderr, argv).  Raises CommandFailed if ``check``."""
    argv = ["git", *(["-C", str(repo)] if repo is not None else []), *(os.fspath(a) for a in args)]
    if console.verbose():
        console.echo_command(argv)
    try:
        status, out, err = runner.run_bytes(argv, env=network_env() if network else local_env(date),
                                            input=input, timeout=timeout)
    except InputError:
        raise InputError("git not found on PATH (needed for every source operation)") from None
    if status < 0 or (check and status != 0):  # killed by a signal: never an answer, even where failing is one
        raise CommandFailed(argv, status, failure_tail(err, out))
    return status, out, err, argv


TAIL_LINES = 20
TAIL_LINE_BYTES = 400


def failure_tail(err: str, out: bytes | str = b"") -> str:
    """What a failed git said, for errors and reports: git's own reason (stderr) first, then the end of
    stdout, each line and the whole capped (a diff of minified CSS must not bury the reason)."""
    def capped(text: str, lines: int) -> list[str]:
        kept = [line.rstrip() for line in text.rstrip().splitlines() if line.strip()][-lines:]
        return [line if len(line) <= TAIL_LINE_BYTES else f"{line[:TAIL_LINE_BYTES]} ... ({len(line) - TAIL_LINE_BYTES} more characters)"
                for line in kept]

    out_text = out.decode("utf-8", "replace") if isinstance(out, bytes) else out
    reason = capped(err, TAIL_LINES)
    rest = capped(out_text, max(TAIL_LINES - len(reason), 5))
    return "\n".join([*reason, *(["(stdout:)", *rest] if rest else [])])


def git(
    args: Iterable[str | os.PathLike[str]],
    *,
    repo: Path | None = None,
    network: bool = False,
    check: bool = True,
    input: bytes | None = None,
    timeout: float | None = None,
) -> Result:
    """Any git command (text output), for the few callers outside this module (``harness.source.sdist_upstream``)."""
    status, out, err, argv = _run(args, repo=repo, network=network, check=check, input=input, timeout=timeout)
    return Result(argv, status, out.decode("utf-8", errors="replace"), err)


def _text(args: Iterable[str | os.PathLike[str]], repo: Path, **kw: Any) -> str:
    return _run(args, repo=repo, **kw)[1].decode("utf-8", errors="replace")


# ---- remotes -------------------------------------------------------------------------------


def ls_remote(url: str, patterns: Iterable[str], *, timeout: float = 60) -> dict[str, str]:
    """Ref name -> SHA for the refs of ``url`` matching ``patterns`` (no objects are fetched)."""
    out = _run(["ls-remote", "--", url, *patterns], network=True, timeout=timeout)[1].decode("utf-8", "replace")
    refs: dict[str, str] = {}
    for line in out.splitlines():
        sha, _, name = line.partition("\t")
        if sha and name:
            refs[name] = sha
    return refs


def fetch(repo: Path, refspecs: list[str], options: Iterable[str] = (), *, check: bool = True,
          input: bytes | None = None, settings: Iterable[str] = ()) -> tuple[int, str]:
    """``git -c SETTINGS fetch --no-tags --update-shallow OPTIONS origin REFSPECS`` in a mirror: (exit code, stderr)."""
    status, _, err, _ = _run(
        [*(a for kv in settings for a in ("-c", kv)),
         "fetch", "--no-tags", "--no-write-fetch-head", "--quiet", "--update-shallow", *options, "origin", *refspecs],
        repo=repo, network=True, check=check, input=input,
    )
    return status, err


# ---- repositories, refs and objects ---------------------------------------------------------


def init_bare(path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True)
    _run(["init", "--quiet", "--bare", str(path)])


def init(path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True)
    _run(["init", "--quiet", str(path)])


def config_set(repo: Path, key: str, value: str) -> None:
    """Set ``key`` in the repository's own config (``.git/config``)."""
    _run(["config", "--local", "--replace-all", key, value], repo=repo)


def config_get(repo: Path, key: str) -> str | None:
    status, out, _, _ = _run(["config", "--get", key], repo=repo, check=False)
    return out.decode().strip() if status == 0 else None


def has_commit(repo: Path, sha: str) -> bool:
    """Is commit ``sha`` here?  Never fetched to find out: in a partial clone, git's own lazy fetch of a
    missing commit from a shallow server (the sdist's llama.cpp) recurses without end (git 2.39), so this
    asks ``rev-list --missing=print``, which turns lazy fetching off."""
    status, out, _, _ = _run(["rev-list", "--missing=print", "--no-walk", sha], repo=repo, check=False)
    return status == 0 and not any(line.startswith(b"?") for line in out.splitlines())


def missing_objects(repo: Path, names: Iterable[str]) -> list[str]:
    """Those of ``names`` (full or abbreviated object names) the repository cannot find."""
    names = list(dict.fromkeys(names))
    if not names:
        return []
    out = _run(["cat-file", "--batch-check"], repo=repo, input="".join(f"{n}\n" for n in names).encode())[1]
    return [line.split()[0] for line in out.decode().splitlines() if line.endswith((" missing", " ambiguous"))]


def rev_parse(repo: Path, rev: str) -> str | None:
    """The commit ``rev`` names (tags peeled), or None."""
    status, out, _, _ = _run(["rev-parse", "--verify", "--quiet", "--end-of-options", f"{rev}^{{commit}}"],
                             repo=repo, check=False)
    return out.decode().strip() if status == 0 else None


def head(repo: Path) -> str:
    found = rev_parse(repo, "HEAD")
    if found is None:
        raise InputError(f"{repo}: HEAD names no commit")
    return found


def has_ref(repo: Path, ref: str, sha: str) -> bool:
    """Does ``ref`` exist, point at ``sha``, and is that commit here?  (Nothing is fetched to find out.)"""
    status, out, _, _ = _run(["rev-parse", "--verify", "--quiet", "--end-of-options", ref], repo=repo, check=False)
    return status == 0 and out.decode().strip() == sha and has_commit(repo, sha)


def refs_under(repo: Path, prefix: str) -> dict[str, str]:
    """Ref name -> SHA of every ref under ``prefix`` (e.g. ``refs/harness/pin/``)."""
    out = _text(["for-each-ref", "--format=%(objectname) %(refname)", prefix], repo)
    return {name: sha for sha, _, name in (line.partition(" ") for line in out.splitlines()) if name}


def update_ref(repo: Path, ref: str, sha: str) -> None:
    """Point ``ref`` at ``sha`` (git checks the object is here; a missing one is an error, never fetched)."""
    _run(["update-ref", "--no-deref", ref, sha], repo=repo)


def delete_ref(repo: Path, ref: str) -> None:
    """Remove ``ref`` if it exists (a broken or dangling ref too)."""
    _run(["update-ref", "--no-deref", "-d", ref], repo=repo, check=False)


def merge_base(repo: Path, a: str, b: str) -> str | None:
    """One merge base of ``a`` and ``b`` (git's pick), or None when they share no history."""
    found = merge_bases(repo, a, b)
    return found[0] if found else None


def merge_bases(repo: Path, a: str, b: str) -> list[str]:
    """Every merge base of ``a`` and ``b`` (``merge-base --all``: more than one in a criss-cross)."""
    status, out, err, argv = _run(["merge-base", "--all", a, b], repo=repo, check=False)
    if status == 1 and not err.strip():
        return []
    if status != 0:
        raise CommandFailed(["git", "-C", str(repo), *argv[1:]], status, failure_tail(err, out))
    return out.decode().split()


def is_ancestor(repo: Path, ancestor: str, descendant: str) -> bool:
    """False also when either commit is missing (behind a shallow boundary)."""
    return _run(["merge-base", "--is-ancestor", ancestor, descendant], repo=repo, check=False)[0] == 0


def _commit_object(repo: Path, sha: str) -> tuple[list[str], str]:
    """The header lines and the message of commit ``sha``, read from the commit object alone
    (``git show`` may read trees and blobs, which a tree borrowing from a partial mirror lacks)."""
    text = _text(["cat-file", "commit", sha], repo)
    header, _, message = text.partition("\n\n")
    return header.splitlines(), message


def commit_time(repo: Path, sha: str) -> int:
    committer = next(line for line in _commit_object(repo, sha)[0] if line.startswith("committer "))
    return int(committer.rsplit(" ", 2)[1])


def subject(repo: Path, sha: str) -> str:
    """The first line of ``sha``'s message."""
    return _commit_object(repo, sha)[1].split("\n", 1)[0].strip()


def tree_of(repo: Path, rev: str) -> str:
    return _text(["rev-parse", "--verify", "--end-of-options", f"{rev}^{{tree}}"], repo).strip()


def missing_blobs(repo: Path, sha: str) -> list[str]:
    """The blobs of ``sha``'s tree a partial clone does not have yet (nothing is fetched to find them)."""
    out = _text(["rev-list", "--objects", "--missing=print", "--no-walk", sha], repo)
    return [line[1:].strip() for line in out.splitlines() if line.startswith("?")]


def blobs_touched(repo: Path, rev_range: list[str], paths: Iterable[str]) -> set[str]:
    """Every blob on either side of the changes the non-merge commits of ``rev_range`` make to ``paths``
    (whole commits: what ``log -p --full-diff`` will read).  Trees only: nothing is fetched."""
    paths = list(paths)
    if not paths:
        return set()
    out = _text(["--literal-pathspecs", "log", "--no-merges", "--root", "--raw", "--no-abbrev", "--no-renames", "--full-diff", "--format=",
                 *rev_range, "--", *paths], repo)
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
    out = _run(["--literal-pathspecs", "ls-tree", "-r", "-z", "--full-tree", commit, "--", *paths], repo=repo)[1]
    found = set()
    for entry in out.split(b"\0"):
        meta = entry.split(b"\t", 1)[0].split()
        if len(meta) == 3 and meta[1] == b"blob":
            found.add(meta[2].decode())
    return found


def changed_paths(repo: Path, a: str, b: str) -> list[str]:
    """Paths that differ between two commits (trees only)."""
    out = _run(["diff-tree", "-r", "-z", "--name-only", "--no-renames", a, b], repo=repo)[1]
    return [p.decode("utf-8", "surrogateescape") for p in out.split(b"\0") if p]


def history_complete(repo: Path, shas: Iterable[str]) -> bool:
    """Can every commit behind ``shas`` be walked (parents present or marked shallow)?"""
    shas = list(shas)
    if not shas:
        return True
    # --missing=print: no lazy fetch (see has_commit); git 2.39 fails on a missing commit, later gits print it
    status, out, _, _ = _run(["rev-list", "--missing=print", *shas], repo=repo, check=False)
    return status == 0 and not any(line.startswith(b"?") for line in out.splitlines())


def is_dirty(repo: Path) -> bool:
    """Changes staged, unstaged or untracked (ignored files aside)?"""
    return bool(_run(["status", "--porcelain", "-z", "--untracked-files=all"], repo=repo)[1])


# ---- diffs and patches ----------------------------------------------------------------------


def diff(repo: Path, a: str, b: str | None = None, *, cached: bool = False) -> bytes:
    """``git diff`` with full blob names and binary data: a patch ``git apply`` takes back, as bytes."""
    args = ["diff", "--no-color", "--no-ext-diff", "--full-index", "--binary"]
    if cached:
        args.append("--cached")
    return _run([*args, a, *([b] if b else [])], repo=repo)[1]


def changed_files(repo: Path, *, cached: bool = False) -> list[str]:
    out = _run(["diff", "--name-only", "-z", *(["--cached"] if cached else [])], repo=repo)[1]
    return [p.decode("utf-8", "surrogateescape") for p in out.split(b"\0") if p]


def patch_id(repo: Path, patch: bytes) -> str | None:
    out = _run(["patch-id", "--stable"], repo=repo, input=patch)[1].split()
    return out[0].decode() if out else None


def find_patch_id(repo: Path, rev_range: list[str], paths: Iterable[str], wanted: str) -> str | None:
    """The first non-merge commit of ``rev_range`` whose patch-id is ``wanted``, or None.

    Only commits touching ``paths`` (the change's own files) can carry the same patch-id, so only
    they are read, whole (``--full-diff``); ``git log -p`` streams into ``git patch-id`` through
    pipes, so memory stays bounded whatever the range holds.
    """
    import subprocess

    paths = list(paths)
    if not paths:
        return None
    env = local_env()
    log_argv = ["git", "-C", str(repo), "--literal-pathspecs", "log", "-p", "--no-merges", "--no-color", "--full-index", "--full-diff",
                *rev_range, "--", *paths]
    if console.verbose():
        console.echo_command(log_argv)
    with subprocess.Popen(log_argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL) as log, \
            subprocess.Popen(["git", "-C", str(repo), "patch-id", "--stable"], env=env, stdin=log.stdout,
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL) as pid:
        assert log.stdout is not None and pid.stdout is not None and log.stderr is not None
        log.stdout.close()  # patch-id holds it now
        found = None
        for line in pid.stdout:
            patch, _, commit = line.decode().partition(" ")
            if patch == wanted:
                found = commit.strip()
                break
        if found is not None:
            log.kill()
            pid.kill()
            return found
        err = log.stderr.read().decode("utf-8", "replace")
    if log.returncode != 0:
        raise CommandFailed(log_argv, log.returncode, failure_tail(err))
    return None


def apply(repo: Path, patch: bytes, *flags: str) -> tuple[int, str]:
    """``git apply FLAGS`` of ``patch`` (bytes, untouched) in a work tree: (exit code, stderr)."""
    status, _, err, _ = _run(["apply", *flags], repo=repo, input=patch, check=False)
    return status, err


def mailsplit(mbox: bytes, into: Path, *, keep_cr: bool = False) -> list[Path]:
    """The mails of an mbox (or one mail), one file each, as ``git am`` splits them (``git mailsplit -b``;
    CRLF becomes LF unless ``keep_cr``)."""
    into.mkdir(parents=True, exist_ok=True)
    src = into / "mbox"
    src.write_bytes(mbox)
    _run(["mailsplit", "-b", "-d4", *(["--keep-cr"] if keep_cr else []), "-o" + str(into), "--", str(src)])
    src.unlink()
    return sorted(p for p in into.iterdir() if p.name.isdigit())


def mailinfo(message: Path, work: Path) -> tuple[bytes, bytes]:
    """(header lines, diff) of one mail as ``git am`` reads it (``git mailinfo``; transfer encodings undone)."""
    msg, patch = work / "msg", work / "patch"
    info = _run(["mailinfo", "-b", "-u", str(msg), str(patch)], repo=work, input=message.read_bytes())[1]
    return info, patch.read_bytes()


# ---- work trees -----------------------------------------------------------------------------


def reset_hard(repo: Path, rev: str = "HEAD") -> None:
    _run(["reset", "--hard", "--quiet", rev], repo=repo)


def add_all(repo: Path) -> None:
    _run(["add", "-A"], repo=repo)


def squash_merge(repo: Path, sha: str) -> tuple[int, str]:
    status, out, err, _ = _run(["merge", "--squash", "--no-commit", sha], repo=repo, check=False)
    return status, err + out.decode("utf-8", "replace")


def cherry_pick(repo: Path, sha: str) -> tuple[int, str]:
    status, out, err, _ = _run(["cherry-pick", "--no-commit", sha], repo=repo, check=False)
    return status, err + out.decode("utf-8", "replace")


def unmerged_files(repo: Path) -> list[str]:
    out = _run(["diff", "--name-only", "-z", "--diff-filter=U"], repo=repo)[1]
    return list(dict.fromkeys(p.decode("utf-8", "surrogateescape") for p in out.split(b"\0") if p))


def staged_changes(repo: Path) -> bool:
    return _run(["diff", "--cached", "--quiet"], repo=repo, check=False)[0] != 0


def commit(repo: Path, message: str, date: int) -> str:
    """Commit the index as the harness identity at ``date`` (seconds, UTC); returns the new SHA."""
    _run(["commit", "--quiet", "--no-verify", "--allow-empty-message", "-m", message], repo=repo, date=date)
    return head(repo)


def worktree_add(repo: Path, path: Path, sha: str) -> None:
    _run(["worktree", "add", "--quiet", "--force", "--detach", path, sha], repo=repo)


def worktree_move(repo: Path, src: Path, dst: Path) -> None:
    _run(["worktree", "move", src, dst], repo=repo)


def worktree_remove(repo: Path, path: Path) -> None:
    _run(["worktree", "remove", "--force", path], repo=repo, check=False)
    _run(["worktree", "prune"], repo=repo, check=False)


def checkout_detached(repo: Path, sha: str) -> None:
    """Move a work tree to ``sha``; only files that differ are rewritten (their mtimes change, no others)."""
    _run(["checkout", "--quiet", "--force", "--detach", sha], repo=repo)
    _run(["clean", "-fdq"], repo=repo)
