"""A local stand-in for GitHub built from the real llama.cpp tree (the llama-cpp-python sdist).

upstream.git (bare):
  master:  B (0c1e570, the real commit) -> U1 (README line edited) -> M (merges PR 3) -> S (squash of PR 4)
  refs/pull/1/head  clean: edits tools/quantize/quantize.cpp
  refs/pull/2/head  conflicts with U1 (same README line)
  refs/pull/3/head  merged upstream by M (an ancestor of master)
  refs/pull/4/head  squash-merged upstream as S (same patch-id, different commit)
  refs/pull/22673/head  "llama + spec: MTP Support", squash-merged before the base: merging it changes nothing
fork.git (bare, a generic fork): branch feature/turboquant-kv-cache adds a file; refs/pull/7/head edits a doc.
turboquant.git (bare, AtomicBot-ai/atomic-llama-cpp-turboquant as recipes/turboquant.yaml uses it):
  feature/turboquant-kv-cache:  B -> T1 (TurboQuant KV types) -> merge of PR 7 -> T2
  refs/pull/7/head  "llama: prefix MTP assistant tensors with 'mtp.' on load", merged into the branch
Recipes keep their https://github.com URLs; ``env`` redirects them with url.<base>.insteadOf.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from harness.source import sdist_upstream as offline

UPSTREAM_URL = "https://github.com/ggml-org/llama.cpp"
FORK_URL = "https://github.com/example-user/llama.cpp"  # a fork whose branches stack onto upstream
TURBOQUANT_URL = "https://github.com/AtomicBot-ai/atomic-llama-cpp-turboquant"
TURBOQUANT_BRANCH = "feature/turboquant-kv-cache"
BASE = "0c1e57098bba43ac29e6e3b677cdceebdd22334f"

_ENV = {
    "GIT_AUTHOR_NAME": "World",
    "GIT_AUTHOR_EMAIL": "world@example.invalid",
    "GIT_COMMITTER_NAME": "World",
    "GIT_COMMITTER_EMAIL": "world@example.invalid",
    "GIT_AUTHOR_DATE": "@1790000000 +0000",
    "GIT_COMMITTER_DATE": "@1790000000 +0000",
    "GIT_CONFIG_GLOBAL": os.devnull,
    "GIT_CONFIG_NOSYSTEM": "1",
}


def git(repo: Path, *args: str, input: str | None = None) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    env.update(_ENV)
    return subprocess.run(
        ["git", "-C", str(repo), *args], env=env, check=True, capture_output=True, text=True, input=input
    ).stdout.strip()


def edit(repo: Path, rel: str, old: str, new: str) -> None:
    path = repo / rel
    text = path.read_text()
    assert old in text, f"{old!r} not in {rel}"
    path.write_text(text.replace(old, new, 1))


@dataclass
class World:
    root: Path
    upstream: Path
    fork: Path
    work: Path
    turboquant: Path
    shas: dict[str, str] = field(default_factory=dict)

    @property
    def env(self) -> dict[str, str]:
        return offline.redirect_env({UPSTREAM_URL: self.upstream, FORK_URL: self.fork, TURBOQUANT_URL: self.turboquant})

    def commit(self, message: str) -> str:
        git(self.work, "commit", "-qam", message)
        return git(self.work, "rev-parse", "HEAD")

    def branch_from(self, start: str) -> None:
        git(self.work, "checkout", "-q", "--detach", start)

    def push(self, remote: Path, sha: str, ref: str) -> None:
        git(self.work, "push", "-q", "--force", str(remote), f"{sha}:{ref}")

    def set_ref(self, remote: Path, ref: str, sha: str) -> None:
        self.push(remote, sha, ref)


def build(root: Path, cache: Path) -> World:
    """Create the world under ``root`` from the sdist's llama.cpp (downloaded into ``cache``)."""
    base_bare = offline.upstream_repo(cache)
    root.mkdir(parents=True, exist_ok=True)
    upstream, fork, work, turbo = root / "upstream.git", root / "fork.git", root / "work", root / "turboquant.git"
    git(root, "clone", "-q", "--bare", "--no-local", f"file://{base_bare}", str(upstream))
    git(upstream, "config", "uploadpack.allowAnySHA1InWant", "true")
    git(upstream, "config", "uploadpack.allowFilter", "true")
    git(root, "clone", "-q", "--no-local", f"file://{upstream}", str(work))
    git(root, "init", "-q", "--bare", str(fork))
    git(fork, "config", "uploadpack.allowAnySHA1InWant", "true")
    git(fork, "config", "uploadpack.allowFilter", "true")
    git(fork, "config", "receive.shallowUpdate", "true")
    git(root, "init", "-q", "--bare", str(turbo))
    git(turbo, "config", "uploadpack.allowAnySHA1InWant", "true")
    git(turbo, "config", "uploadpack.allowFilter", "true")
    git(turbo, "config", "receive.shallowUpdate", "true")
    w = World(root, upstream, fork, work, turbo)
    assert git(work, "rev-parse", "HEAD") == BASE

    # PR 1: clean, one .cpp file
    w.branch_from(BASE)
    edit(work, "tools/quantize/quantize.cpp", 'printf("  --allow-requantize\\n");',
         'printf("  (PR 1: patched by the world fixture)\\n");\n    printf("  --allow-requantize\\n");')
    w.shas["pr1"] = w.commit("quantize: mention PR 1 in the usage")
    w.push(upstream, w.shas["pr1"], "refs/pull/1/head")

    # PR 2: edits the README title line, which upstream U1 also edits
    w.branch_from(BASE)
    edit(work, "README.md", "# llama.cpp", "# llama.cpp (PR 2 title)")
    w.shas["pr2"] = w.commit("README: PR 2 retitles")
    w.push(upstream, w.shas["pr2"], "refs/pull/2/head")

    # PR 3: merged upstream with a merge commit
    w.branch_from(BASE)
    edit(work, "tools/quantize/README.md", "# quantize", "# quantize\n\n(PR 3 note)")
    w.shas["pr3"] = w.commit("quantize docs: PR 3 note")
    w.push(upstream, w.shas["pr3"], "refs/pull/3/head")

    # PR 4: squash-merged upstream under another commit
    w.branch_from(BASE)
    edit(work, "tools/imatrix/README.md", "# llama.cpp/tools/imatrix", "# llama.cpp/tools/imatrix\n\n(PR 4 note)")
    w.shas["pr4"] = w.commit("imatrix docs: PR 4 note")
    w.push(upstream, w.shas["pr4"], "refs/pull/4/head")

    # upstream master: U1, merge of PR 3, squash of PR 4
    w.branch_from(BASE)
    edit(work, "README.md", "# llama.cpp", "# llama.cpp (upstream title)")
    w.shas["u1"] = w.commit("README: upstream retitles")
    git(work, "merge", "-q", "--no-ff", "-m", "Merge pull request #3", w.shas["pr3"])
    w.shas["merge3"] = git(work, "rev-parse", "HEAD")
    git(work, "cherry-pick", "--no-commit", w.shas["pr4"])
    git(work, "commit", "-qm", "imatrix docs: PR 4 note (#4)")
    w.shas["squash4"] = git(work, "rev-parse", "HEAD")
    w.shas["master"] = w.shas["squash4"]
    w.push(upstream, w.shas["master"], "refs/heads/master")

    # the fork: a feature branch and its own PR 7
    w.branch_from(BASE)
    (work / "ggml" / "turboquant-notes.md").write_text("TurboQuant KV cache (fixture)\n")
    git(work, "add", "ggml/turboquant-notes.md")
    w.shas["turbo"] = w.commit("turboquant: notes")
    w.push(fork, w.shas["turbo"], "refs/heads/feature/turboquant-kv-cache")
    edit(work, "docs/build.md", "# Build llama.cpp locally", "# Build llama.cpp locally\n\n(fork PR 7: mtp. prefix)")
    w.shas["pr7"] = w.commit("mtp: prefix assistant tensors")
    w.push(fork, w.shas["pr7"], "refs/pull/7/head")

    # PR 22673 (MTP support): squash-merged upstream before the base, so its head's tree is the base's
    w.branch_from(BASE)
    git(work, "rm", "-q", "src/models/gemma4-assistant.cpp")
    git(work, "commit", "-qm", "the tree before MTP support (fixture)")
    git(work, "checkout", "-q", BASE, "--", "src/models/gemma4-assistant.cpp")
    w.shas["pr22673"] = w.commit("llama + spec: MTP Support")
    w.push(upstream, w.shas["pr22673"], "refs/pull/22673/head")

    _turboquant(w)
    return w


def _turboquant(w: World) -> None:
    """The TurboQuant fork: its branch carries its own llama.cpp, and PR 7 is merged into it."""
    work = w.work
    w.branch_from(BASE)
    (work / "TURBOQUANT.md").write_text("# TurboQuant (fixture)\n\nKV cache types turbo2, turbo3, turbo4 (-ctk/-ctv).\n")
    git(work, "add", "TURBOQUANT.md")
    w.shas["turbo1"] = w.commit("ggml: TurboQuant KV cache types turbo2/turbo3/turbo4")
    edit(work, "src/llama.cpp", "#include \"llama-impl.h\"",
         "#include \"llama-impl.h\"\n// fork PR 7: MTP assistant tensors are renamed mtp.<name> on load")
    w.shas["turbo_pr7"] = w.commit("llama: prefix MTP assistant tensors with 'mtp.' on load")
    w.push(w.turboquant, w.shas["turbo_pr7"], "refs/pull/7/head")
    w.branch_from(w.shas["turbo1"])
    git(work, "merge", "-q", "--no-ff", "-m", "Merge pull request #7 from sujitvasanth/fix/mtp-assistant-tensor-prefix",
        w.shas["turbo_pr7"])
    edit(work, "TURBOQUANT.md", "(-ctk/-ctv).", "(-ctk/-ctv).\nRecommended: turbo3.")
    w.shas["turbo2"] = w.commit("docs: recommend turbo3")
    w.push(w.turboquant, w.shas["turbo2"], f"refs/heads/{TURBOQUANT_BRANCH}")
