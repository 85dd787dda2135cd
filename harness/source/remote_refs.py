"""The refs a remote repository holds, asked with ``git ls-remote`` (no objects fetched).

``harness lock`` resolves a recipe's floating refs (a branch, a tag, a PR's head) here, and
``bisect`` resolves a good or bad revision the same way.  A failure is one screen naming the
recipe items that need the repository, git's reason under it; a ref that is not there suggests
the closest branch or tag names.
"""

from __future__ import annotations

import shlex
from pathlib import Path

from harness.errors import CommandFailed, InputError, StepError
from harness.recipe.load import Recipe
from harness.recipe.stack_items import SHA40
from harness.source import git


def upstream_tip(recipe: Recipe) -> str:
    """The commit the recipe's upstream ref names at the remote now (as ``resolve`` finds it)."""
    spec = recipe.spec.upstream
    if SHA40.match(spec.ref):
        return spec.ref
    answers = ls_remote_for(spec.repo, ref_candidates(spec.ref), [f"upstream (ref: {spec.ref})"], recipe.path)
    return pick_ref(answers, spec.ref, spec.repo)


def ref_candidates(ref: str) -> list[str]:
    """The names ``ls_remote_for`` asks for a branch or tag name (or a full ``refs/...`` name)."""
    if ref.startswith("refs/"):
        return [ref, f"{ref}^{{}}"]
    return [f"refs/heads/{ref}", f"refs/tags/{ref}", f"refs/tags/{ref}^{{}}"]


def pick_ref(answers: dict[str, str], ref: str, repo: str) -> str:
    """The commit ``ref`` names among ``answers`` (a peeled tag first); InputError when none."""
    for name in (f"{ref}^{{}}", ref, f"refs/tags/{ref}^{{}}", f"refs/tags/{ref}", f"refs/heads/{ref}"):
        if name in answers:
            return answers[name]
    raise InputError(f"upstream ref {ref!r} not found at {repo} (no branch or tag of that name)",
                     hint=did_you_mean(ref, repo))


def did_you_mean(ref: str, repo: str) -> str:
    """A hint naming the branches and tags of ``repo`` closest to ``ref`` (one more ls-remote, on failure only)."""
    import difflib

    try:
        names = [n.split("/", 2)[2] for n in git.ls_remote(repo, ["refs/heads/*", "refs/tags/*"], timeout=30)
                 if n.count("/") >= 2 and not n.endswith("^{}")]
    except (CommandFailed, StepError):
        names = []
    close = difflib.get_close_matches(ref, names, n=3, cutoff=0.6)
    return f"did you mean {' or '.join(repr(c) for c in close)}?" if close else "check the name in the recipe"


def ls_remote_for(repo: str, refs: list[str], users: list[str], recipe: Path) -> dict[str, str]:
    """``git ls-remote``; a failure is one screen naming the recipe items that need ``repo``, git's reason under it."""
    try:
        return git.ls_remote(repo, refs)
    except CommandFailed as exc:
        why = git.failure_tail(exc.output_tail) or "no reason given"
        unreachable = any(s in exc.output_tail for s in git.UNREACHABLE)
        raise StepError(
            f"{recipe}: {', '.join(users)}: cannot {'reach' if unreachable else 'list the refs of'} {repo}:\n"
            + git.indent_reason(why),
            hint="check the network, the URL and your credentials for it" if unreachable
            else f"`git ls-remote {shlex.quote(repo)}` shows what git says",
        ) from None
