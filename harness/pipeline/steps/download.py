"""download: a Hugging Face repo at its locked revision into ``<model dir>/hf``.

A local checkpoint directory is used where it is (nothing is copied).  The sidecar
``hf.json`` records the revision and each file's size and mtime; with both unchanged the
step does nothing (and does not ask the Hub).
"""

from __future__ import annotations

import datetime as dt
import time
from typing import Any, ClassVar

from harness import console
from harness.errors import StepError
from harness.pipeline import cache, checkpoint, progress, source
from harness.pipeline.plan import Context, Outcome


class Download:
    name: ClassVar[str] = "download"

    def run(self, ctx: Context) -> list[Outcome]:
        if ctx.source.gguf:
            return []  # already converted: the convert step takes it as it is
        if ctx.source.path is not None:
            ctx.hf_dir = ctx.source.path
            ctx.checkpoint = ctx.checkpoint or checkpoint.read(ctx.source.path)
            return []
        dest = ctx.hf_download_dir
        side = cache.read_sidecar(dest)
        if side is not None and not ctx.force and _unchanged(side, dest):
            if ctx.revision is None:
                console.warn(f"revision of {ctx.source.spec} unknown (offline?): using the download of {side['revision'][:12]}")
            if ctx.revision is None or side.get("revision") == ctx.revision:
                console.info(f"download: up to date ({ctx.source.spec}@{side['revision'][:12]})")
                return self._done(ctx, Outcome(self.name, "download", dest, True, 0.0, side))
        if ctx.revision is None:
            raise StepError(
                f"cannot download {ctx.source.spec}: its revision is not known (offline?)",
                hint="run `harness lock` while online, or unset HF_HUB_OFFLINE",
            )
        console.step(f"download {ctx.source.spec}@{ctx.revision[:12]} -> {dest}")
        started = dt.datetime.now(dt.UTC)
        t0 = time.monotonic()
        with progress.bar("download", bytes_=True) as b:
            source.download(ctx.source.spec, ctx.revision, dest, tqdm_class=progress.tqdm_bridge(b))
        if ctx.remote_files is not None:  # a new revision: drop files the old one had and this one has not
            for stale in set(checkpoint.conversion_files(dest)) - set(ctx.remote_files):
                (dest / stale).unlink()
                console.info(f"removed {stale} (not in {ctx.source.spec}@{ctx.revision[:12]})")
        files = checkpoint.conversion_files(dest)
        sidecar: dict[str, Any] = {
            "step": self.name,
            "repo": ctx.source.spec,
            "revision": ctx.revision,
            "allow_patterns": source.ALLOW_PATTERNS,
            "ignore_patterns": source.IGNORE_PATTERNS,
            "files": {name: cache.stamp(dest / name) for name in files},
            "started": started.isoformat(timespec="seconds"),
            "seconds": round(time.monotonic() - t0, 3),
        }
        cache.write_sidecar(dest, sidecar)
        return self._done(ctx, Outcome(self.name, "download", dest, False, time.monotonic() - t0, sidecar))

    def _done(self, ctx: Context, outcome: Outcome) -> list[Outcome]:
        ctx.hf_dir = ctx.hf_download_dir
        ctx.checkpoint = checkpoint.read(ctx.hf_dir)
        return [outcome]


def _unchanged(side: dict[str, Any], dest: Any) -> bool:
    files = side.get("files")
    if not isinstance(files, dict) or not files:
        return False
    for name, recorded in files.items():
        try:
            if cache.stamp(dest / name) != recorded:
                return False
        except FileNotFoundError:
            return False
    return True
