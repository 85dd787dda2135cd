"""The range's ends: ``--good`` and ``--bad`` (or the locked base and the upstream ref's tip) resolved to
full SHAs pinned in the upstream mirror, and the first-parent chain of commits between them.

Mirrors hold the whole commit graph behind a pin (harness/source/mirror.py), so the range is listed
locally and each candidate is pinned as an ancestor of the bad end (``Mirror.pin_ancestor``):
a step fetches no commit, only the blobs its candidate's checkout and merges read.
"""

from __future__ import annotations

import re
from pathlib import Path

from harness.errors import InputError, StepError
from harness.recipe.load import Recipe
from harness.source import git, git_repo, remote_refs
from harness.source.lock import Lock
from harness.source.mirror import PIN, Mirror, Want

HEX = re.compile(r"^[0-9a-f]{4,39}$")
SHA40 = re.compile(r"^[0-9a-f]{40}$")
REF_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._/+-]*$")  # a branch or tag name, refs/... too


def range_commits(repo: Path, good: str, bad: str) -> list[str]:
    """The first-parent chain from ``good`` (excluded) to ``bad`` (included), oldest first."""
    out = git.git(["rev-list", "--first-parent", "--ancestry-path", f"{good}..{bad}"], repo=repo).stdout
    return list(reversed(out.split()))


def ends(recipe: Recipe, the_lock: Lock, good: str | None, bad: str | None) -> tuple[Mirror, str, str]:
    """(upstream mirror, good, bad) as full SHAs, each pinned in the mirror with its history (fetched only
    when the mirror lacks it); InputError when good is not an ancestor of bad."""
    mirror = Mirror.for_url(the_lock.upstream_repo)
    ref = None if len(the_lock.upstream_ref) == 40 else the_lock.upstream_ref
    upstream_ref = f"refs/heads/{ref}" if ref and not ref.startswith("refs/") else ref
    with mirror.locked():
        if bad is not None:
            bad_sha = _resolve(recipe, mirror, bad, "--bad")
        else:
            bad_sha = remote_refs.upstream_tip(recipe)
            _pin(mirror, Want(bad_sha, upstream_ref, f"upstream {the_lock.upstream_ref} (now)"))
        if good is not None:  # after bad: an abbreviated --good is looked up in bad's history
            good_sha = _resolve(recipe, mirror, good, "--good")
        else:
            good_sha = the_lock.base_sha
            _pin(mirror, Want(good_sha, upstream_ref, f"upstream {the_lock.upstream_ref}"))
    if good_sha == bad_sha:
        raise InputError(f"--good and --bad are the same commit ({good_sha[:12]}): nothing to bisect",
                         hint="the upstream has not moved since the lock; give --bad" if bad is None else None)
    if not git.is_ancestor(mirror.path, good_sha, bad_sha):
        raise InputError(f"good {good_sha[:12]} is not an ancestor of bad {bad_sha[:12]}",
                         hint="bisect looks for where a good commit's descendants turned bad: swap them, or pick "
                              "a good commit older than the bad one")
    return mirror, good_sha, bad_sha


def _pin(mirror: Mirror, want: Want) -> None:
    """``want`` pinned with its history: from the mirror when a pin's history holds it, else fetched."""
    if mirror.has(want.sha):
        return
    if git_repo.has_commit(mirror.path, want.sha):  # (never a lazy fetch) behind one of the mirror's pins?
        holder = git.git(["for-each-ref", "--contains", want.sha, "--count=1", "--format=%(objectname)", PIN],
                         repo=mirror.path, check=False).stdout.strip()
        if holder and mirror.pin_ancestor(want.sha, holder):
            return
    mirror.fetch([want])


def _resolve(recipe: Recipe, mirror: Mirror, rev: str, what: str) -> str:
    """``--good``/``--bad`` -> a full SHA pinned in the mirror, as ``git bisect`` takes them: a full SHA; a
    branch or tag of the upstream (``b6019``, ``master``: ls-remote; a ref wins over an abbreviated SHA,
    as in git); an abbreviated SHA of a commit the mirror has (offline too)."""
    rev = rev.strip()
    if SHA40.match(rev.lower()):
        sha = rev.lower()
        try:
            _pin(mirror, Want(sha, label=what, from_recipe=True))
        except InputError:  # (a commit the remote does not have)
            raise InputError(f"{what} {rev}: {mirror.url} has no such commit", key=what,
                             hint="give a commit, branch or tag of the recipe's upstream") from None
        return sha
    if not REF_NAME.match(rev) or ".." in rev or rev.endswith((".", "/", ".lock")):
        raise InputError(f"{what} {rev!r}: not a commit SHA, branch or tag name", key=what)
    hexish, unreachable = HEX.match(rev.lower()) is not None, None
    try:
        answers = remote_refs.ls_remote_for(mirror.url, remote_refs.ref_candidates(rev), [f"{what} {rev}"], recipe.path)
    except StepError as exc:
        if not hexish:
            raise
        answers, unreachable = {}, exc  # an abbreviated SHA can still be found in the mirror
    for name, kind in ((f"{rev}^{{}}", rev), (rev, rev), (f"refs/tags/{rev}^{{}}", f"refs/tags/{rev}"),
                       (f"refs/tags/{rev}", f"refs/tags/{rev}"), (f"refs/heads/{rev}", f"refs/heads/{rev}")):
        if name in answers:
            _pin(mirror, Want(answers[name], kind, f"{what} {rev}"))
            return answers[name]
    if hexish:
        found = git.git(["rev-parse", "--verify", "--quiet", f"{rev.lower()}^{{commit}}"], repo=mirror.path, check=False)
        if found.returncode == 0:
            sha = found.stdout.strip()
            _pin(mirror, Want(sha, label=what))
            return sha
    if unreachable is not None:
        raise unreachable
    raise InputError(f"{what} {rev}: {mirror.url} has no such commit, branch or tag", key=what,
                     hint="abbreviated SHAs are looked up in the commits already fetched (the bad end's history); "
                          "give the full SHA otherwise")
