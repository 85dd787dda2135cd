"""quality: KL divergence of every quant against the reference, by llama-perplexity (:mod:`harness.quality.measure`),
and for a model with MTP layers the heads' draft acceptance at depth 1 and 3 (:mod:`harness.quality.mtp_acceptance`).

The reference is the converted file (BF16/F16, or the GGUF source), or the quant ``quality.reference``
names (e.g. Q8_0).  Its log-probabilities over the evaluation text are one cached output,
``<name>.kld-base.bin`` (keyed by the reference, the text, ctx, chunks and the build); each quant's
figures are another, ``<name>-<TYPE>.kld.json``, keyed by the quant and the base's key (the reference's
MTP acceptance likewise, ``<name>.mtp-reference.json``).  A quant whose heads accept less than
``mtp_min_ratio`` of the reference's is flagged.  The summary shows the figures beside each quant, and
``<name>.quality.png`` draws size against mean KLD.  A build without llama-perplexity (older than this
step) skips it with a warning.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

from harness import atomic, console
from harness.errors import InputError, StepError
from harness.pipeline import cache
from harness.pipeline.plan import Context, Outcome
from harness.pipeline.steps.job import Job, digest, execute, tool_identity
from harness.quality import measure as quality
from harness.quality import mtp_acceptance
from harness.quality import report as quality_report

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
        ref_mtp = None
        if self._wants_mtp(ctx, quants):
            mtp_out = self._cached(ctx, ctx.out / f"{ctx.name}.mtp-reference.json", "quality: reference MTP acceptance",
                                   reference, {"type": "mtp-reference"}, lambda: {"mtp": self._mtp(ctx, reference)})  # fmt: skip
            outcomes.append(mtp_out)
            ref_mtp = mtp_out.sidecar["quality"]["mtp"]
        for q in quants:
            if q.output != reference:
                outcomes.append(self._measure(ctx, q, base, ref_mtp))
        measured = [o for o in outcomes if "mean_kld" in o.sidecar.get("quality", {})]
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
            short = quality.too_few(ctx=settings.ctx, chunks=chunks)
            if short:
                raise StepError(f"{text}: the evaluation text holds only {chunks} chunk(s) of {settings.ctx} "
                                f"tokens: {short}", hint="set model.quality.text to a longer text")  # fmt: skip
            return {"kld_base": {"chunks": chunks, "ctx": settings.ctx, "n_vocab": vocab, "size": want,
                                 "reference": str(reference)}}  # fmt: skip

        return Job(step=self.name, label="quality: reference logits", output=ctx.kld_base_path(), tool=tool,
                   inputs={"reference": reference, "text": text},
                   params={"ctx": settings.ctx, "chunks": settings.chunks, "type": "kld-base"},
                   argv=argv, verify=verify)  # fmt: skip

    def _measure(self, ctx: Context, quant: Outcome, base: Outcome, ref_mtp: dict[str, Any] | None) -> Outcome:
        qtype = str(quant.sidecar.get("params", {}).get("type") or quant.output.stem)
        settings = settings_of(ctx)

        def compute() -> dict[str, Any]:
            log = ctx.log_dir / f"{ctx.kld_path(qtype).name}.log"
            m = quality.measure(ctx.build.perplexity, quant.output, base.output, settings, log=log)
            figures: dict[str, Any] = m.model_dump(mode="json")
            if ref_mtp is not None:
                figures["mtp"] = self._mtp(ctx, quant.output)
                figures["mtp_flags"] = mtp_acceptance.flags(figures["mtp"], ref_mtp, ctx.section.quality.mtp_min_ratio)
                for flag in figures["mtp_flags"]:
                    console.warn(f"{quant.output.name}: its MTP heads accept far less than the reference's ({flag})")
            return figures

        params = {"type": qtype, "ctx": settings.ctx, "base": base.sidecar["key"], "mtp": ref_mtp is not None,
                  "mtp_min_ratio": ctx.section.quality.mtp_min_ratio}  # fmt: skip
        return self._cached(ctx, ctx.kld_path(qtype), f"quality {qtype}", quant.output, params, compute)

    def _cached(self, ctx: Context, output: Path, label: str, model: Path, params: dict[str, Any],
                compute: Callable[[], dict[str, Any]]) -> Outcome:
        """A JSON of figures about ``model``, remade only when the model, the parameters or the build changed."""
        inputs = {"model": {"path": str(model), "sha256": digest(ctx, model)}}
        key = cache.key({"step": self.name, "version": VERSION, "inputs": {"model": inputs["model"]["sha256"]},
                         "params": params, "tool": tool_identity(ctx, ctx.build.perplexity)})  # fmt: skip
        side = None if ctx.force else cache.fresh(output, key)
        if side is not None:
            console.info(f"{label}: up to date ({output.name})")
            return Outcome(self.name, label, output, True, 0.0, side)
        console.step(f"{label}: {model.name}")
        t0 = time.monotonic()
        figures = compute()
        atomic.write_json(output, figures)
        seconds = time.monotonic() - t0
        sidecar = {"step": self.name, "label": label, "key": key, "output": {"path": output.name, **cache.stamp(output)},
                   "inputs": inputs, "params": params, "seconds": round(seconds, 3), "quality": figures,
                   "quant": str(model), "tool": {"build_identity": ctx.build.identity}}  # fmt: skip
        cache.write_sidecar(output, sidecar)
        return Outcome(self.name, label, output, False, seconds, sidecar)

    def _wants_mtp(self, ctx: Context, quants: list[Outcome]) -> bool:
        if not ctx.section.quality.mtp:
            return False
        if not any((q.sidecar.get("gguf") or {}).get("nextn_predict_layers") for q in quants):
            return False
        if not (ctx.build.bin / "llama-server").exists():
            console.warn(f"no llama-server in {ctx.build.bin}: no MTP acceptance for the quants")
            return False
        return True

    def _mtp(self, ctx: Context, model: Path) -> dict[str, float | None]:
        return mtp_acceptance.measure(ctx.build.bin / "llama-server", model, log_dir=ctx.log_dir / f"{model.stem}.mtp")


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
