"""quantize: one ``llama-quantize`` run per type, MTP-aware, each output audited.

The converted file's MTP layers (from its sidecar: ``block_count``, ``nextn_predict_layers``)
get a ``--tensor-type`` rule at ``mtp_type`` ahead of the recipe's own rules (see
:mod:`harness.pipeline.rules`).  Before an output is published it must parse, keep every
MTP tensor its metadata promises (``harness gguf audit``) and keep the input's MTP layer
count; MTP matrices that did not get ``mtp_type`` are reported.  With
``convert.mtp: separate`` the MTP head is quantized on its own to ``mtp_type`` (``--pure``).
A split input is one model; with ``quantize.keep_split`` llama-quantize writes the quant in the
same shards (``--keep-split``), otherwise as one file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from harness import console
from harness.errors import CommandFailed, StepError
from harness.gguf_files import audit, mtp
from harness.gguf_files.split import open_model
from harness.pipeline import progress, rules, summary
from harness.pipeline.plan import Context, Outcome
from harness.pipeline.steps.job import Job, execute

VERSION = 1
PASSING = audit.PASSING | {"no-mtp-heads"}  # no heads promised: nothing can be missing


class Quantize:
    name: ClassVar[str] = "quantize"

    def run(self, ctx: Context) -> list[Outcome]:
        assert ctx.converted is not None
        source = _gguf_of(ctx, ctx.converted)
        layout = mtp.Layout(source["architecture"], source["block_count"], source["nextn_predict_layers"], True)
        q = ctx.section.quantize
        type_rules = rules.tensor_type_rules(layout, q.mtp_type, q.tensor_types)
        outcomes = [execute(ctx, self._job(ctx, t, layout, type_rules), version=VERSION) for t in ctx.types]
        if ctx.mtp_head is not None and q.mtp_type is not None:
            head = _gguf_of(ctx, ctx.mtp_head)
            head_layout = mtp.Layout(head["architecture"], head["block_count"], head["nextn_predict_layers"], True)
            outcomes.append(execute(ctx, self._head_job(ctx, q.mtp_type, head_layout), version=VERSION))
        return outcomes

    def _job(self, ctx: Context, qtype: str, layout: mtp.Layout, type_rules: list[str]) -> Job:
        assert ctx.converted is not None
        model, tool, imx = ctx.converted, ctx.build.quantize, ctx.imatrix
        requant = ctx.section.convert.outtype == "q8_0"
        mtp_type = ctx.section.quantize.mtp_type
        output = ctx.quant_path(qtype)

        keep_split = ctx.section.quantize.keep_split

        def argv(tmp: Path) -> list[str]:
            extra = ["--allow-requantize"] if requant else []
            if keep_split:
                extra.append("--keep-split")
            if imx is not None:
                extra += ["--imatrix", str(imx)]
            return [str(tool), *extra, *rules.argv(type_rules), str(model), str(tmp), qtype]

        def verify(tmp: Path) -> dict[str, Any]:
            return _verify(tmp, output, layout, mtp_type if layout.nextn else None)

        inputs = {"model": model, **({"imatrix": imx} if imx is not None else {})}
        return Job(
            step=self.name,
            label=f"quantize {qtype}",
            output=output,
            tool=tool,
            inputs=inputs,
            params={
                "type": qtype,
                "tensor_type_rules": type_rules,
                "imatrix": imx is not None,
                "allow_requantize": requant,
                "keep_split": keep_split,
            },
            argv=argv,
            verify=verify,
            lines=progress.quantize_lines,
            on_failure=_explain,
        )

    def _head_job(self, ctx: Context, mtp_type: str, layout: mtp.Layout) -> Job:
        assert ctx.mtp_head is not None
        model, tool = ctx.mtp_head, ctx.build.quantize
        ftype = mtp_type.upper()
        output = ctx.mtp_quant_path(ftype)

        def argv(tmp: Path) -> list[str]:
            return [str(tool), "--pure", str(model), str(tmp), ftype]

        return Job(
            step=self.name,
            label=f"quantize MTP head {ftype}",
            output=output,
            tool=tool,
            inputs={"model": model},
            params={"type": ftype, "pure": True, "part": "mtp-head"},
            argv=argv,
            verify=lambda tmp: _verify(tmp, output, layout, mtp_type),
            lines=progress.quantize_lines,
            on_failure=_explain,
        )


def _gguf_of(ctx: Context, path: Path) -> dict[str, Any]:
    """The GGUF facts the convert step recorded (read from the file when its sidecar lacks them)."""
    for o in ctx.outcomes:
        if o.output == path and isinstance(o.sidecar.get("gguf"), dict):
            return dict(o.sidecar["gguf"])
    with open_model(path) as gf:
        return dict(summary.gguf_info(gf)["gguf"])


def _verify(tmp: Path, output: Path, layout: mtp.Layout, mtp_type: str | None) -> dict[str, Any]:
    with open_model(tmp) as gf:
        info = summary.gguf_info(gf)
        report = audit.audit(gf)
        out_layout = mtp.layout(gf)
        mismatched = rules.mtp_type_mismatches(gf, out_layout, mtp_type) if mtp_type else []
    if report.status not in PASSING:
        raise StepError(
            f"{output.name}: MTP tensors missing after quantizing ({report.status}): " + "; ".join(report.problems),
            hint="the file was not published; the previous output (if any) is untouched",
        )
    if out_layout.nextn != layout.nextn or out_layout.block_count != layout.block_count:
        raise StepError(
            f"{output.name}: llama-quantize changed the layout: block_count {layout.block_count} -> "
            f"{out_layout.block_count}, nextn_predict_layers {layout.nextn} -> {out_layout.nextn}"
        )
    if mismatched:
        console.warn(f"{output.name}: MTP matrices not at {mtp_type} (llama-quantize fell back): " + ", ".join(mismatched[:8]))
    return {**info, "audit": report.status, "mtp_type": mtp_type, "mtp_type_mismatches": mismatched}


def _explain(exc: CommandFailed) -> Exception:
    tail = exc.output_tail
    if "Missing importance matrix" in tail or "requires an imatrix" in tail or "requires an importance matrix" in tail:
        return StepError(
            f"{exc}",
            hint="this type needs importance data for every quantized tensor: give the recipe a model.imatrix "
            "section, and keep model.quantize.mtp_type set (MTP layers never get importance data)",
        )
    return exc
