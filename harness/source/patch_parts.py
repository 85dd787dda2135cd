"""A patch item's content as ``git am`` reads it: its parts, line endings, binary hunks and blobs.

A patch file is a plain diff, a ``git format-patch`` mail, or an mbox of several mails (what
GitHub serves at ``.../pull/N.patch``, what Ollama and Mesh-LLM keep in their patch queues).
Mails are split with ``git mailsplit`` and read with ``git mailinfo``, exactly as ``git am``
does, so transfer encodings are undone and each mail becomes its own commit.  Everything
stays bytes: a Latin-1 patch reaches ``git apply`` unchanged.

Line endings: a patch whose own lines (headers, hunk markers) end in CRLF went through a
Windows checkout, an editor or a mail client; its CRs are dropped as ``git mailsplit`` drops
them for ``git am`` (which also fixes blank context lines trimmed to a bare CRLF).  A patch
whose headers end in LF keeps every byte: a CR there belongs to the content.
"""

from __future__ import annotations

import re
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from harness.errors import InputError
from harness.source import git

_MAIL_START = re.compile(rb"^(From |From:|Subject:|Date:|Message-I[Dd]:|Return-Path:|Received:|Delivered-To:)")
_STRUCTURE = re.compile(rb"^(diff --git |--- |\+\+\+ |@@ -|index [0-9a-f]+\.\.)[^\n]*\n", re.M)
_DIFF = re.compile(rb"^(\+\+\+ |diff --git |GIT binary patch|Binary files )", re.M)
_NO_DATA = re.compile(rb"^Binary files (.+) and (.+) differ\r?$", re.M)
_INDEX = re.compile(rb"^index ([0-9a-f]{7,64})\.\.([0-9a-f]{7,64})", re.M)
_GIT_HEADER = re.compile(rb"^diff --git a/(.+?) b/(.+?)\r?$", re.M)
_PLUS_HEADER = re.compile(rb"^\+\+\+ (?:b/)?(.+?)(?:\t.*)?\r?$", re.M)
_RAW_PLUS = re.compile(rb"^\+\+\+ (.+?)(?:\t.*)?\r?$", re.M)
_HUNK = re.compile(rb"^@@ -(\d+)(?:,(\d+))? \+(\d+)(?:,(\d+))? @@")
_CORRUPT = re.compile(r"(corrupt patch|patch fragment without header|patch with only garbage) at line (\d+)")


@dataclass(frozen=True)
class Part:
    """One commit's worth of a patch item."""

    name: str  # the file (a series' member, or the item's file or URL), plus "[k/n]" for the mails of an mbox
    subject: str  # the mail's subject; empty for a plain diff
    diff: bytes  # what ``git apply`` reads
    crlf: bool  # its CRLF line endings were made LF, as ``git am`` does
    first_line: int  # 1-based line of the source file where ``diff`` starts (for error messages); 0 if unknown


def is_mail(data: bytes) -> bool:
    return bool(_MAIL_START.match(data.lstrip(b"\n")))


def _crlf_structure(data: bytes) -> bool:
    """Do the patch's own lines (not its content lines) end in CRLF?"""
    if is_mail(data):
        first = data.lstrip(b"\n").split(b"\n", 1)[0]
        return first.endswith(b"\r")
    lines = [m.group(0) for m in _STRUCTURE.finditer(data)]
    return bool(lines) and all(line.endswith(b"\r\n") for line in lines)


def split(data: bytes, name: str) -> list[Part]:
    """The parts of one patch file, in order; mails without a diff (cover letters) are left out."""
    crlf = _crlf_structure(data)
    if not is_mail(data):
        diff = data.replace(b"\r\n", b"\n") if crlf else data
        return [Part(name, "", diff, crlf, 1)] if has_diff(diff) else []
    normalized = data.replace(b"\r\n", b"\n") if crlf else data
    parts: list[Part] = []
    with tempfile.TemporaryDirectory(prefix="harness-mail-") as tmp:
        messages = git.mailsplit(data, Path(tmp) / "split", keep_cr=not crlf)
        searched = 0
        for n, message in enumerate(messages, start=1):
            work = Path(tmp) / f"m{n}"
            work.mkdir()
            info, diff = git.mailinfo(message, work)
            if not has_diff(diff):
                continue
            subject = next((line[len(b"Subject: "):] for line in info.splitlines() if line.startswith(b"Subject: ")), b"")
            first, searched = _locate(normalized, diff, searched)
            label = f"{name} [{n}/{len(messages)}]" if len(messages) > 1 else name
            parts.append(Part(label, subject.decode("utf-8", "replace"), diff, crlf, first))
    return parts


def checked_parts(files: Sequence[tuple[str, bytes]], label: str, *, series: bool) -> list[Part]:
    """The parts of a patch item's files (name, content), as ``git am`` would read them; an
    InputError (exit 2) naming ``label`` for content with no diff in it, or a binary change that
    carries no data.  The stack applies these parts; the lock checks them before it pins a file."""
    parts = [p for name, data in files for p in split(data, name)]
    if not parts:
        raise InputError(f"{label}: not a patch (no diff in it)")
    for part in parts:
        no_data = binaries_without_data(part.diff)
        if no_data:
            what = label if len(parts) == 1 and not series else f"{label}, {part.name}"
            raise InputError(
                f"{what}: the binary change to {', '.join(no_data)} carries no data "
                "(the patch was made without --binary, so git cannot apply it)",
                hint="regenerate it with `git format-patch --binary` or `git diff --binary`",
            )
    return parts


def _locate(data: bytes, diff: bytes, start: int) -> tuple[int, int]:
    """(1-based line in ``data`` where ``diff`` starts, offset to search the next one from)."""
    m = re.search(rb"^diff --git [^\n]*\n", diff, re.M)
    if not m:
        return 0, start
    at = data.find(m.group(0), start)
    if at < 0:
        return 0, start
    lines_before_in_diff = diff[: m.start()].count(b"\n")
    return data[:at].count(b"\n") + 1 - lines_before_in_diff, at + 1


def has_diff(diff: bytes) -> bool:
    return bool(_DIFF.search(diff))


def files(diff: bytes) -> list[str]:
    """The paths a diff touches (post-image names)."""
    found = [m.group(2) for m in _GIT_HEADER.finditer(diff)] or [
        m.group(1) for m in _PLUS_HEADER.finditer(diff) if m.group(1) != b"/dev/null"
    ]
    return list(dict.fromkeys(f.decode("utf-8", "replace") for f in found))


def binaries_without_data(diff: bytes) -> list[str]:
    """Paths whose change is binary but carries no data (``git diff`` without ``--binary``)."""
    out = []
    for m in _NO_DATA.finditer(diff):
        a, b = m.group(1), m.group(2)
        path = b if b != b"/dev/null" else a
        out.append(re.sub(rb"^[ab]/", b"", path).decode("utf-8", "replace"))
    return out


def preimage_blobs(diff: bytes) -> list[str]:
    """The blobs (full or abbreviated names) the diff was made against, from its ``index`` lines."""
    return list(dict.fromkeys(m.group(1).decode() for m in _INDEX.finditer(diff) if set(m.group(1)) != {ord("0")}))


def zero_context(diff: bytes) -> bool:
    """Was the diff made without context lines (``diff -U0``)?  A hunk of an existing file that
    has no context line had none (or replaces the whole file)."""
    lines = diff.split(b"\n")
    for i, line in enumerate(lines):
        m = _HUNK.match(line)
        if not m or int(m.group(1)) == 0 or int(m.group(3)) == 0:  # new or deleted files have no context to give
            continue
        old_left, new_left, context = int(m.group(2) or 1), int(m.group(4) or 1), 0
        for body in lines[i + 1 :]:
            if old_left <= 0 and new_left <= 0:
                break
            if body.startswith(b"-"):
                old_left -= 1
            elif body.startswith(b"+"):
                new_left -= 1
            elif body.startswith(b"\\"):
                continue
            else:  # " x", or a blank context line an editor trimmed
                old_left, new_left, context = old_left - 1, new_left - 1, context + 1
        if context == 0:
            return True
    return False


def corrupt_line(stderr: str) -> tuple[str, int] | None:
    """(what git said, line of the diff) when ``git apply`` found the patch malformed."""
    m = _CORRUPT.search(stderr)
    return (m.group(1), int(m.group(2))) if m else None


_DIFF_START = re.compile(rb"^(diff --git |--- |Index: )", re.M)
_SIGNATURE = re.compile(rb"^-- \n", re.M)


def remail(mail: bytes, diff: bytes) -> bytes:
    """``mail`` (one ``git format-patch`` mail) with its diff replaced by ``diff``.

    Its ``From`` line, headers, message and trailers are kept byte for byte up to the ``---``
    line that ends the message; the old diffstat and diff go; the signature (``-- `` and
    what follows) is kept.  A mail whose own lines end in CRLF gets LF ones, as ``git am``
    reads it anyway.  The result is one mail ``git am`` applies.
    """
    if _crlf_structure(mail):
        mail = mail.replace(b"\r\n", b"\n")
    start = _DIFF_START.search(mail)
    head = mail[: start.start()] if start else mail
    end = mail[start.start():] if start else b""
    separator = None
    for m in re.finditer(rb"^---[ \t]*\n", head, re.M):
        separator = m
    message = head[: separator.start()] if separator else head.rstrip(b"\n") + b"\n"
    signatures = list(_SIGNATURE.finditer(end))
    tail = end[signatures[-1].start():] if signatures else b""
    if tail.count(b"\n") > 3:  # not a signature: a removed line "- " of the diff
        tail = b""
    return message + b"---\n\n" + diff + (b"" if diff.endswith(b"\n") else b"\n") + tail


def p0_paths(diff: bytes, exists: Callable[[str], bool]) -> list[str]:
    """The paths of a diff made with ``-p0`` (``diff -u src/x.c.orig src/x.c``: no ``a/``/``b/``
    prefix), which ``git apply`` (``-p1``) looks for one directory too deep and reports as missing
    files: a path problem, not a conflict.  Empty unless every path exists in the tree as written
    and none does with its first component dropped.  ``exists`` answers for a path of the tree."""
    if re.search(rb"^diff --git ", diff, re.M):
        return []
    raw = [m.group(1).decode("utf-8", "replace") for m in _RAW_PLUS.finditer(diff)]
    paths = list(dict.fromkeys(p for p in raw if p != "/dev/null"))
    if not paths:
        return []
    for path in paths:
        stripped = path.split("/", 1)[1] if "/" in path else ""
        if not exists(path) or (stripped and exists(stripped)):
            return []
    return paths
