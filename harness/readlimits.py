"""Bounded reads of files the harness did not write itself this run (locks, state, key files).

Every such file is opened without blocking (a FIFO would hang ``open``), checked to be a regular
file (``/dev/zero``, a sysfs file, a directory or a FIFO is refused), read with a size bound
(one byte past the bound is read, never more), and, for JSON, parsed with a depth bound: a
file of a million ``[`` is an InputError (exit 2) naming the file, not a MemoryError, a hang or
a RecursionError.
"""

from __future__ import annotations

import errno
import json
import os
import re
import stat
from pathlib import Path
from typing import Any

from harness.errors import InputError

MAX_STATE_BYTES = 16 << 20  # a lock, manifest or state record: a few KiB in practice
MAX_DEPTH = 64  # our deepest record nests about 6 levels


def regular_file(path: Path, what: str = "") -> int:
    """An fd open for reading on ``path``, a regular file; an InputError otherwise."""
    label = f"{what} {path}" if what else str(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        why = "a symlink loop" if exc.errno == errno.ELOOP else (exc.strerror or str(exc))
        raise InputError(f"{label}: cannot read: {why}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            kind = ("a directory" if stat.S_ISDIR(st.st_mode) else "a FIFO" if stat.S_ISFIFO(st.st_mode)
                    else "a device" if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode) else "a special file")
            raise InputError(f"{label}: {kind}, not a regular file")
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd


def read_bytes(path: Path, limit: int = MAX_STATE_BYTES, what: str = "") -> bytes:
    """The contents of regular file ``path``, at most ``limit`` bytes (more is an InputError).

    sysfs and procfs files claim a size of 4096 or 0 whatever they hold, hence the read bound
    besides the size check."""
    fd = regular_file(path, what)
    label = f"{what} {path}" if what else str(path)
    try:
        if os.fstat(fd).st_size > limit:
            raise InputError(f"{label}: larger than {limit} bytes; not a file of ours?")
        chunks, total = [], 0
        while total <= limit:
            block = os.read(fd, min(1 << 20, limit + 1 - total))
            if not block:
                break
            chunks.append(block)
            total += len(block)
        if total > limit:
            raise InputError(f"{label}: larger than {limit} bytes; not a file of ours?")
        return b"".join(chunks)
    except OSError as exc:
        raise InputError(f"{label}: cannot read: {exc.strerror or exc}") from None
    finally:
        os.close(fd)


def read_text(path: Path, limit: int = MAX_STATE_BYTES, what: str = "") -> str:
    data = read_bytes(path, limit, what)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(f"{f'{what} {path}' if what else path}: not UTF-8 text (byte {exc.start})") from None


def check_depth(data: Any, where: str, max_depth: int = MAX_DEPTH) -> Any:
    """``data`` when it nests at most ``max_depth`` containers deep; an InputError otherwise (iterative)."""
    stack: list[tuple[Any, int]] = [(data, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict):
            children = list(value.values())
        elif isinstance(value, list):
            children = value
        else:
            continue
        if depth > max_depth:
            raise InputError(f"{where}: nested more than {max_depth} levels deep; not a file of ours?")
        stack.extend((c, depth + 1) for c in children)
    return data


def load_json(path: Path, limit: int = MAX_STATE_BYTES, what: str = "", max_depth: int = MAX_DEPTH) -> Any:
    """JSON from regular file ``path``: size- and depth-bounded; an InputError naming the file and line."""
    label = f"{what} {path}" if what else str(path)
    try:
        text = read_bytes(path, limit, what).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(f"{label}: not valid JSON: not UTF-8 text (byte {exc.start})") from None
    if _bracket_depth(text) > max_depth:  # before json.loads, which would recurse that deep
        raise InputError(f"{label}: nested more than {max_depth} levels deep; not a file of ours?")
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"{label}:{exc.lineno}: not valid JSON: {exc.msg}") from None


_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
_BRACKET = re.compile(r"[\[\]{}]")


def _bracket_depth(text: str) -> int:
    """The deepest nesting of ``[``/``{`` outside strings (a linear scan, no recursion)."""
    depth = deepest = 0
    for m in _BRACKET.finditer(_STRING.sub("", text)):
        if m.group() in "[{":
            depth += 1
            deepest = max(deepest, depth)
        else:
            depth -= 1
    return deepest
