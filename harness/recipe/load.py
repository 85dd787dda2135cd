"""Loading a recipe: the YAML file validated against the schema (harness/recipe/schema.py),
every problem reported at once as ``FILE:LINE: key.path: message`` (exit code 2) with "did
you mean" for unknown keys, and the paths a recipe names checked to stay in its repository.
"""

from __future__ import annotations

import difflib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from harness import console, journal
from harness.errors import InputError, Problem
from harness.recipe import yamlpos
from harness.recipe.schema import NAME_RULE, RecipeModel, valid_name
from harness.recipe.stack_items import is_url
from harness.recipe.yamlpos import KeyPath


@dataclass(frozen=True)
class Recipe:
    """A validated recipe and where it came from."""

    path: Path
    spec: RecipeModel
    root: Path  # the repository (or directory) the recipe lives in; relative paths may not leave it

    def __post_init__(self) -> None:
        if not valid_name(self.name):  # whichever source the name came from (name:, or the file's stem)
            raise InputError(f"{self.path}: recipe name {self.name!r} must be {NAME_RULE}",
                             hint="set name: in the recipe", file=str(self.path), key="name")

    @property
    def name(self) -> str:
        return self.spec.name or self.path.stem

    @property
    def lock_path(self) -> Path:
        return self.path.with_suffix(".lock")

    def draft_path(self) -> Path | None:
        """The local draft file named by ``draft.source`` (absolute, ``~``, or relative like a patch); None otherwise."""
        draft = self.spec.draft
        if draft is None or not draft.is_local:
            return None
        if draft.source.startswith(("/", "~")):
            return Path(draft.source).expanduser().resolve()
        return self.resolve_local(draft.source)

    def resolve_local(self, rel: str) -> Path:
        """A path named in the recipe, checked to stay in the repository (see ``_local``)."""
        return _local(self.path.parent, self.root, rel)


def _inside(path: Path, root: Path, rel: str) -> Path:
    resolved = path.resolve()
    if not resolved.is_relative_to(root):
        raise ValueError(f"path {rel!r} is outside the recipe's repository ({root})")
    return resolved


def _local(directory: Path, root: Path, rel: str) -> Path:
    """``rel`` relative to the recipe's directory; failing that, to the repository root
    (so ``patches/x.patch`` works from ``recipes/``).  Never outside the repository."""
    near = _inside(directory / rel, root, rel)
    if near.exists():
        return near
    at_root = _inside(root / rel, root, rel)
    return at_root if at_root.exists() else near


def _repo_root(directory: Path) -> Path:
    for candidate in (directory, *directory.parents):
        if (candidate / ".git").exists():
            return candidate
    return directory


def _fields(model: type[BaseModel], path: KeyPath) -> list[str]:
    """The field names allowed at ``path`` below ``model`` (for "did you mean")."""
    current: Any = model
    for part in path:
        if isinstance(part, int):
            continue
        field_info = current.model_fields.get(part) if hasattr(current, "model_fields") else None
        if field_info is None:
            return []
        current = _model_of(field_info.annotation)
        if current is None:
            return []
    return list(current.model_fields) if hasattr(current, "model_fields") else []


def _model_of(annotation: Any) -> Any:
    import typing

    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = _model_of(arg)
        if found is not None:
            return found
    return None


def journal_path(path: Path) -> Path:
    """Where a multi-file write of the recipe and its lock (``patches export``) keeps its journal."""
    return path.parent / f".{path.name}.journal.json"


def files_root(path: Path) -> Path:
    """The directory that holds everything a write of the recipe at ``path`` touches (recipe, lock,
    ``patches/``): its repository, else its directory (the parent of a ``recipes/`` directory)."""
    directory = path.resolve().parent
    root = _repo_root(directory)
    return directory.parent if root == directory and directory.name == "recipes" else root


def load_recipe(path: str | Path) -> Recipe:
    """Load and validate a recipe; raise InputError listing every problem.  A multi-file write of
    recipe and lock that a kill left half done is finished first (rolled back or forward)."""
    path = Path(path)
    if os.path.lexists(journaled := journal_path(path)):
        done = journal.recover(journaled, files_root(path))
        if done is not None:
            console.info(f"{path}: {done} the write of recipe and lock that a killed run left half done")
    pos = yamlpos.load(path, what="recipe")
    problems: list[tuple[int, str, str]] = []  # (line, key path, message)
    for dup_path, line in pos.duplicates:
        problems.append((line, yamlpos.format_path(dup_path), "duplicate key"))
    data = pos.data
    spec: RecipeModel | None = None
    if data is None or data == {}:
        problems.append((1, "(top)", "the recipe is empty; a recipe is a mapping of keys (name, upstream, stack, "
                                     "build, ...)"))
    elif not isinstance(data, dict):
        problems.append((1, "(top)", "a recipe is a mapping of keys (name, upstream, stack, build, ...)"))
    else:
        if data.get("name") is None and not valid_name(path.stem):
            problems.append((1, "(top)", f"the file name gives the recipe name {path.stem!r}, which must be "
                                         f"{NAME_RULE}; set name:"))
        try:
            spec = RecipeModel.model_validate(data)
        except ValidationError as exc:
            for err in exc.errors():
                loc: KeyPath = tuple(err["loc"])
                problems.append(_describe(err, loc, pos))
    root = _repo_root(path.resolve().parent)
    if spec is not None:
        for i, item in enumerate(spec.stack):
            if item.patch is not None and not is_url(item.patch):
                try:
                    target = _local(path.resolve().parent, root, item.patch)
                except ValueError as exc:
                    problems.append((pos.line(("stack", i, "patch")), f"stack[{i}].patch", str(exc)))
                    continue
                if not target.is_file():
                    problems.append((pos.line(("stack", i, "patch")), f"stack[{i}].patch", f"no such file: {item.patch}"))
            if item.patches is not None:
                where = ("stack", i, "patches")
                try:
                    target = _local(path.resolve().parent, root, item.patches)
                except ValueError as exc:
                    problems.append((pos.line(where), f"stack[{i}].patches", str(exc)))
                    continue
                if not target.is_dir():
                    problems.append((pos.line(where), f"stack[{i}].patches", f"no such directory: {item.patches}"))
                elif not any(target.glob("*.patch")):
                    problems.append((pos.line(where), f"stack[{i}].patches", f"no *.patch files in {item.patches}"))
        if spec.model and spec.model.imatrix and spec.model.imatrix.calibration:
            cal = spec.model.imatrix.calibration
            try:
                _local(path.resolve().parent, root, cal)
            except ValueError as exc:
                problems.append((pos.line(("model", "imatrix", "calibration")), "model.imatrix.calibration", str(exc)))
        if spec.draft is not None and spec.draft.is_local and not spec.draft.source.startswith(("/", "~")):
            try:
                _local(path.resolve().parent, root, spec.draft.source)
            except ValueError as exc:
                problems.append((pos.line(("draft", "source")), "draft.source", str(exc)))
    if problems:
        problems.sort(key=lambda p: p[0])
        raise InputError.of([Problem(str(path), line, key, msg) for line, key, msg in problems])
    assert spec is not None
    return Recipe(path=path.resolve(), spec=spec, root=root)


def _describe(err: Any, loc: KeyPath, pos: yamlpos.Positioned) -> tuple[int, str, str]:
    # pydantic puts model-validator errors at the item; drop pydantic's internal loc parts
    loc = tuple(p for p in loc if not (isinstance(p, str) and p.startswith("function-")))
    where = yamlpos.format_path(loc)
    line = pos.line(loc)
    kind = err["type"]
    if kind == "extra_forbidden":
        key = str(loc[-1])
        allowed = _fields(RecipeModel, loc[:-1])
        close = difflib.get_close_matches(key, allowed, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else (f" (allowed: {', '.join(allowed)})" if allowed else "")
        return line, where, f"unknown key{hint}"
    msg = err["msg"]
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, ") :]
    if kind == "missing":
        msg = "required key missing"
    return line, where, msg
