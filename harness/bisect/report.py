"""What a bisection answers: the commits and steps of a :class:`Result` (``--json``, nightly's report),
and the same answer as people read it."""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from harness.source import git

SCHEMA = 1  # Result's schema
Why = Literal["found", "skipped", "budget"]
# llama.cpp's squash merges ("llama : fix foo (#22673)"), GitHub's merge commits ("Merge pull request #14 from ...")
PR_IN_SUBJECT = re.compile(r"\(#(\d+)\)\s*$|^Merge pull request #(\d+) ")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class Commit(_Model):
    sha: str
    subject: str
    date: str  # author date, ISO 8601
    pr: int | None = None  # the upstream PR a squash commit names in its subject


class Step(_Model):
    step: int
    commit: Commit
    verdict: Literal["good", "bad", "skip"]
    detail: str = ""
    seconds: float
    end: Literal["good", "bad"] | None = None  # the check of an end of the range, before bisecting


class Result(_Model):
    """What ``harness bisect --json`` prints (and nightly's report holds)."""

    schema_: Literal[1] = Field(default=1, alias="schema")
    recipe: str
    check: str
    good: Commit
    bad: Commit
    range_size: int  # commits in good..bad (bad included, good not)
    first_bad: Commit | None  # None when the answer is a range
    last_good: Commit
    candidates: list[Commit]  # the commits that may be the first bad one, oldest first (one when found)
    is_range: bool
    why: Why  # budget: the step budget ran out first
    detail: str = ""  # what the check said at the first bad commit (the item that stops applying...)
    steps: list[Step]


def commit_info(repo: Path, sha: str) -> Commit:
    out = git.git(["log", "-1", "--no-show-signature", "--format=%H%x00%aI%x00%s", sha], repo=repo).stdout.strip()
    full, date, subject = out.split("\0", 2)
    pr = PR_IN_SUBJECT.search(subject)
    return Commit(sha=full, subject=subject, date=date, pr=int(pr.group(1) or pr.group(2)) if pr else None)


def about_steps(left: int) -> int:
    """Steps still needed for ``left`` candidate commits (git bisect's "roughly N steps")."""
    return math.ceil(math.log2(left)) if left > 1 else 0


def text(result: Result) -> list[str]:
    """The answer as people read it."""
    def line(c: Commit) -> str:
        pr = f"  (PR #{c.pr})" if c.pr else ""
        return f"{c.sha}  {c.date}  {c.subject}{pr}"

    out: list[str] = []
    if result.first_bad is not None:
        out += [f"first bad commit: {line(result.first_bad)}"]
        if result.detail:
            out += [f"  {result.check}: {result.detail.splitlines()[0]}"]
    else:
        because = ("only skipped commits are left" if result.why == "skipped"
                   else f"the step budget ran out after {len(result.steps)} step(s)")
        out += [f"the first bad commit is one of these {len(result.candidates)} ({because}):"]
        out += [f"  {line(c)}" for c in result.candidates]
    out += [f"last good commit: {line(result.last_good)}",
            f"{len(result.steps)} step(s) over {result.range_size} commit(s) "
            f"({result.good.sha[:12]}..{result.bad.sha[:12]}, about {about_steps(result.range_size)} needed):"]
    for s in result.steps:
        detail = f"  {s.detail.splitlines()[0]}" if s.detail else ""
        end = f"({s.end} end) " if s.end else ""
        out.append(f"  {s.step:2}  {s.commit.sha[:12]}  {s.verdict:4}  {s.seconds:6.1f}s  "
                   f"{end}{s.commit.subject[:60]}{detail}")
    return out
