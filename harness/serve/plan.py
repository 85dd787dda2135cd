"""The llama-server command line of ``harness serve`` and ``harness bench``: recipe, draft model
and overrides, checked.  Both commands build it here, so a bench measures the command line
``harness serve --dry-run`` prints for the same options.

``plan`` composes the flags (:func:`harness.serve.server.compose_args`) from the recipe's ``serve:``
and ``draft:`` sections, ``--mtp``/``--spec``/``--draft``/``--draft-n-max`` and the arguments
after ``--``; audits the draft against the model (:mod:`harness.serve.draft`); and checks every flag
and value against the binary's own ``--help`` (:mod:`harness.serve.server_help`), so nothing starts
with a command line llama-server would refuse.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from harness import console
from harness.errors import InputError
from harness.recipe.load import Recipe
from harness.serve import buffer_types, server, server_help
from harness.serve import draft as drafts


@dataclass(frozen=True)
class Plan:
    """One llama-server command line, checked against the binary's own ``--help``."""

    binary: Path
    backend: str
    model: Path
    args: list[str]  # everything but -m, --host, --port and the key file
    draft: Path | None = None
    draft_status: str | None = None  # the draft's audit status (draft, not-applicable)

    def argv(self, host: str, port: int | str) -> list[str]:
        return [str(self.binary), "-m", str(self.model), *self.args, "--host", host, "--port", str(port)]


def plan(recipe: Recipe, binary: Path, backend: str, model: Path, *, spec: list[str] | None,
         draft: Path | None, depth: int | None, extra: list[str], parallel: int | None = None) -> Plan:  # fmt: skip
    """The llama-server arguments for ``harness serve`` and each mode of ``harness bench``: the
    recipe's ``serve:`` and ``draft:``, the command line's overrides, ``-np parallel`` and ``extra``
    (after ``--``), every flag and value checked against ``binary --help`` (InputError naming what
    it would refuse).  A draft given as ``-md FILE`` in ``extra`` is audited like ``--draft``; a
    type that drafts with a model and has none is refused (llama-server would serve without drafting)."""
    offered = server_help.read(binary)
    names = [n for n in (spec if spec is not None else (recipe.spec.serve.spec_type or "").split(",")) if n.strip()]
    types = server.resolve_spec(names, server.spec_types(binary)) if names else []
    # the recipe's draft serves the types that draft with a model, or implies one when none is named;
    # --spec none or --spec ngram-mod leave it out
    wants_draft = any(server.uses_draft_model(t) for t in types) or (spec is None and not types)
    draft_file = _existing(draft) if draft is not None else drafts.path(recipe) if wants_draft else None
    report = drafts.fit(draft_file, model) if draft_file is not None else None
    passed = server.draft_in(extra)
    if passed is not None:
        drafts.fit(_existing(Path(passed), "-md"), model)
    missing = [t for t in types if server.needs_draft_model(t)]
    if missing and draft_file is None and passed is None:
        raise InputError(f"--spec-type {','.join(missing)} drafts with a draft model, and none is given: "
                         "llama-server would start and serve without drafting",
                         hint="pass --draft GGUF, name one in the recipe's draft: section, or choose another "
                              "--spec (mtp, ngram-mod, ...)")  # fmt: skip
    composed = server.compose_args(
        recipe.spec.serve, backend=backend, spec=types, draft=draft_file,
        draft_type=drafts.spec_type_for(report) if report is not None else "draft-simple",
        depth=depth,
    )  # fmt: skip
    if parallel is not None:
        composed += ["-np", str(parallel)]
    offered.check(composed, origin=f"{recipe.path}: serve:")
    offered.check(extra, origin="the arguments after --")
    buffer_types.check([*composed, *extra], binary, backend=backend, origin=f"{recipe.path}: serve: / after --")
    warn_untyped_draft(extra)
    server.refuse_key_on_command_line(extra)
    return Plan(binary, backend, model, [*composed, *extra], draft_file, report.status if report else None)


def warn_untyped_draft(extra: list[str]) -> None:
    """``-md`` after ``--`` without ``--spec-type``: llama.cpp drafts nothing unless it infers a type from the file."""
    draft = server.draft_without_type(extra)
    if draft is not None and not drafts.infers_type(Path(draft)):
        console.warn(f"-md {draft} without --spec-type: llama-server will draft nothing with it (it infers a "
                     "type only for MTP heads and DFlash drafts); add --spec-type draft-simple, or draft-mtp for "
                     "a Gemma 4 assistant, or pass it as --draft FILE, which picks the type")  # fmt: skip


def _existing(path: Path, flag: str = "--draft") -> Path:
    if not path.is_file():
        raise InputError(f"{flag} {path}: no such file")
    return path.resolve()
