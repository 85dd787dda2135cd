"""Turning a resolved conflict into a patch file under patches/ and swapping it into the recipe."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import yaml

from harness import atomic, git, lock
from harness.errors import InputError
from harness.recipe import Recipe, load_recipe
from harness.tree import Tree


@dataclass(frozen=True)
class Exported:
    patch: Path
    replaced: str
    index: int


def export_conflict(recipe: Recipe) -> Exported:
    tree = Tree.for_recipe(recipe)
    state_file = tree.state_dir / "conflict.json"
    if not state_file.exists() or not tree.conflict.exists():
        raise InputError(f"no conflicted tree for {recipe.path}: `harness prepare` stopped at no conflict")
    state = json.loads(state_file.read_text())
    index, onto, label = int(state["index"]), state["onto"], state["report"]["item"]
    work = tree.conflict
    git.git(["add", "-A"], repo=work)
    leftover = [p for p in git.git(["diff", "--cached", "--name-only"], repo=work).stdout.split() if _has_markers(work / p)]
    if leftover:
        raise InputError(f"conflict markers are still in: {', '.join(leftover)} (in {work})")
    text = git.git(["diff", "--cached", "--no-color", "--full-index", "--binary", onto], repo=work).stdout
    if not text.strip():
        raise InputError(f"the resolved tree at {work} has no changes against {onto[:12]}")
    name = re.sub(r"[^A-Za-z0-9]+", "-", label.split(" of ")[0].lower()).strip("-")
    patch = recipe.path.parent.parent / "patches" if (recipe.path.parent.name == "recipes") else recipe.path.parent / "patches"
    target = patch / f"{recipe.name}-{index + 1:02d}-{name}.patch"
    header = f"{label}, resolved onto {onto}\nExported by `harness patches export`.\n\n"
    atomic.write_text(target, header + text)
    _replace_item(recipe.path, index, target, label)
    git.worktree_remove(tree.src, work)
    state_file.unlink()
    updated = load_recipe(recipe.path)
    new_lock, _ = lock.resolve(updated, lock.read(updated.lock_path))
    lock.write(updated.lock_path, new_lock)
    return Exported(target, label, index)


def _last_line(node: yaml.Node) -> int:
    """The 0-based line holding the last character of ``node`` (block collections end at the next token)."""
    if isinstance(node, yaml.MappingNode) and node.value and not node.flow_style:
        return _last_line(node.value[-1][1])
    if isinstance(node, yaml.SequenceNode) and node.value and not node.flow_style:
        return _last_line(node.value[-1])
    end = node.end_mark
    return end.line - 1 if end.column == 0 else end.line


def _has_markers(path: Path) -> bool:
    try:
        text = path.read_text(errors="replace")
    except (FileNotFoundError, IsADirectoryError):
        return False
    return bool(re.search(r"^<{7} |^>{7} ", text, re.M))


def _replace_item(recipe_path: Path, index: int, patch: Path, label: str) -> None:
    """Swap stack item ``index`` for ``- patch: ...`` keeping the rest of the file byte for byte."""
    text = recipe_path.read_text()
    root = yaml.compose(text, Loader=yaml.SafeLoader)
    stack = next((v for k, v in root.value if k.value == "stack"), None) if isinstance(root, yaml.MappingNode) else None
    if not isinstance(stack, yaml.SequenceNode) or stack.flow_style or index >= len(stack.value):
        raise InputError(f"{recipe_path}: cannot edit stack[{index}] automatically; replace it by hand with `- patch: {patch}`")
    node = stack.value[index]
    lines = text.splitlines(keepends=True)
    first, last = node.start_mark.line, _last_line(node)
    dash = lines[first].index("-") if "-" in lines[first][: node.start_mark.column] else node.start_mark.column - 2
    rel = Path("..") / patch.relative_to(recipe_path.parent.parent) if recipe_path.parent.name == "recipes" else patch.relative_to(recipe_path.parent)
    new = f"{' ' * dash}- patch: {rel.as_posix()}  # was {label} (conflict resolved)\n"
    atomic.write_text(recipe_path, "".join([*lines[:first], new, *lines[last + 1 :]]))
