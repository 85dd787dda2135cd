"""Lock + check over an upstream range -> the first upstream commit where the check turns bad.

``harness bisect RECIPE --check CHECK`` walks the first-parent chain of the recipe's upstream from
``good`` (default: the locked base) to ``bad`` (default: what the recipe's upstream ref names now),
as ``git bisect --first-parent`` would: each step applies the whole locked stack to the candidate
commit with the same code and fixed identity as ``prepare`` (a Lock with only ``base_sha``
replaced), in a private tree under ``<cache>/bisect/`` (``src``, ``stack``, ``build-<backend>``),
never the recipe's own tree, ``builds/`` or the lock, and asks the check (harness/bisect/checks.py).
The ends are checked first (bad, then good: the default bad end is picked, not given, and a good
end that already fails puts the cause outside the range); a wrong end stops before bisecting.
A step the check cannot judge is skipped as ``git bisect skip`` skips it; when only skipped
commits are left, or the step budget runs out, the answer is a range of commits, said as such.

The range's ends are resolved in :mod:`harness.bisect.ends`; the answer (:class:`Result`) and its
text are :mod:`harness.bisect.report`'s.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Literal

from harness import atomic, console, paths
from harness.bisect.checks import Check, Env, Verdict
from harness.bisect.ends import ends, range_commits
from harness.bisect.report import Result, Step, Why, about_steps, commit_info
from harness.errors import HarnessError, InputError, StepError
from harness.recipe.load import Recipe
from harness.source import git, stack
from harness.source.conflicts import ConflictError
from harness.source.lock import Lock
from harness.source.tree import Tree


def scratch_tree(recipe: Recipe) -> Tree:
    """The bisection's own tree (source repo, stack worktree, build dirs), kept between runs and
    steps so builds are incremental; a sibling of the recipe trees, so ccache sees the same paths."""
    key = hashlib.sha256(str(recipe.path).encode()).hexdigest()[:8]
    return Tree(paths.cache_dir("bisect") / f"{recipe.name}-{key}")


def search(commits: list[str], judge: Callable[[int], Verdict], max_steps: int | None = None,
           on_step: Callable[[int, int, str], None] | None = None) -> tuple[int, int, Why]:
    """Binary search for the first bad of ``commits`` (the last one bad, the one before the first good):
    (index of the last good, -1 for ``good`` itself; index of the first bad known; why it stopped).
    A skipped commit is left out of later choices, the one nearest the middle tried instead."""
    lo, hi, skipped, steps = -1, len(commits) - 1, set[int](), 0
    while True:
        untested = [i for i in range(lo + 1, hi) if i not in skipped]
        if not untested:
            return lo, hi, "skipped" if hi - lo > 1 else "found"
        if max_steps is not None and steps >= max_steps:
            return lo, hi, "budget"
        middle = (lo + hi) / 2
        pick = min(untested, key=lambda i: (abs(i - middle), i))
        steps += 1
        if on_step is not None:
            on_step(steps, hi - lo, commits[pick])
        verdict = judge(pick).verdict
        if verdict == "good":
            lo = pick
        elif verdict == "bad":
            hi = pick
        else:
            skipped.add(pick)


def run(recipe: Recipe, the_lock: Lock, check: Check, *, good: str | None = None, bad: str | None = None,
        max_steps: int | None = None, env: Env | None = None, check_ends: bool = True) -> Result:
    """Bisect ``good..bad``.  With ``check_ends`` (the command) the bad end is checked first and the good
    end next, one logged step each: a bad end that passes, or a good end that fails, stops it (StepError)
    before any bisecting; one the check cannot judge is taken as given, as ``git bisect`` takes it.
    ``max_steps`` counts the bisection's steps after the ends.  Nightly knows its ends already."""
    mirror, good_sha, bad_sha = ends(recipe, the_lock, good, bad)
    commits = range_commits(mirror.path, good_sha, bad_sha)
    if not commits or commits[-1] != bad_sha:
        raise InputError(f"bad {bad_sha[:12]} is not on a first-parent chain from good {good_sha[:12]}")
    tree = scratch_tree(recipe)
    env = env or Env()
    env = replace(env, root=tree.root)
    extra = " after checking both ends" if check_ends else ""
    console.step(f"bisect {recipe.name}: {len(commits)} upstream commit(s) in {good_sha[:12]}..{bad_sha[:12]}, "
                 f"about {about_steps(len(commits))} step(s) of check {check.text}{extra}")
    steps: list[Step] = []
    verdicts: dict[int, Verdict] = {}

    def test(sha: str, end: Literal["good", "bad"] | None = None) -> Verdict:
        started = time.monotonic()
        with mirror.locked():  # behind bad's pin: no fetch for the candidate commit in prepare
            mirror.pin_ancestor(sha, bad_sha)
        stacked = _stacked(recipe, the_lock.replace(base_sha=sha), tree)
        verdict = check.judge(stacked, env)
        steps.append(Step(step=len(steps) + 1, commit=commit_info(mirror.path, sha), verdict=verdict.verdict,
                          detail=verdict.detail, seconds=round(time.monotonic() - started, 1), end=end))
        console.info(f"    {verdict.verdict}" + (f": {verdict.detail.splitlines()[0]}" if verdict.detail else ""))
        return verdict

    def on_step(k: int, left: int, sha: str) -> None:
        console.step(f"bisect step {len(steps) + 1}: {left} commit(s) left, about {about_steps(left)} step(s) "
                     f"remaining; testing {sha[:12]} {git.subject(mirror.path, sha)}")

    def judge(index: int) -> Verdict:
        verdicts[index] = test(commits[index])
        return verdicts[index]

    # one bisection per recipe at a time: they share the scratch tree and its build directory
    with atomic.lock(tree.root.with_name(tree.root.name + ".bisect.lock"), timeout=1):
        if check_ends:
            at_bad = _check_ends(good_sha, bad_sha, test, mirror.path)
            if at_bad.verdict == "bad":
                verdicts[len(commits) - 1] = at_bad
        lo, hi, why = search(commits, judge, max_steps, on_step)
    candidates = [commit_info(mirror.path, commits[i]) for i in range(lo + 1, hi + 1)]
    found = why == "found"
    return Result(
        recipe=recipe.name, check=check.text, good=commit_info(mirror.path, good_sha),
        bad=commit_info(mirror.path, bad_sha), range_size=len(commits),
        first_bad=candidates[-1] if found else None,
        last_good=commit_info(mirror.path, commits[lo] if lo >= 0 else good_sha),
        candidates=candidates, is_range=not found, why=why,
        detail=verdicts[hi].detail if hi in verdicts else "", steps=steps,
    )


def _check_ends(good: str, bad: str, test: Callable[[str, Literal["good", "bad"]], Verdict], repo: Path) -> Verdict:
    """The bad end, then the good end, as the first two steps; StepError when either says the other thing.
    Returns the bad end's verdict."""
    console.step(f"bisect step 1: checking the bad end {bad[:12]} {git.subject(repo, bad)}")
    at_bad = test(bad, "bad")
    if at_bad.verdict == "good":
        raise StepError(f"the check passes at the bad end ({bad}): nothing to bisect",
                        hint="give a --bad where the check fails (default: the recipe's upstream ref now)")
    if at_bad.verdict == "skip":
        console.warn(f"the check cannot judge the bad end {bad[:12]}: taking it as bad, as git bisect takes --bad")
    console.step(f"bisect step 2: checking the good end {good[:12]} {git.subject(repo, good)}")
    at_good = test(good, "good")
    said = f": {at_good.detail.splitlines()[0]}" if at_good.detail else ""
    if at_good.verdict == "bad" and at_good.code in (126, 127):
        raise StepError(f"bisect stopped: the check itself failed: bogus exit code {at_good.code} at the good end "
                        f"({good}){said}",
                        hint="126: a command the check runs is not executable, 127: not found; fix the check "
                             "(git bisect run stops the same way)")
    if at_good.verdict == "bad":
        raise StepError(f"the check already fails at the good end ({good}){said}\nthe cause is at or before it; "
                        "pass an older --good")
    if at_good.verdict == "skip":
        console.warn(f"the check cannot judge the good end {good[:12]}: taking it as good, as git bisect takes --good")
    return at_bad


def _stacked(recipe: Recipe, candidate: Lock, tree: Tree) -> stack.Prepared | ConflictError:
    """The stack applied to the candidate base in the bisection's tree, or the conflict that stopped it."""
    try:
        return stack.prepare(recipe, candidate, check_remote=False, tree=tree)
    except ConflictError as exc:
        return exc


def moved_items(old: Lock, new: Lock | None) -> list[str]:
    """The stack items whose pin changed between ``old`` and ``new`` (added and dropped ones too)."""
    if new is None:
        return []
    before = {i.identity(): i for i in old.items}
    after = {i.identity(): i for i in new.items}
    return [i.label() for k, i in after.items() if k not in before or before[k].pin != i.pin] + \
        [i.label() for k, i in before.items() if k not in after]


def check_at(recipe: Recipe, the_lock: Lock, check: Check, sha: str, env: Env) -> Verdict:
    """One check of ``the_lock``'s stack on upstream ``sha`` (fetched already), in the bisection's tree."""
    tree = scratch_tree(recipe)
    with atomic.lock(tree.root.with_name(tree.root.name + ".bisect.lock"), timeout=1):
        return check.judge(_stacked(recipe, the_lock.replace(base_sha=sha), tree), replace(env, root=tree.root))


def for_night(recipe: Recipe, old: Lock | None, new_base: str | None, failed_step: str,
              last_good: Path, new: Lock | None = None) -> dict[str, object] | None:
    """Nightly's culprit hunt: when a night fails at the stack, a build, a smoke check or a gate where the
    previous night passed (``last_good`` was written for the lock ``old``) and upstream moved, bisect
    ``old``'s stack from its base to the new one within ``nightly.bisect_steps`` steps.  None when
    there is nothing to bisect; ``{"error": ...}`` when the bisection itself failed.

    When stack items also moved that night (``new``: the night's lock), the old stack is checked at
    the new base first: when it passes there, the culprit is the moved item(s), not upstream, and
    the answer says so (``{"culprit": "stack", "moved": [...], ...}``) without bisecting upstream."""
    from harness.bisect import checks as bisect_checks

    budget = recipe.spec.nightly.bisect_steps
    kind = "apply" if failed_step == "stack" else failed_step.split(":")[0]
    if budget == 0 or kind not in ("apply", "build", "smoke", "gates") or old is None or not new_base or new_base == old.base_sha:
        return None
    if not _passed_with(last_good, old):
        return None
    backend = failed_step.rsplit(":", 1)[1] if kind in ("build", "smoke") else None
    baseline = None
    if kind == "gates":
        from harness.nightly import gates

        baseline = gates.last_good(last_good)
    env = bisect_checks.Env(recipe=recipe, backend=backend, smoke=tuple(recipe.spec.nightly.smoke),
                            gate_baseline=baseline)
    check = bisect_checks.Check("gates", "gates") if kind == "gates" else bisect_checks.parse(kind)
    console.step(f"{recipe.name}: bisecting {old.base_sha[:12]}..{new_base[:12]} for the upstream commit "
                 f"that broke {failed_step} (at most {budget} steps)")
    moved = moved_items(old, new)
    try:
        if moved:
            console.step(f"{recipe.name}: {', '.join(moved)} moved too: checking the last good stack at "
                         f"upstream {new_base[:12]} first")
            mirror, _, bad_sha = ends(recipe, old, old.base_sha, new_base)
            verdict = check_at(recipe, old, check, bad_sha, env)
            if verdict.verdict == "good":
                return {"culprit": "stack", "moved": moved, "check": check.text,
                        "base": commit_info(mirror.path, bad_sha).model_dump(),
                        "detail": f"the last good stack passes {check.text} at upstream {bad_sha[:12]}: "
                                  f"what broke it is the moved item(s), not upstream"}
        # the ends are known: the last good night passed at its base, tonight failed at the new one
        result = run(recipe, old, check, good=old.base_sha, bad=new_base, max_steps=budget, env=env, check_ends=False)
    except HarnessError as exc:
        console.warn(f"{recipe.name}: the bisection failed: {str(exc).splitlines()[0]}")
        return {"error": str(exc).splitlines()[0]}
    return {**result.model_dump(by_alias=True), **({"moved": moved} if moved else {})}


def _passed_with(last_good: Path, old: Lock) -> bool:
    """Was ``old`` the lock of the last night that passed (what ``last-good.json`` points at)?"""
    import json

    try:
        pointer = json.loads(last_good.read_text())
    except (OSError, ValueError):
        return False
    return isinstance(pointer, dict) and any(
        isinstance(v, dict) and v.get("lock_digest") == old.digest for v in pointer.values())
