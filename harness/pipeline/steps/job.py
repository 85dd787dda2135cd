"""One tool run that makes one output file, skipped when its sidecar says nothing changed.

``execute`` computes the job's key (input digests, parameters, tool identity), returns at
once when the output's sidecar holds that key and the output is untouched, and otherwise
runs the tool into a temp file beside the output, checks the exit code *and* the file
(``verify``: llama-quantize can leave a full-size invalid file behind), moves it into
place and writes the sidecar last.  A tool that exits 0 with an output that fails the
check is a failed step (exit 1) reported with the tool's own output, never "bad input".
A tool may write a split set (shards named after the temp file); it is published under
the output's shard names and ``Outcome.output`` is its first shard.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness import console, runner
from harness.errors import CommandFailed, InputError, StepError
from harness.pipeline import cache, checkpoint, progress
from harness.pipeline.plan import Context, Outcome

LineParser = Callable[[progress.Bar], Callable[[str], None]]


@dataclass(frozen=True)
class Job:
    step: str
    label: str  # "quantize Q4_K_M"
    output: Path
    tool: Path
    inputs: dict[str, Path]  # name -> file or checkpoint directory (digested)
    params: dict[str, Any]
    argv: Callable[[Path], list[str]]  # the command, given the temp output path
    verify: Callable[[Path], dict[str, Any]]  # checks the written file; what it returns goes into the sidecar
    lines: LineParser | None = None
    total: float | None = None  # progress total, when known up front
    env: dict[str, str] | None = None
    on_failure: Callable[[CommandFailed], Exception] | None = None  # a clearer error for a known failure
    extra_key: dict[str, Any] = field(default_factory=dict)  # key material that is not a parameter


SECRET_ENV = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")


def tool_env() -> dict[str, str]:
    """The environment the tools run in: ours, without the Hugging Face token (they never need it)."""
    return {k: v for k, v in os.environ.items() if k not in SECRET_ENV}


def tool_identity(ctx: Context, tool: Path) -> str:
    return ctx.build.identity or f"sha256:{ctx.digests.file(tool)}"


def digest(ctx: Context, path: Path) -> str:
    """A file's sha256; for a checkpoint directory one digest of the files conversion reads,
    for the first shard of a split GGUF one digest of every shard."""
    if path.is_dir():
        return ctx.digests.tree(path, checkpoint.conversion_files(path))
    shards = split_set(path)
    if len(shards) > 1:
        return ctx.digests.tree(path.parent, [p.name for p in shards])
    return ctx.digests.file(path)


def split_set(path: Path) -> list[Path]:
    """The shards of the set whose first shard is ``path`` (``[path]`` when it is not one)."""
    m = re.match(r"^(.+)-00001-of-(\d{5})\.gguf$", path.name)
    if not m:
        return [path]
    count = int(m.group(2))
    return [path.with_name(f"{m.group(1)}-{i:05d}-of-{count:05d}.gguf") for i in range(1, count + 1)]


def job_key(ctx: Context, job: Job, version: int) -> tuple[str, dict[str, dict[str, str]]]:
    inputs = {name: {"path": str(path), "sha256": digest(ctx, path)} for name, path in job.inputs.items()}
    material = {
        "step": job.step,
        "version": version,
        "inputs": {name: v["sha256"] for name, v in inputs.items()},
        "params": job.params,
        "tool": tool_identity(ctx, job.tool),
        **job.extra_key,
    }
    return cache.key(material), inputs


def execute(ctx: Context, job: Job, *, version: int = 1) -> Outcome:
    key, inputs = job_key(ctx, job, version)
    if not ctx.force:
        side = cache.fresh(job.output, key)
        if side is not None:
            console.info(f"{job.label}: up to date ({job.output.name})")
            return Outcome(job.step, job.label, cache.model_path(job.output, side), True, 0.0, side)
    console.step(f"{job.label} -> {job.output}")
    log = ctx.log_dir / f"{job.output.name}.log"
    started = dt.datetime.now(dt.UTC)
    t0 = time.monotonic()
    with cache.temp_output(job.output) as tmp:
        argv = job.argv(tmp.path)
        seen: dict[str, Any] = {}
        with progress.bar(job.label, job.total) as b:
            try:
                runner.stream(argv, log_path=log, env=job.env or tool_env(), on_line=job.lines(b) if job.lines else None)
            except CommandFailed as exc:
                raise (job.on_failure(exc) if job.on_failure else exc) from None
            seen = dict(b.seen)
        made = tmp.written()
        if not made or not made[0].stat().st_size:
            raise _bad_output(job, argv, log, f"it wrote no {job.output.name}")
        try:
            info = {**seen, **job.verify(made[0])}
        except InputError as exc:
            raise _bad_output(job, argv, log, exc.message.replace(str(made[0]), job.output.name)) from None
        files = tmp.publish()
    seconds = time.monotonic() - t0
    stamps = [{"path": f.name, **cache.stamp(f), "sha256": ctx.digests.file(f)} for f in files]
    recorded: dict[str, Any] = dict(stamps[0]) if len(files) == 1 else {
        "path": job.output.name, "files": stamps, "sha256": digest(ctx, files[0])}  # fmt: skip
    sidecar = {
        "step": job.step,
        "label": job.label,
        "key": key,
        "output": recorded,
        "inputs": inputs,
        "params": job.params,
        "tool": {
            "path": str(job.tool),
            "build_identity": ctx.build.identity,
            "backend": ctx.build.backend,
            "build_root": str(ctx.build.root),
        },
        "command": argv,
        "temp_output": os.path.basename(tmp.path),
        "log": str(log),
        "started": started.isoformat(timespec="seconds"),
        "seconds": round(seconds, 3),
        **info,
    }
    cache.write_sidecar(job.output, sidecar)
    ctx.digests.save()
    return Outcome(job.step, job.label, files[0], False, seconds, sidecar)


def _bad_output(job: Job, argv: list[str], log: Path, why: str) -> StepError:
    """A tool that exited 0 but left no valid output: a failed step, shown with the tool's own output."""
    tail = runner_tail(log)
    return StepError(
        f"{job.label}: {Path(argv[0]).name} exited 0, but its output failed the check: {why}"
        + ("\n  output (last lines):\n" + "\n".join("    " + line for line in tail) if tail else "")
        + f"\n  full log: {log}",
        hint="nothing was published; the previous output (if any) is untouched",
    )


def runner_tail(log: Path, lines: int = 15) -> list[str]:
    try:
        return log.read_text(errors="replace").rstrip().splitlines()[-lines:]
    except OSError:
        return []
