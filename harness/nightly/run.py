"""Nightly: re-resolve floating refs, classify the stack, build, smoke-test, adopt only on success.

Statuses: ``passed``; ``degraded`` (adopted, but ``nightly.skip_conflicts`` left items out of the
published build: ``missing`` names them); ``failed`` (nothing adopted).

Per recipe: candidate lock (every floating ref re-resolved, moves shown old -> new),
item classification (applied, already-merged -> retired, moved / force-pushed, conflict,
gone), a build of each backend into ``builds/<recipe>/.candidate/<backend>``, the smoke
tests, and only when all of that passed: the candidate lock is written next to the
recipe, each candidate build replaces ``builds/<recipe>/<backend>`` and
``builds/<recipe>/last-good.json`` points at it, all three as one switch (harness/nightly/adoption.py:
a journal that the next run rolls forward).  Otherwise all stay as they were.
"""

from __future__ import annotations

import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from harness import console, smoke
from harness.bisect import run as bisect
from harness.build import published
from harness.build import run as build
from harness.build.cache import Transport
from harness.build.manifest import Stamp
from harness.errors import CommandFailed, HarnessError, StepError
from harness.nightly import adoption
from harness.nightly import entry as night
from harness.nightly.entry import Entry
from harness.recipe.load import Recipe
from harness.smoke.results import SmokeResults, VersionResult
from harness.source import fetch as sources
from harness.source import git, lock, locking, stack
from harness.source.conflicts import ConflictError, ConflictReport
from harness.source.lock import Lock, LockedItem
from harness.source.mirror import Mirror, Want
from harness.source.stack_state import ItemResult

TAIL = 25


def _tail(exc: BaseException) -> str:
    text = exc.output_tail if isinstance(exc, CommandFailed) else str(exc)
    return "\n".join(text.strip().splitlines()[-TAIL:])


def _descends(mirror: Mirror, old: str, new: str) -> bool | None:
    """Is ``new`` a descendant of ``old``?  None when the old head cannot be fetched any more.
    (The mirror holds the whole commit graph behind both, so ancestry is git's full-history answer.)"""
    with mirror.locked():
        try:
            mirror.fetch([Want(old), Want(new)])
        except HarnessError:
            return None
        return git.is_ancestor(mirror.path, old, new)


def classify_moves(old: Lock | None, candidate: Lock, moves: list[locking.Move]) -> dict[str, night.ItemMove]:
    """label -> moved or gone, for items whose pin changed or whose ref vanished."""
    found: dict[str, night.ItemMove] = {}
    if old is None:
        return found
    before = {i.identity(): i for i in old.items}
    gone = {m.what for m in moves if m.gone}
    for item in candidate.items:
        prev = before.get(item.identity())
        if item.label() in gone:
            found[item.label()] = night.ItemMove(status="gone", detail=f"{item.fetch_ref} no longer exists; the locked "
                                                                        f"{item.pin[:12]} is tried")
        elif prev is not None and prev.sha and item.sha and prev.sha != item.sha and item.repo:
            descends = _descends(Mirror.for_url(item.repo), prev.sha, item.sha)
            how = {True: "new commits", False: "force-pushed: the new head does not descend from the locked one",
                   None: "force-pushed: the locked head is no longer fetchable"}[descends]
            found[item.label()] = night.ItemMove(status="moved", detail=f"{prev.sha[:12]} -> {item.sha[:12]} ({how})",
                                                  force_push=descends is not True)
    return found


def run_recipe(recipe: Recipe, *, backends: list[str], builds_dir: Path | None, smoke_model: Path | None,
               cache: Transport | None = None, push: bool = False) -> Entry:
    """``cache``: pull a proven build of the candidate's key instead of compiling it; ``push``: store
    each build that passed there (harness/build/cache/)."""
    started = time.monotonic()
    today = datetime.now(UTC).strftime("%Y-%m-%d")
    entry = Entry(recipe=recipe.name, path=str(recipe.path), status="failed", failed_step=None, error=None,
                  adopted=False, items=[], missing=[], moves=[], builds={}, smoke={})
    step = "lock"
    old: Lock | None = None  # what a failed night bisects from (harness/bisect/run.py: for_night)
    new_base: str | None = None
    new_lock: Lock | None = None
    try:
        if adoption.finish(builds_dir, recipe.name):
            console.info(f"{recipe.name}: finished the adoption a killed nightly left half done")
        old = lock.read(recipe.lock_path)
        candidate, moves = locking.resolve(recipe, old, update=True, keep_gone=True)
        entry.old_base, entry.new_base = (old.base_sha if old else None), candidate.base_sha
        new_base, new_lock = candidate.base_sha, candidate
        entry.moves = [night.MoveRecord(what=m.what, old=m.old, new=m.new, gone=m.gone) for m in moves]
        for m in moves:
            console.info(f"  {m}")
        step = "fetch"
        sources.fetch(candidate)
        moved = classify_moves(old, candidate, moves)
        step = "stack"
        skip = recipe.spec.nightly.skip_conflicts
        try:
            prepared = stack.prepare(recipe, candidate, check_remote=False, skip_conflicts=skip)
            results = prepared.items
        except ConflictError as exc:
            entry.items = _items(candidate.items, [], moved, exc.report)
            raise
        conflicts = {r.ref: r for r in results if r.status == stack.CONFLICT}
        retired = [
            i.replace(retired=f"already merged upstream by {candidate.base_sha[:12]} ({r.detail}); retired {today}")
            if r.status == stack.MERGED and not i.retired else
            i.replace(skipped=f"conflicts with upstream {candidate.base_sha[:12]} ({r.detail}); skipped {today}")
            if r.status == stack.CONFLICT else i
            for i, r in zip(candidate.items, results, strict=True)
        ]
        candidate = candidate.replace(stack=tuple(retired))
        entry.items = _items(candidate.items, results, moved, None)
        entry.skipped_conflicts = sorted(conflicts)
        entry.missing = [night.Missing(item=i.label(), detail=r.detail)
                         for i, r in zip(candidate.items, results, strict=True)
                         if r.status in (stack.CONFLICT, stack.SKIPPED)]  # fmt: skip
        for backend in backends:
            step = f"build:{backend}"
            out = published.build_root(builds_dir, recipe.name, ".candidate") / backend
            try:
                result = build.build(recipe, backend, builds_dir=builds_dir, lock_override=candidate, out=out,
                                     checks=recipe.spec.nightly.smoke, smoke_model=smoke_model, cache=cache, push=push)
            except smoke.SmokeFailure as exc:
                step = f"smoke:{exc.check}:{backend}"
                entry.smoke[f"{exc.check}:{backend}"] = night.SmokeFailed(
                    ok=False, error=str(exc).splitlines()[0], **{k: v for k, v in exc.details.items() if k != "targets"})
                raise
            manifest = result.manifest
            entry.builds[backend] = night.Built(
                ok=True, noop=result.noop, identity=result.identity, stamp=Stamp(**manifest.stamp.model_dump()),
                timings=manifest.timings, ninja_steps=manifest.ninja_steps, log=manifest.log,
                isa=night.BuildIsa(**{k: manifest.isa.get(k) for k in ("variant", "disabled", "fallbacks")}))
            entry.smoke.update({f"{name}:{backend}": res for name, res in _smoke_summary(manifest.smoke).items()})
        step = "gates"
        gate_record = _gates(recipe, entry, backends, builds_dir) if recipe.spec.nightly.gates else None
        step = "adopt"
        pointer: dict[str, Any] = {}
        switches: list[adoption.Move] = []
        for backend in backends:
            candidate_out = published.build_root(builds_dir, recipe.name, ".candidate") / backend
            final = published.build_root(builds_dir, recipe.name, backend)
            built = entry.builds[backend]
            assert isinstance(built, night.Built) and built.identity is not None  # every backend built above
            switches.append(adoption.Move(backend=backend, candidate=str(candidate_out), final=str(final),
                                       identity=built.identity))
            pointer[backend] = {"path": str(final), "identity": built.identity,
                                "lock_digest": candidate.digest, "date": today,
                                "missing": [m.item for m in entry.missing]}  # fmt: skip
        if gate_record is not None:
            pointer["gates"] = gate_record
        # lock, builds and last-good.json as one switch (a killed nightly is rolled forward next time)
        adoption.adopt(builds_dir, recipe.name, recipe.lock_path, candidate, switches, pointer,
                       published.build_root(builds_dir, recipe.name, "last-good.json"))
        # A build without some of its stack is published (that is what skip_conflicts asks for), but
        # it is not what the recipe names: the night is degraded, not passed.
        entry.status, entry.adopted = "degraded" if entry.missing else "passed", True
        if entry.missing:
            console.warn(f"{recipe.name}: published without " + ", ".join(m.item for m in entry.missing))
    except GateRefused as exc:
        entry.failed_step, entry.error = "gates", str(exc)
        console.error(f"{recipe.name}: the bump is refused: {exc}")
        culprit = bisect.for_night(recipe, old, new_base, "gates", published.build_root(builds_dir, recipe.name, "last-good.json"),
                                   new_lock)
        if culprit is not None:
            entry.bisect = night.NIGHT_BISECT.validate_python(culprit)
    except HarnessError as exc:
        entry.failed_step, entry.error = step, _tail(exc)
        if step.startswith(("build:", "smoke:")):
            entry.builds[step.rsplit(":", 1)[1]] = failed_build(step, exc)
        console.error(f"{recipe.name}: {step} failed")
        culprit = bisect.for_night(recipe, old, new_base, step, published.build_root(builds_dir, recipe.name, "last-good.json"),
                                   new_lock)
        if culprit is not None:
            entry.bisect = night.NIGHT_BISECT.validate_python(culprit)
    except Exception as exc:  # a bug: the nightly reports it, keeps its traceback, goes on to the next recipe
        from harness import crash

        log = crash.write_log(exc, sys.argv[1:])
        entry.failed_step, entry.error = step, f"internal error (a bug): {type(exc).__name__}: {exc}; crash log: {log}"
        console.error(f"{recipe.name}: {step} failed with an internal error (a bug): {type(exc).__name__}: {exc}; "
                      f"crash log: {log}")
    entry.seconds = round(time.monotonic() - started, 1)
    return entry


def failed_build(step: str, exc: BaseException) -> night.BuildFailed:
    """The report's entry for a backend whose build (``build:B``) or smoke check (``smoke:CHECK:B``)
    failed: which, and the log when there is one (a smoke check has the build's, not its own)."""
    log = getattr(exc, "log", None)
    if not step.startswith("smoke:"):
        return night.BuildFailed(ok=False, log=log)
    log = log or (exc.details.get("log") if isinstance(exc, smoke.SmokeFailure) else None)
    return night.BuildFailed(ok=False, log=log, smoke_failed=step.split(":")[1])


class GateRefused(StepError):
    """A candidate build that makes the gate model worse than the recipe allows."""


def _gates(recipe: Recipe, entry: Entry, backends: list[str], builds_dir: Path | None) -> dict[str, Any]:
    """Measure the gate model with the first backend's candidate; refuse the bump when a gate breaks."""
    from harness.nightly import gates as gate_checks

    spec = recipe.spec.nightly.gates
    assert spec is not None
    candidate_bin = published.build_root(builds_dir, recipe.name, ".candidate") / backends[0] / "bin"
    work = published.build_root(builds_dir, recipe.name, ".gates")
    metrics = gate_checks.measure(recipe, spec, candidate_bin, work)
    before = gate_checks.last_good(published.build_root(builds_dir, recipe.name, "last-good.json"))
    last_good_bin = published.build_root(builds_dir, recipe.name, backends[0]) / "bin"  # the last good build, raced
    speed = gate_checks.speed(recipe, spec, candidate_bin, last_good_bin if before is not None else None, work)
    if speed is not None and speed["ratio"] is not None:
        metrics.update({"tokens_per_s": speed["candidate_tokens_per_s"], gate_checks.SPEED_METRIC: speed["ratio"]})
    refused = gate_checks.compare(metrics, before, spec, speed)
    entry.gates = night.GatesRecord(metrics=metrics, last_good=before, max_kld_increase=spec.max_kld_increase,
                                     max_mtp_acceptance_drop=spec.max_mtp_acceptance_drop,
                                     min_tokens_per_s_ratio=spec.min_tokens_per_s_ratio, tokens_per_s=speed,
                                     refused=[night.GateRefusal(**r.record()) for r in refused])
    if refused:
        raise GateRefused("; ".join(str(r) for r in refused))
    return {"metrics": metrics, "model": gate_checks.describe_model(spec), "types": spec.types, "ctx": spec.ctx,
            "chunks": spec.chunks}


def _smoke_summary(results: SmokeResults) -> dict[str, night.SmokeRecord]:
    """The smoke results as the report shows them, by check (``version``: one line per binary)."""
    shown: dict[str, night.SmokeRecord] = {}
    for name, res in results.items():
        if isinstance(res, VersionResult):
            shown[name] = night.VersionSummary(ok=res.ok, versions={t: v.version for t, v in res.root.items()})
        else:
            shown[name] = res
    return shown


def _items(items: tuple[LockedItem, ...], results: list[ItemResult], moved: dict[str, night.ItemMove],
           conflict: ConflictReport | None) -> list[night.ItemRow]:
    rows = []
    by_index = dict(enumerate(results))
    for index, item in enumerate(items):
        row = night.ItemRow(item=item.label(), kind=item.kind, ref=item.ref, repo=item.repo, pin=item.pin, status="not-tried")
        res = by_index.get(index)
        if res is not None:
            row.status, row.detail = res.status, res.detail
            if res.status == stack.MERGED:
                row.status, row.retired = "already-merged", True
        elif conflict is not None and index == conflict.index:
            row.status = "conflict"
            row.detail = "conflicts in " + ", ".join(f.path for f in conflict.files)
            row.files = [night.ConflictFile.model_validate(f.to_json()) for f in conflict.files]
        elif conflict is not None and index < conflict.index:
            row.status = "applied-before-conflict"
        else:
            row.status = "not-tried"
        if item.label() in moved:
            row.moved = moved[item.label()]
            if row.status == "applied":
                row.status = row.moved.status
        rows.append(row)
    return rows
