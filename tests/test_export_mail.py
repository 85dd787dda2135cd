"""`harness patches export` on patch queues of mails, and on conflicts a nightly made (issue 23, items 2 and 3)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

from tests import world as w
from tests.conftest import run_harness, write_recipe
from tests.test_export import _conflict, _resolve_readme

CORPUS = Path(__file__).parent / "data" / "patches"
SERIES = "series-conflict"
MEMBER = "0002-README-the-series-retitles-too.patch"


def _git(repo: Path, *args: str) -> str:
    return w.git(repo, *args)


def _am(tree: Path, base: str, patches: list[Path], into: Path) -> subprocess.CompletedProcess[str]:
    """``git am -3`` of ``patches`` onto ``base`` in a work tree of the prepared repository at ``base`` (as Ollama and
    Mesh-LLM apply queues; a worktree, since a clone would walk history whose old files the partial mirrors never fetched)."""
    _git(tree, "worktree", "add", "-q", "--detach", str(into), base)
    return subprocess.run(["git", "-C", str(into), "am", "-3", "--committer-date-is-author-date", *map(str, patches)],
                          capture_output=True, text=True, env=None)


def test_a_resolved_series_member_stays_a_mail_git_am_applies(tmp_path: Path, world_env: dict[str, str]) -> None:
    """Issue 23, item 2 (Ollama's `llama/patches/*.patch` and Mesh-LLM's queue, applied with `git am -3`):
    export wrote the resolution of a series member back as a bare diff, so the queue stopped being a `git am` queue."""
    repo = tmp_path / "r"
    shutil.copytree(CORPUS / SERIES, repo / "patches" / "fixes")
    member = repo / "patches" / "fixes" / MEMBER
    # the mail as people keep them: a message body and trailers below the subject
    original = member.read_bytes().replace(
        b"Subject: [PATCH 2/2] README: the series retitles too\n\n---\n",
        b"Subject: [PATCH 2/2] README: the series retitles too\n\nThe title names the series, as downstream docs expect.\n\n"
        b"Signed-off-by: World <world@example.invalid>\nReviewed-by: Other <other@example.invalid>\n---\n",
    )
    assert original != member.read_bytes()
    member.write_bytes(original)
    recipe = write_recipe(repo, "series", f"upstream:\n  repo: {w.UPSTREAM_URL}\nstack:\n  - patches: patches/fixes/\n")
    assert run_harness("lock", recipe).returncode == 0
    conflict = _conflict(recipe)
    assert conflict["part"] == MEMBER
    _resolve_readme(Path(str(conflict["worktree"])), "upstream title, series title")

    res = run_harness("patches", "export", recipe)
    assert res.returncode == 0, res.stderr
    mail = member.read_bytes()
    head, _, rest = mail.partition(b"\n---\n")
    assert head == original.partition(b"\n---\n")[0]  # From line, From:, Date:, Subject:, message and trailers, byte for byte
    assert b"+# llama.cpp (upstream title, series title)" in rest and b"-# llama.cpp (upstream title)" in rest
    assert rest.endswith(original[original.rindex(b"\n-- \n"):])  # the signature too

    res = run_harness("prepare", recipe, "--json")
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    tree = Path(out["tree"])
    assert _git(tree, "log", "-1", "--format=%s") == "README: the series retitles too"  # not the file name
    # the real `git am`, onto the locked base, takes the whole queue
    base = json.loads(recipe.with_suffix(".lock").read_text())["upstream"]["sha"]
    series = sorted((repo / "patches" / "fixes").glob("*.patch"))
    am = _am(tree, base, series, tmp_path / "am")
    assert am.returncode == 0, am.stdout + am.stderr
    clone = tmp_path / "am"
    assert _git(clone, "log", "-1", "--format=%an <%ae>|%s") == "World <world@example.invalid>|README: the series retitles too"
    body = _git(clone, "log", "-1", "--format=%B")
    assert "The title names the series" in body and "Reviewed-by: Other <other@example.invalid>" in body
    assert _git(clone, "log", "-1", "--format=%ad", "--date=rfc") == "Mon, 21 Sep 2026 14:13:20 +0000"
    assert (clone / "README.md").read_text().startswith("# llama.cpp (upstream title, series title)\n")
    assert _git(clone, "rev-parse", "HEAD^{tree}") == _git(tree, "rev-parse", "HEAD^{tree}")


def test_a_resolved_single_patch_mail_stays_a_mail(tmp_path: Path, world_env: dict[str, str]) -> None:
    """Issue 23, item 2: a single `- patch:` mail (a `git format-patch` file) came back from export as a bare
    diff with the file name as its subject."""
    repo = tmp_path / "r"
    (repo / "patches").mkdir(parents=True)
    mail = (CORPUS / SERIES / MEMBER).read_bytes().replace(b"[PATCH 2/2]", b"[PATCH]")
    (repo / "patches" / "retitle.patch").write_bytes(mail)
    recipe = write_recipe(repo, "single", f"upstream:\n  repo: {w.UPSTREAM_URL}\nstack:\n  - patch: patches/retitle.patch\n")
    assert run_harness("lock", recipe).returncode == 0
    conflict = _conflict(recipe)
    _resolve_readme(Path(str(conflict["worktree"])), "both titles")
    res = run_harness("patches", "export", recipe, "--json")
    assert res.returncode == 0, res.stderr
    exported = Path(json.loads(res.stdout)["patch"])
    text = exported.read_bytes()
    assert text.startswith(mail.partition(b"\n---\n")[0] + b"\n---\n")
    base = json.loads(recipe.with_suffix(".lock").read_text())["upstream"]["sha"]
    res = run_harness("prepare", recipe, "--json")
    assert res.returncode == 0, res.stderr
    am = _am(Path(json.loads(res.stdout)["tree"]), base, [exported], tmp_path / "am")
    assert am.returncode == 0, am.stdout + am.stderr
    assert _git(tmp_path / "am", "log", "-1", "--format=%s|%an") == "README: the series retitles too|World"


NIGHTLY = f"""upstream:
  repo: {w.UPSTREAM_URL}
  ref: export-base
stack:
  - pr: 1
  - pr: 2
build:
  backends: [cpu]
"""


def test_export_of_a_nightly_conflict_writes_the_base_it_was_resolved_onto(
    tmp_path: Path, world_env: dict[str, str], world: w.World
) -> None:
    """Issue 23, item 3: the nightly report says to resolve and `harness patches export`; the export wrote a patch
    resolved onto the nightly's candidate upstream while the lock kept the old base ("lock updated"), and prepare
    and build then failed on a recipe that had built."""
    world.set_ref(world.upstream, "refs/heads/export-base", w.BASE)
    recipe = write_recipe(tmp_path / "r", "moving", NIGHTLY)
    assert run_harness("lock", recipe).returncode == 0
    assert run_harness("prepare", recipe).returncode == 0  # PR 2 applies on the locked base
    world.set_ref(world.upstream, "refs/heads/export-base", world.shas["master"])  # upstream retitles the README

    res = run_harness("nightly", recipe, "--report", tmp_path / "report", "--json")
    assert res.returncode == 1
    entry = json.loads(res.stdout)["recipes"][0]
    assert entry["failed_step"] == "stack" and "harness patches export" in entry["error"]
    assert json.loads(recipe.with_suffix(".lock").read_text())["upstream"]["sha"] == w.BASE  # nothing adopted
    work = next(p for p in (tmp_path / "harness-cache" / "trees").glob("moving-*") if p.is_dir()) / "conflict"
    assert f"The conflicted tree is kept at {work}" in entry["error"]
    _resolve_readme(work, "upstream title, PR 2 resolved")

    # the recipe no longer resolves to the base the conflict was resolved onto: refused, nothing written
    body, lock_bytes = recipe.read_text(), recipe.with_suffix(".lock").read_bytes()
    recipe.write_text(body.replace("ref: export-base", f"ref: {w.BASE}"))
    res = run_harness("patches", "export", recipe)
    assert res.returncode == 2, res.stderr
    assert f"resolved onto upstream {world.shas['master'][:12]}" in res.stderr
    assert f"now pins upstream {w.BASE[:12]}" in res.stderr and "harness prepare" in res.stderr
    assert recipe.with_suffix(".lock").read_bytes() == lock_bytes and work.exists()
    assert not (tmp_path / "r" / "patches").exists()
    recipe.write_text(body)

    res = run_harness("patches", "export", recipe)
    assert res.returncode == 0, res.stderr
    assert f"lock updated: upstream {w.BASE[:12]} -> {world.shas['master'][:12]}" in res.stdout
    locked = json.loads(recipe.with_suffix(".lock").read_text())
    assert locked["upstream"]["sha"] == world.shas["master"]
    assert run_harness("lock", recipe, "--check").returncode == 0
    res = run_harness("prepare", recipe, "--json")
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert [i["status"] for i in out["items"]] == ["applied", "applied"]
    assert (Path(out["tree"]) / "README.md").read_text().startswith("# llama.cpp (upstream title, PR 2 resolved)\n")


def test_export_refuses_a_conflict_state_that_does_not_name_its_lock(tmp_path: Path, world_env: dict[str, str]) -> None:
    """Issue 23, item 3: a conflicted tree kept by an older harness does not say which base it was resolved onto."""
    recipe = write_recipe(tmp_path / "r", "old", f"upstream:\n  repo: {w.UPSTREAM_URL}\nstack:\n  - pr: 2\n")
    assert run_harness("lock", recipe).returncode == 0
    work = Path(str(_conflict(recipe)["worktree"]))
    state_file = work.parent / "state" / "conflict.json"
    state = json.loads(state_file.read_text())
    assert state["lock"]["upstream"]["sha"] == json.loads(recipe.with_suffix(".lock").read_text())["upstream"]["sha"]
    del state["lock"]
    state_file.write_text(json.dumps(state))
    _resolve_readme(work, "resolved")
    res = run_harness("patches", "export", recipe)
    assert res.returncode == 2 and "does not say which lock it was made against" in res.stderr
    assert f"harness prepare {recipe}" in res.stderr and work.exists()


def test_remail_keeps_a_mail_that_had_no_separator_line(tmp_path: Path) -> None:
    """Issue 23, item 2: mails whose message runs straight into the diff (no `---`, as some tools write them)
    and CRLF mails come back as one mail `git mailinfo` (what `git am` runs) reads the same way."""
    from harness.source import patch_parts as patchset

    diff = b"diff --git a/x b/x\n--- a/x\n+++ b/x\n@@ -1 +1 @@\n-a\n+b\n"
    mail = (b"From: A U Thor <a@example.invalid>\nDate: Mon, 21 Sep 2026 14:13:20 +0000\nSubject: [PATCH] x: b\n\n"
            b"Why b.\n\nSigned-off-by: A U Thor <a@example.invalid>\n" + diff.replace(b"+b", b"+c"))
    for original in (mail, mail.replace(b"\n", b"\r\n")):
        out = patchset.remail(original, diff)
        (tmp_path / "m").write_bytes(out)
        info = subprocess.run(["git", "mailinfo", str(tmp_path / "msg"), str(tmp_path / "patch")],
                              stdin=(tmp_path / "m").open("rb"), capture_output=True, check=True).stdout  # fmt: skip
        assert b"Author: A U Thor" in info and b"Subject: x: b" in info
        assert (tmp_path / "msg").read_bytes() == b"Why b.\n\nSigned-off-by: A U Thor <a@example.invalid>\n"
        assert (tmp_path / "patch").read_bytes() == b"---\n\n" + diff  # what git apply reads: the diff
