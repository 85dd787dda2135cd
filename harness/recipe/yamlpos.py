"""YAML with positions: load a document and map key paths back to line numbers.

Loading is bounded before anything grows with the input (a recipe is a few KB):
at most ``MAX_BYTES``, nesting at most ``MAX_DEPTH`` levels, and at most ``MAX_NODES``
nodes once every alias is expanded (a 342-byte "billion laughs" alias bomb expands to
10^9 nodes; it is refused after reading it once, before anything walks the expansion).
A recursive alias (``&a [*a]``) is refused too.  libyaml parses when PyYAML has it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from harness.errors import InputError, Problem

KeyPath = tuple[str | int, ...]

MAX_BYTES = 256 * 1024
MAX_DEPTH = 32
MAX_NODES = 50_000

_Loader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


@dataclass
class Positioned:
    data: Any
    lines: dict[KeyPath, int] = field(default_factory=dict)  # key path -> 1-based line of its key/item
    duplicates: list[tuple[KeyPath, int]] = field(default_factory=list)

    def line(self, path: KeyPath) -> int:
        """The line of ``path`` or of its nearest ancestor that has one."""
        for n in range(len(path), -1, -1):
            if path[:n] in self.lines:
                return self.lines[path[:n]]
        return 1


def load(path: Path, *, what: str = "file") -> Positioned:
    """Parse ``path``; InputError (exit 2) for a missing, unreadable, oversized or malformed file."""
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_BYTES + 1)
    except FileNotFoundError:
        raise _problem(path, None, "no such file") from None
    except OSError as exc:
        raise _problem(path, None, f"cannot read: {exc.strerror or exc}") from None
    if len(raw) > MAX_BYTES:
        raise _problem(path, None, f"too large for a {what} (over {MAX_BYTES // 1024} KiB)")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise _problem(path, line, f"not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    try:
        _check_nesting(text, path)
        node = yaml.compose(text, Loader=_Loader)
        pos = Positioned(None)
        if node is not None:
            _check_expansion(node, path)
            _walk(node, (), pos)  # before constructing: merge keys (<<) are flattened in place
            pos.data = _Loader("").construct_document(node)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else 1
        context = ""
        if exc.context and exc.context_mark and exc.problem_mark and exc.context_mark.line != exc.problem_mark.line:
            context = f" ({exc.context} that starts on line {exc.context_mark.line + 1})"
        raise _problem(path, line, f"yaml: {exc.problem or exc}{context}") from None
    except yaml.YAMLError as exc:
        raise _problem(path, 1, f"yaml: {exc}") from None
    return pos


def _problem(path: Path, line: int | None, message: str) -> InputError:
    return InputError.of([Problem(str(path), line, None, message)])


def _check_nesting(text: str, path: Path) -> None:
    """Refuse nesting deeper than MAX_DEPTH, or more than MAX_NODES nodes, from the event stream
    (composing is recursive, and builds every node)."""
    depth = nodes = 0
    for event in yaml.parse(text, Loader=_Loader):
        if isinstance(event, yaml.NodeEvent):
            nodes += 1
            if nodes > MAX_NODES:
                line = event.start_mark.line + 1 if event.start_mark else 1
                raise _problem(path, line, f"yaml: more than {MAX_NODES} nodes")
        if isinstance(event, yaml.CollectionStartEvent):
            depth += 1
            if depth > MAX_DEPTH:
                line = event.start_mark.line + 1 if event.start_mark else 1
                raise _problem(path, line, f"yaml: nested more than {MAX_DEPTH} levels deep")
        elif isinstance(event, yaml.CollectionEndEvent):
            depth -= 1


def _check_expansion(root: yaml.Node, path: Path) -> None:
    """Count the nodes and depth of the document with every alias expanded, without expanding it.

    Each distinct node is visited once (memoised); a node reached again while it is being
    counted is a recursive alias."""
    size: dict[int, int] = {}
    depth: dict[int, int] = {}
    on_path: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, done = stack.pop()
        key = id(node)
        children = _children(node)
        if done:
            on_path.discard(key)
            size[key] = 1 + sum(size[id(c)] for c in children)
            depth[key] = 1 + max((depth[id(c)] for c in children), default=0)
            if size[key] > MAX_NODES:
                raise _problem(path, node.start_mark.line + 1, f"yaml: more than {MAX_NODES} nodes "
                               "with its aliases expanded (an alias bomb?)")
            if depth[key] > MAX_DEPTH:
                raise _problem(path, node.start_mark.line + 1, f"yaml: aliases nest more than {MAX_DEPTH} levels deep")
            continue
        if key in size:
            continue
        if key in on_path:
            raise _problem(path, node.start_mark.line + 1, "yaml: a recursive alias (a node that contains itself)")
        on_path.add(key)
        stack.append((node, True))
        for child in children:
            if id(child) in on_path:
                raise _problem(path, child.start_mark.line + 1, "yaml: a recursive alias (a node that contains itself)")
            if id(child) not in size:
                stack.append((child, False))


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


def _walk(node: yaml.Node, path: KeyPath, pos: Positioned) -> None:
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key_node, value_node in node.value:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else str(key_node.start_mark.line)
            child = (*path, key)
            if key in seen:
                pos.duplicates.append((child, key_node.start_mark.line + 1))
            seen.add(key)
            pos.lines[child] = key_node.start_mark.line + 1
            _walk(value_node, child, pos)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            child = (*path, i)
            pos.lines[child] = item.start_mark.line + 1
            _walk(item, child, pos)


def format_path(path: KeyPath) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top)"
