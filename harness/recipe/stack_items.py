"""Where the sources come from: ``upstream`` (a llama.cpp repository and ref) and the ``stack``
items applied on top of it (PRs, fork branches, commits, patch files and directories), with
the one spelling of a repository URL that mirrors, locks and drift checks share."""

from __future__ import annotations

import re

from pydantic import Field, ValidationInfo, field_validator, model_validator

from harness.recipe.section import Section

SHA40 = re.compile(r"^[0-9a-f]{40}$")
SHA256 = re.compile(r"^[0-9a-f]{64}$")
_URL = re.compile(r"^(https?|ssh|git|file)://\S+$|^[\w.-]+@[\w.-]+:\S+$", re.IGNORECASE)
DEFAULT_UPSTREAM = "https://github.com/ggml-org/llama.cpp"


def normalize_repo_url(url: str) -> str:
    """The one spelling of a repository URL, applied when a recipe or lock is loaded.

    Whitespace and trailing slashes go, scheme and host become lower-case, and an http(s) URL
    loses a trailing ``.git`` (GitHub and GitLab serve both); a path ending in ``.git`` on disk
    or over ssh is a real directory name and is kept.  Mirrors, locks and drift checks all use
    this spelling, so two recipes naming one repository share one mirror.
    """
    url = url.strip().rstrip("/")
    m = re.match(r"^([A-Za-z][A-Za-z0-9+.-]*://)([^/]*)(.*)$", url)
    if not m:
        return url
    scheme, host, rest = m.group(1).lower(), m.group(2).lower(), m.group(3)
    if scheme in ("http://", "https://") and rest.endswith(".git"):
        rest = rest[:-4]
    return scheme + host + rest


def _check_repo(value: str) -> str:
    if not _URL.match(value):
        raise ValueError(f"not a git URL: {value!r} (use https://..., ssh://..., git@host:path or file://...)")
    return normalize_repo_url(value)


class Upstream(Section):
    repo: str = DEFAULT_UPSTREAM
    ref: str = "master"

    _repo = field_validator("repo")(_check_repo)

    @field_validator("ref")
    @classmethod
    def _ref(cls, value: str) -> str:
        if re.fullmatch(r"[0-9a-f]{7,39}", value):
            raise ValueError(f"abbreviated commit {value!r}: write the full 40-hex SHA, or a branch or tag")
        if not value.strip():
            raise ValueError("empty ref")
        return value


KINDS = ("pr", "branch", "commit", "patch", "patches")


class StackItem(Section):
    """One of ``pr``, ``branch``, ``commit``, ``patch`` (a file or an http(s) URL: a diff, a
    ``git format-patch`` mail or an mbox of several) or ``patches`` (a directory whose
    ``*.patch`` files are applied in name order, each its own commit); ``repo`` for the first three."""

    pr: int | None = Field(default=None, gt=0)
    branch: str | None = None
    commit: str | None = None
    patch: str | None = None
    patches: str | None = None
    repo: str | None = None
    sha256: str | None = None
    note: str | None = None

    _repo = field_validator("repo")(lambda v: v if v is None else _check_repo(v))

    @field_validator("patch", "patches")
    @classmethod
    def _where(cls, value: str | None, info: ValidationInfo) -> str | None:
        scheme = _scheme(value) if value is not None else None
        if scheme is not None and (info.field_name == "patches" or scheme not in ("http", "https")):
            if info.field_name == "patches":
                raise ValueError(f"{value!r}: patches: names a directory in the repository, not a URL")
            raise ValueError(f"{value!r}: only http(s):// URLs are downloaded; use a path in the repository")
        return value

    @model_validator(mode="after")
    def _one_kind(self) -> StackItem:
        kinds = [k for k in KINDS if getattr(self, k) is not None]
        if len(kinds) != 1:
            raise ValueError(
                "each stack item needs exactly one of pr, branch, commit, patch, patches"
                + (f" (got {', '.join(kinds)})" if kinds else "")
            )
        if self.commit is not None and not SHA40.match(self.commit):
            raise ValueError(f"commit must be a full 40-hex SHA, got {self.commit!r}")
        for key in ("patch", "patches"):
            if getattr(self, key) is not None and self.repo is not None:
                raise ValueError(f"repo does not apply to a {key} item")
        if self.patch is not None:
            if is_url(self.patch) and self.sha256 is None:
                raise ValueError("a URL patch needs sha256 (the digest of the file at that URL)")
        elif self.sha256 is not None:
            raise ValueError("sha256 applies only to patch items")
        if self.sha256 is not None and not SHA256.match(self.sha256):
            raise ValueError("sha256 must be 64 lowercase hex digits")
        return self

    @property
    def kind(self) -> str:
        for k in KINDS:
            if getattr(self, k) is not None:
                return k
        raise AssertionError("validated item has a kind")

    @property
    def ref(self) -> str:
        return str(getattr(self, self.kind))

    def label(self, upstream: str) -> str:
        repo = self.repo or upstream
        if self.kind == "pr":
            return f"PR #{self.pr} of {repo}"
        if self.kind == "branch":
            return f"branch {self.branch} of {repo}"
        if self.kind == "commit":
            return f"commit {self.commit} of {repo}"
        if self.kind == "patches":
            return f"patch series {self.patches}"
        return f"patch {self.patch}"


def _scheme(value: str) -> str | None:
    m = re.match(r"^([A-Za-z][A-Za-z0-9+.-]*)://", value)
    return m.group(1).lower() if m else None


def is_url(value: str) -> bool:
    """Is a patch item's value a URL to download?  Only http(s):// (validation refuses other schemes)."""
    return _scheme(value) in ("http", "https")
