"""``harness patches export``: a resolved conflict becomes a patch file, in recipe and lock.

All or nothing, for any reader: the patch, the new recipe and the new lock are written as one
switch (harness/journal.py, the pattern of nightly's adoption).  A journal beside the recipe
keeps the old contents; the patch is written first (the lock reads it), the recipe is re-parsed
and validated, the lock resolved from it; then the journal takes the new contents and the three
are written.  A failure puts back what was written and leaves the conflict as it was, so the
export can be run again; a kill is finished by the next command that loads the recipe (rolled
back before the journal took the new contents, forward after).  Only after the switch is the
conflicted worktree and its state removed.

The recipe is edited with ruamel.yaml's round-trip mode, which keeps comments, anchors,
quoting and flow style: the stack item is swapped for ``- patch: ...`` and the rest of the
file is kept byte for byte (an alias of an anchor the replaced item defined is written out
in place, which is the one other change).  A layout ruamel.yaml cannot reproduce (mixed
indentation) is refused before anything is written, with what to do by hand.

For an item of a ``patches:`` series, the part that conflicted is rewritten in its
directory (same file name); the recipe stays as it is.
"""

from __future__ import annotations

import io
import json
import os
import re
import shlex
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness import journal
from harness.errors import InputError
from harness.recipe.load import Recipe, files_root, journal_path, load_recipe
from harness.source import fetch as sources
from harness.source import git, lock, locking
from harness.source import patch_parts as patchset
from harness.source.tree import Tree


@dataclass(frozen=True)
class Exported:
    patch: Path
    replaced: str
    index: int
    moves: list[str]


def export_conflict(recipe: Recipe) -> Exported:
    tree = Tree.for_recipe(recipe)
    with tree.locked():
        return _export(recipe, tree)


def _export(recipe: Recipe, tree: Tree) -> Exported:
    state_file = tree.state_dir / "conflict.json"
    if not state_file.exists() or not tree.conflict.exists():
        raise InputError(f"no conflicted tree for {recipe.path}: `harness prepare` stopped at no conflict")
    state = json.loads(state_file.read_text())
    index, onto, report = int(state["index"]), state["onto"], state["report"]
    label, part = report["item"], report.get("part")
    made_on, was = _conflict_lock(recipe, state), lock.read(recipe.lock_path)
    work = tree.conflict
    git.add_all(work)
    leftover = [p for p in git.changed_files(work, cached=True) if _has_markers(work / p)]
    if leftover:
        raise InputError(f"conflict markers are still in: {', '.join(leftover)} (in {work})")
    diff = git.diff(work, onto, cached=True)
    if not diff.strip():
        raise InputError(f"the resolved tree at {work} has no changes against {onto[:12]}")
    header = f"{label}{f', {part}' if part else ''}, resolved onto {onto}\nExported by `harness patches export`.\n\n"
    content = header.encode() + diff

    item = recipe.spec.stack[index] if index < len(recipe.spec.stack) else None
    if item is None or item.label(recipe.spec.upstream.repo) != label:
        raise InputError(f"{recipe.path}: stack[{index}] is no longer {label}; run `harness prepare` again")
    if item.kind == "patches":
        target = _series_member(recipe, item.ref, part)
        if patchset.is_mail(original := target.read_bytes()):
            content = patchset.remail(original, diff)
        new_text = None
    elif part is not None:
        raise InputError(
            f"{label} holds several commits; the resolution of {part} cannot be written back into one file",
            hint="split it into a directory (`git mailsplit -o DIR FILE`, one .patch per mail) and use `patches: DIR/`",
        )
    else:
        if item.kind == "patch" and patchset.is_mail(original := sources.patch_bytes(recipe, made_on.items[index])):
            content = patchset.remail(original, diff)
        target, rel = _patch_path(recipe, label, index)
        new_text = replace_item(recipe.path, index, rel.as_posix(), f"was {label} (conflict resolved)")
    switch = journal.Switch(journal_path(recipe.path), files_root(recipe.path), [target, recipe.path, recipe.lock_path])
    try:
        switch.tentative(target, content)  # the lock reads the patch from disk
        updated = _validated(recipe, new_text)
        new_lock, _ = locking.resolve(updated, made_on)
        _same_pins(recipe, made_on, new_lock, index)
        lock_bytes = (json.dumps(new_lock.to_json(), indent=2, sort_keys=False) + "\n").encode()
        switch.commit({target: content, recipe.path: new_text.encode() if new_text is not None else None,
                       recipe.lock_path: lock_bytes})  # fmt: skip
    except BaseException:
        switch.abort()
        raise
    git.worktree_remove(tree.src, work)
    state_file.unlink(missing_ok=True)
    return Exported(target, label, index, _lock_moves(was, new_lock))


def _conflict_lock(recipe: Recipe, state: dict[str, Any]) -> lock.Lock:
    """The lock the conflict was made against (prepare's, or a nightly's candidate): the resolved
    patch is a change onto its base, so the export writes its pins, whatever the lock file says."""
    if "lock" not in state:
        raise InputError(
            f"{recipe.path}: the conflicted tree does not say which lock it was made against "
            "(it was made by an older harness), so its patch could be written against the wrong base",
            hint=f"run `harness prepare {shlex.quote(str(recipe.path))}` again and resolve the conflict it keeps",
        )
    return lock.parse(state["lock"], recipe.lock_path)


def _same_pins(recipe: Recipe, made_on: lock.Lock, new: lock.Lock, index: int) -> None:
    """Refuse (exit 2) when the recipe no longer gives the pins the patch was resolved onto:
    the base and every item before the one replaced."""
    again = f"run `harness prepare {shlex.quote(str(recipe.path))}` again and resolve the conflict it keeps"
    if new.base_sha != made_on.base_sha:
        raise InputError(
            f"{recipe.path}: the conflict was resolved onto upstream {made_on.base_sha[:12]}, "
            f"but the recipe now pins upstream {new.base_sha[:12]}; nothing was changed",
            hint=again,
        )
    for k, (was, now) in enumerate(zip(made_on.items[:index], new.items[:index], strict=False)):
        if (was.identity(), was.pin) != (now.identity(), now.pin):
            raise InputError(
                f"{recipe.path}: stack[{k}] ({now.label()}) is not what the conflict was resolved onto "
                f"({was.label()} at {was.pin[:12]}); nothing was changed",
                hint=again,
            )


def _lock_moves(before: lock.Lock | None, after: lock.Lock) -> list[str]:
    """How the lock file moved with the export (the base, when the conflict was a nightly's)."""
    if before is None or before.base_sha == after.base_sha:
        return []
    return [f"upstream {before.base_sha[:12]} -> {after.base_sha[:12]} (the base the conflict was resolved onto)"]


def _validated(recipe: Recipe, new_text: str | None) -> Recipe:
    """The recipe as it will be after the export, parsed and validated (patch files already in place)."""
    if new_text is None:
        return load_recipe(recipe.path)
    # named like a recipe (a stem that is a valid recipe name: the name rule applies to stems too)
    fd, name = tempfile.mkstemp(prefix=f"{recipe.path.stem}.export-", suffix=".yaml", dir=recipe.path.parent)
    tmp = Path(name)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(new_text)
        checked = load_recipe(tmp)
    except InputError as exc:
        raise InputError(
            f"{recipe.path}: the edited recipe would not be valid, nothing was changed:\n"
            + str(exc).replace(str(tmp), str(recipe.path))
        ) from None
    finally:
        tmp.unlink(missing_ok=True)  # validated only: the real file is written with the lock
    return Recipe(path=recipe.path, spec=checked.spec, root=checked.root)


def _patch_path(recipe: Recipe, label: str, index: int) -> tuple[Path, Path]:
    """Where the exported patch goes, and how the recipe names it."""
    name = re.sub(r"[^A-Za-z0-9]+", "-", label.split(" of ")[0].lower()).strip("-")
    in_recipes = recipe.path.parent.name == "recipes"
    directory = (recipe.path.parent.parent if in_recipes else recipe.path.parent) / "patches"
    target = directory / f"{recipe.name}-{index + 1:02d}-{name}.patch"
    rel = Path("..") / target.relative_to(recipe.path.parent.parent) if in_recipes else target.relative_to(recipe.path.parent)
    return target, rel


def _series_member(recipe: Recipe, ref: str, part: str | None) -> Path:
    files = {p.name: p for p in locking.series_files(recipe, ref)}
    if part not in files:
        raise InputError(f"patch series {ref}: {part!r} is not one of its files any more; run `harness prepare` again")
    return files[part]


def _has_markers(path: Path) -> bool:
    try:
        text = path.read_text(errors="replace")
    except (FileNotFoundError, IsADirectoryError):
        return False
    return bool(re.search(r"^<{7} |^>{7} ", text, re.M))


def _yaml() -> Any:
    from ruamel.yaml import YAML

    y = YAML(typ="rt")
    y.preserve_quotes = True
    y.width = 1 << 16  # never fold a long line
    return y


def replace_item(recipe_path: Path, index: int, patch: str, comment: str) -> str:
    """The recipe's text with ``stack[index]`` replaced by ``- patch: PATCH  # COMMENT``; nothing written.

    InputError when the file's layout cannot be kept byte for byte around the edit.
    """
    from ruamel.yaml.comments import CommentedMap, CommentedSeq
    from ruamel.yaml.error import YAMLError

    text = recipe_path.read_text(encoding="utf-8")
    by_hand = f"replace stack[{index}] by hand with `- patch: {patch}`"
    y = None
    for mapping, sequence, offset in _layouts(text):
        candidate = _yaml()
        candidate.indent(mapping=mapping, sequence=sequence, offset=offset)
        try:
            data = candidate.load(text)
        except YAMLError as exc:
            raise InputError(f"{recipe_path}: cannot parse: {exc}") from None
        out = io.StringIO()
        candidate.dump(data, out)
        if out.getvalue() == text:
            y = candidate
            break
    if y is None:
        raise InputError(
            f"{recipe_path}: ruamel.yaml cannot rewrite this file without changing its layout elsewhere "
            "(mixed indentation?); nothing was written",
            hint=f"{by_hand}, or make the indentation consistent and run `harness patches export {shlex.quote(str(recipe_path))}` again",
        )
    stack = data.get("stack") if isinstance(data, CommentedMap) else None
    if not isinstance(stack, CommentedSeq) or index >= len(stack):
        raise InputError(f"{recipe_path}: cannot edit stack[{index}] automatically; {by_hand}")
    old = stack[index]
    new = CommentedMap()
    new["patch"] = patch
    new.yaml_add_eol_comment(f"# {comment}", "patch")
    if isinstance(old, CommentedMap) and len(old):  # comment lines after the old item stay after the new one
        token = old.ca.items.get(list(old)[-1], [None, None, None, None])[2]
        if token is not None and "\n" in token.value:
            mine = new.ca.items["patch"][2]
            mine.value = mine.value.rstrip("\n") + "\n" + token.value.split("\n", 1)[1]
    stack[index] = new
    out = io.StringIO()
    y.dump(data, out)
    return out.getvalue()


def _layouts(text: str) -> list[tuple[int, int, int]]:
    """Indentations to try (mapping, sequence, offset): the file's own first, then the usual ones."""
    from ruamel.yaml.error import YAMLError
    from ruamel.yaml.util import load_yaml_guess_indent

    tried: list[tuple[int, int, int]] = []
    try:
        _, indent, dash = load_yaml_guess_indent(text)
        if indent is not None:
            tried.append((indent, indent + (dash or 0), dash or 0))
    except YAMLError:  # a guess only; the real parse reports errors
        pass
    for layout in ((2, 4, 2), (2, 2, 0), (4, 4, 2), (4, 6, 4), (4, 4, 0)):
        if layout not in tried:
            tried.append(layout)
    return tried
