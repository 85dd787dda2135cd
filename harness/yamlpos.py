"""YAML with positions: load a document and map key paths back to line numbers."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from harness.errors import InputError, Problem

KeyPath = tuple[str | int, ...]


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


def load(path: Path) -> Positioned:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError.of([Problem(str(path), None, None, "no such file")]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError.of([Problem(str(path), None, None, f"cannot read: {exc}")]) from None
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else 1
        context = ""
        if exc.context and exc.context_mark and exc.problem_mark and exc.context_mark.line != exc.problem_mark.line:
            context = f" ({exc.context} that starts on line {exc.context_mark.line + 1})"
        raise InputError.of([Problem(str(path), line, None, f"yaml: {exc.problem or exc}{context}")]) from None
    except yaml.YAMLError as exc:
        raise InputError.of([Problem(str(path), 1, None, f"yaml: {exc}")]) from None
    pos = Positioned(data)
    if node is not None:
        _walk(node, (), pos)
    return pos


def _walk(node: yaml.Node, path: KeyPath, pos: Positioned) -> None:
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key_node, value_node in node.value:
            key = key_node.value
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
