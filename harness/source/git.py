"""The one git module's core and its commands on commits, diffs and work trees.

Every command goes through :func:`run`, which runs the ``git`` program through the runner
(``runner.run_bytes``: argv lists, bytes in and out, git stopped when the harness dies) in one of
the environments of :mod:`harness.source.git_env`: echoed like the runner's commands, and a failure
raises :class:`~harness.errors.CommandFailed` (command, exit code, git's own reason first).
Repositories themselves (creating one, its config and refs, what a partial clone holds, the blobs a
range reads) are :mod:`harness.source.git_repo`'s.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from harness import console, runner
from harness.errors import CommandFailed, InputError
from harness.runner import Result
from harness.source.git_env import local_env, network_env


def run(
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


# what git says when the remote itself cannot be used (as opposed to one commit being gone)
UNREACHABLE = ("unable to access", "Could not read from remote", "does not appear to be a git repository",
               "Could not resolve host", "Connection refused", "Authentication failed", "Repository not found")


def indent_reason(text: str) -> str:
    """git's reason (a :func:`failure_tail`) indented under our message, one ``git:`` line each."""
    return "\n".join("  git: " + line for line in text.strip().splitlines()) or "  git: (no reason given)"


def git(
    args: Iterable[str | os.PathLike[str]],
    *,
    repo: Path | None = None,
    network: bool = False,
    check: bool = True,
    input: bytes | None = None,
    timeout: float | None = None,
) -> Result:
    """Any git command, its output as text (for commands no named function here runs)."""
    status, out, err, argv = run(args, repo=repo, network=network, check=check, input=input, timeout=timeout)
    return Result(argv, status, out.decode("utf-8", errors="replace"), err)


def _text(args: Iterable[str | os.PathLike[str]], repo: Path, **kw: Any) -> str:
    return run(args, repo=repo, **kw)[1].decode("utf-8", errors="replace")


# ---- remotes -------------------------------------------------------------------------------


def ls_remote(url: str, patterns: Iterable[str], *, timeout: float = 60) -> dict[str, str]:
    """Ref name -> SHA for the refs of ``url`` matching ``patterns`` (no objects are fetched)."""
    out = run(["ls-remote", "--", url, *patterns], network=True, timeout=timeout)[1].decode("utf-8", "replace")
    refs: dict[str, str] = {}
    for line in out.splitlines():
        sha, _, name = line.partition("\t")
        if sha and name:
            refs[name] = sha
    return refs


def fetch(repo: Path, refspecs: list[str], options: Iterable[str] = (), *, check: bool = True,
          input: bytes | None = None, settings: Iterable[str] = ()) -> tuple[int, str]:
    """``git -c SETTINGS fetch --no-tags --update-shallow OPTIONS origin REFSPECS`` in a mirror: (exit code, stderr)."""
    status, _, err, _ = run(
        [*(a for kv in settings for a in ("-c", kv)),
         "fetch", "--no-tags", "--no-write-fetch-head", "--quiet", "--update-shallow", *options, "origin", *refspecs],
        repo=repo, network=True, check=check, input=input,
    )
    return status, err


# ---- commits and refs -------------------------------------------------------------------


def rev_parse(repo: Path, rev: str) -> str | None:
    """The commit ``rev`` names (tags peeled), or None."""
    status, out, _, _ = run(["rev-parse", "--verify", "--quiet", "--end-of-options", f"{rev}^{{commit}}"],
                             repo=repo, check=False)
    return out.decode().strip() if status == 0 else None


def head(repo: Path) -> str:
    found = rev_parse(repo, "HEAD")
    if found is None:
        raise InputError(f"{repo}: HEAD names no commit")
    return found


def update_ref(repo: Path, ref: str, sha: str) -> None:
    """Point ``ref`` at ``sha`` (git checks the object is here; a missing one is an error, never fetched)."""
    run(["update-ref", "--no-deref", ref, sha], repo=repo)


def is_ancestor(repo: Path, ancestor: str, descendant: str) -> bool:
    """False also when either commit is missing (behind a shallow boundary)."""
    return run(["merge-base", "--is-ancestor", ancestor, descendant], repo=repo, check=False)[0] == 0


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


def is_dirty(repo: Path) -> bool:
    """Changes staged, unstaged or untracked (ignored files aside)?"""
    return bool(run(["status", "--porcelain", "-z", "--untracked-files=all"], repo=repo)[1])


# ---- diffs and patches ----------------------------------------------------------------------


def diff(repo: Path, a: str, b: str | None = None, *, cached: bool = False) -> bytes:
    """``git diff`` with full blob names and binary data: a patch ``git apply`` takes back, as bytes."""
    args = ["diff", "--no-color", "--no-ext-diff", "--full-index", "--binary"]
    if cached:
        args.append("--cached")
    return run([*args, a, *([b] if b else [])], repo=repo)[1]


def changed_files(repo: Path, *, cached: bool = False) -> list[str]:
    out = run(["diff", "--name-only", "-z", *(["--cached"] if cached else [])], repo=repo)[1]
    return [p.decode("utf-8", "surrogateescape") for p in out.split(b"\0") if p]


def patch_id(repo: Path, patch: bytes) -> str | None:
    out = run(["patch-id", "--stable"], repo=repo, input=patch)[1].split()
    return out[0].decode() if out else None


def find_patch_id(repo: Path, rev_range: list[str], paths: Iterable[str], wanted: str) -> str | None:
    """The first non-merge commit of ``rev_range`` whose patch-id is ``wanted``, or None.

    Only commits touching ``paths`` (the change's own files) can carry the same patch-id, so only
    they are read, whole (``--full-diff``); ``git log -p`` streams into ``git patch-id`` through
    pipes, so memory stays bounded whatever the range holds.
    """
    paths = list(paths)
    if not paths:
        return None
    log_argv = ["git", "-C", str(repo), "--literal-pathspecs", "log", "-p", "--no-merges", "--no-color", "--full-index", "--full-diff",
                *rev_range, "--", *paths]

    def match(line: bytes) -> str | None:
        patch, _, commit = line.decode().partition(" ")
        return commit.strip() if patch == wanted else None

    try:
        return runner.piped_search(log_argv, ["git", "-C", str(repo), "patch-id", "--stable"], match, env=local_env())
    except CommandFailed as exc:
        raise CommandFailed(exc.argv, exc.returncode, failure_tail(exc.output_tail)) from None


def apply(repo: Path, patch: bytes, *flags: str) -> tuple[int, str]:
    """``git apply FLAGS`` of ``patch`` (bytes, untouched) in a work tree: (exit code, stderr)."""
    status, _, err, _ = run(["apply", *flags], repo=repo, input=patch, check=False)
    return status, err


def mailsplit(mbox: bytes, into: Path, *, keep_cr: bool = False) -> list[Path]:
    """The mails of an mbox (or one mail), one file each, as ``git am`` splits them (``git mailsplit -b``;
    CRLF becomes LF unless ``keep_cr``)."""
    into.mkdir(parents=True, exist_ok=True)
    src = into / "mbox"
    src.write_bytes(mbox)
    run(["mailsplit", "-b", "-d4", *(["--keep-cr"] if keep_cr else []), "-o" + str(into), "--", str(src)])
    src.unlink()
    return sorted(p for p in into.iterdir() if p.name.isdigit())


def mailinfo(message: Path, work: Path) -> tuple[bytes, bytes]:
    """(header lines, diff) of one mail as ``git am`` reads it (``git mailinfo``; transfer encodings undone)."""
    msg, patch = work / "msg", work / "patch"
    info = run(["mailinfo", "-b", "-u", str(msg), str(patch)], repo=work, input=message.read_bytes())[1]
    return info, patch.read_bytes()


# ---- work trees -----------------------------------------------------------------------------


def reset_hard(repo: Path, rev: str = "HEAD") -> None:
    run(["reset", "--hard", "--quiet", rev], repo=repo)


def add_all(repo: Path) -> None:
    run(["add", "-A"], repo=repo)


def squash_merge(repo: Path, sha: str) -> tuple[int, str]:
    status, out, err, _ = run(["merge", "--squash", "--no-commit", sha], repo=repo, check=False)
    return status, err + out.decode("utf-8", "replace")


def cherry_pick(repo: Path, sha: str) -> tuple[int, str]:
    status, out, err, _ = run(["cherry-pick", "--no-commit", sha], repo=repo, check=False)
    return status, err + out.decode("utf-8", "replace")


def unmerged_files(repo: Path) -> list[str]:
    out = run(["diff", "--name-only", "-z", "--diff-filter=U"], repo=repo)[1]
    return list(dict.fromkeys(p.decode("utf-8", "surrogateescape") for p in out.split(b"\0") if p))


def staged_changes(repo: Path) -> bool:
    return run(["diff", "--cached", "--quiet"], repo=repo, check=False)[0] != 0


def commit(repo: Path, message: str, date: int) -> str:
    """Commit the index as the harness identity at ``date`` (seconds, UTC); returns the new SHA."""
    run(["commit", "--quiet", "--no-verify", "--allow-empty-message", "-m", message], repo=repo, date=date)
    return head(repo)


def worktree_add(repo: Path, path: Path, sha: str) -> None:
    run(["worktree", "add", "--quiet", "--force", "--detach", path, sha], repo=repo)


def worktree_move(repo: Path, src: Path, dst: Path) -> None:
    run(["worktree", "move", src, dst], repo=repo)


def worktree_remove(repo: Path, path: Path) -> None:
    run(["worktree", "remove", "--force", path], repo=repo, check=False)
    run(["worktree", "prune"], repo=repo, check=False)


def checkout_detached(repo: Path, sha: str) -> None:
    """Move a work tree to ``sha``; only files that differ are rewritten (their mtimes change, no others)."""
    run(["checkout", "--quiet", "--force", "--detach", sha], repo=repo)
    run(["clean", "-fdq"], repo=repo)
