"""quality: KL divergence of every quant against the reference, by llama-perplexity (:mod:`harness.quality`).

The reference is the converted file (BF16/F16, or the GGUF source), or the quant ``quality.reference``
names (e.g. Q8_0).  Its log-probabilities over the evaluation text are one cached output,
``<name>.kld-base.bin`` (keyed by the reference, the text, ctx, chunks and the build); each quant's
figures are another, ``<name>-<TYPE>.kld.json``, keyed by the quant and the base's key.  The summary
shows them beside each quant, and ``<name>.quality.png`` draws size against mean KLD.  A build
without llama-perplexity (older than this step) skips it with a warning.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, ClassVar

from harness import atomic, console, quality, quality_report
from harness.errors import InputError
from harness.pipeline import cache
from harness.pipeline.plan import Context, Outcome
from harness.pipeline.steps.job import Job, digest, execute, tool_identity

VERSION = 1


class Quality:
    name: ClassVar[str] = "quality"

    def run(self, ctx: Context) -> list[Outcome]:
        tool = ctx.build.perplexity
        quants = [o for o in ctx.outcomes if o.step == "quantize" and not o.output.name.startswith("mtp-")]
        if not quants:
            return []
        if not tool.exists():
            console.warn(f"no {tool.name} in {ctx.build.bin}: no KL divergence for the quants "
                         "(add llama-perplexity to build.targets, or set model.quality.enabled: false)")  # fmt: skip
            return []
        reference = reference_of(ctx, quants)
        base = execute(ctx, self._base_job(ctx, reference), version=VERSION)
        outcomes = [base]
        for q in quants:
            if q.output != reference:
                outcomes.append(self._measure(ctx, q, base))
        measured = [o for o in outcomes if "quality" in o.sidecar]
        if measured:
            pts = [quality_report.Point(str(o.sidecar["params"]["type"]), int(o.sidecar["quality"]["size"]),
                                        float(o.sidecar["quality"]["mean_kld"])) for o in measured]  # fmt: skip
            quality_report.draw(pts, ctx.quality_png(), title=f"{ctx.name}: size against KL divergence "
                                f"(reference {reference.name})")  # fmt: skip
        return outcomes

    def _base_job(self, ctx: Context, reference: Path) -> Job:
        settings = settings_of(ctx)
        text, tool, vocab = ctx.evaluation(), ctx.build.perplexity, quality.n_vocab(reference)

        def argv(tmp: Path) -> list[str]:
            return [str(tool), "-m", str(reference), "-f", str(text), "-c", str(settings.ctx),
                    "--chunks", str(settings.chunks), "--kl-divergence-base", str(tmp)]  # fmt: skip

        def verify(tmp: Path) -> dict[str, Any]:
            chunks = quality.chunks_in(tmp)
            want = quality.base_bytes(ctx=settings.ctx, chunks=chunks, vocab=vocab)
            if not 1 <= chunks <= settings.chunks or tmp.stat().st_size != want:
                raise InputError(f"{tmp}: {tmp.stat().st_size} bytes for {chunks} chunk(s), expected {want}")
            return {"kld_base": {"chunks": chunks, "ctx": settings.ctx, "n_vocab": vocab, "size": want,
                                 "reference": str(reference)}}  # fmt: skip

        return Job(step=self.name, label="quality: reference logits", output=ctx.kld_base_path(), tool=tool,
                   inputs={"reference": reference, "text": text},
                   params={"ctx": settings.ctx, "chunks": settings.chunks, "type": "kld-base"},
                   argv=argv, verify=verify)  # fmt: skip

    def _measure(self, ctx: Context, quant: Outcome, base: Outcome) -> Outcome:
        qtype = str(quant.sidecar.get("params", {}).get("type") or quant.output.stem)
        output, tool, settings = ctx.kld_path(qtype), ctx.build.perplexity, settings_of(ctx)
        inputs = {"model": {"path": str(quant.output), "sha256": digest(ctx, quant.output)}}
        params = {"type": qtype, "ctx": settings.ctx}
        key = cache.key({"step": self.name, "version": VERSION, "inputs": {"model": inputs["model"]["sha256"]},
                         "params": params, "base": base.sidecar["key"], "tool": tool_identity(ctx, tool)})  # fmt: skip
        side = None if ctx.force else cache.fresh(output, key)
        if side is not None:
            console.info(f"quality {qtype}: up to date ({output.name})")
            return Outcome(self.name, f"quality {qtype}", output, True, 0.0, side)
        console.step(f"quality {qtype}: KL divergence against {Path(base.sidecar['kld_base']['reference']).name}")
        t0 = time.monotonic()
        m = quality.measure(tool, quant.output, base.output, settings, log=ctx.log_dir / f"{output.name}.log")
        atomic.write_json(output, m.model_dump(mode="json"))
        seconds = time.monotonic() - t0
        sidecar = {"step": self.name, "label": f"quality {qtype}", "key": key,
                   "output": {"path": output.name, **cache.stamp(output)}, "inputs": inputs, "params": params,
                   "base": base.sidecar["key"], "tool": {"path": str(tool), "build_identity": ctx.build.identity},
                   "seconds": round(seconds, 3), "quality": m.model_dump(mode="json"), "quant": str(quant.output)}  # fmt: skip
        cache.write_sidecar(output, sidecar)
        return Outcome(self.name, f"quality {qtype}", output, False, seconds, sidecar)


def settings_of(ctx: Context) -> quality.Settings:
    q = ctx.section.quality
    return quality.Settings(ctx=q.ctx, chunks=q.chunks)


def reference_of(ctx: Context, quants: list[Outcome]) -> Path:
    """The converted file, or the quant of the type ``model.quality.reference`` names."""
    want = ctx.section.quality.reference
    if want is None:
        assert ctx.converted is not None
        return ctx.converted
    for q in quants:
        if str(q.sidecar.get("params", {}).get("type", "")).upper() == want.upper():
            return q.output
    raise InputError(f"model.quality.reference {want} is not one of this run's types",
                     hint="name one of model.quantize.types, or remove the key to use the converted file")
