"""convert: the checkpoint -> GGUF with the build's own ``convert_hf_to_gguf.py``.

``model.convert.mtp``:

- ``keep`` (default): one file with the MTP layers (``<arch>.nextn_predict_layers`` > 0,
  ``block_count`` counting them);
- ``drop``: ``--no-mtp``: no MTP tensors, ``block_count`` is the trunk's;
- ``separate``: the ``--no-mtp`` file plus ``--mtp``, an MTP-only head (the layers with
  ``token_embd``/``output_norm``) that llama-server loads as a draft with ``-md``.

A checkpoint without MTP layers converts without either flag (the converter refuses them
for architectures that have none).  ``split_max_size`` / ``split_max_tensors`` pass the
converter's own ``--split-max-size`` / ``--split-max-tensors``: the output is then a split
set (``<name>-<OUTTYPE>-00001-of-0000N.gguf`` ...), read as one model by every later step.
Every output is audited (as a whole set) before it is published.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from harness import console
from harness.errors import CommandFailed, StepError
from harness.gguf_files import audit
from harness.gguf_files.split import open_model
from harness.pipeline import progress, summary
from harness.pipeline.plan import Context, Outcome
from harness.pipeline.steps.job import Job, execute

VERSION = 1
BROKEN = frozenset({"heads-dropped", "incomplete", "inconsistent"})


class Convert:
    name: ClassVar[str] = "convert"

    def run(self, ctx: Context) -> list[Outcome]:
        if ctx.source.gguf:
            return [self._gguf_source(ctx)]
        assert ctx.hf_dir is not None and ctx.checkpoint is not None
        mode = ctx.section.convert.mtp
        has_mtp = ctx.checkpoint.mtp_layers > 0
        if mode != "keep" and not has_mtp:
            console.warn(f"convert.mtp is {mode}, but {ctx.hf_dir} has no MTP layers: converting it as it is")
        parts: list[tuple[str, Path, list[str]]] = []
        if not has_mtp or mode == "keep":
            parts.append(("main", ctx.converted_path(), []))
        else:
            parts.append(("main", ctx.converted_path(), ["--no-mtp"]))
            if mode == "separate":
                parts.append(("mtp-head", ctx.mtp_head_path(), ["--mtp"]))
        outcomes = [execute(ctx, self._job(ctx, part, out, flags, has_mtp), version=VERSION) for part, out, flags in parts]
        ctx.converted = outcomes[0].output
        ctx.mtp_head = outcomes[1].output if len(outcomes) > 1 else None
        return outcomes

    def _gguf_source(self, ctx: Context) -> Outcome:
        """A GGUF source is the converted model: checked (as a whole set) and used where it is."""
        assert ctx.source.path is not None
        conv = ctx.section.convert
        if conv.mtp != "keep" or conv.split_max_size or conv.split_max_tensors:
            console.warn("model.convert settings do not apply to a GGUF source: it is used as it is")
        with open_model(ctx.source.path) as gf:
            info = summary.gguf_info(gf)
            report = audit.audit(gf)
            first = gf.path
        if report.status in BROKEN:
            raise StepError(f"the GGUF source {first.name} fails the MTP audit ({report.status}): " + "; ".join(report.problems))
        console.info(f"convert: using the GGUF source {first} ({len(info['gguf']['shards'])} file(s))")
        ctx.converted, ctx.mtp_head = first, None
        return Outcome(self.name, "source GGUF", first, True, 0.0, {**info, "audit": report.status})

    def _job(self, ctx: Context, part: str, output: Path, flags: list[str], has_mtp: bool) -> Job:
        assert ctx.hf_dir is not None and ctx.checkpoint is not None
        hf_dir, outtype, build = ctx.hf_dir, ctx.section.convert.outtype, ctx.build
        converter = ctx.build.converter
        expect_mtp = has_mtp and "--no-mtp" not in flags

        conv = ctx.section.convert
        split = [*(["--split-max-size", conv.split_max_size] if conv.split_max_size else []),
                 *(["--split-max-tensors", str(conv.split_max_tensors)] if conv.split_max_tensors else [])]  # fmt: skip

        def argv(tmp: Path) -> list[str]:
            return [build.converter_python(), str(converter), str(hf_dir), "--outfile", str(tmp), "--outtype", outtype, *flags, *split]

        def verify(tmp: Path) -> dict[str, Any]:
            with open_model(tmp) as gf:
                info = summary.gguf_info(gf)
                report = audit.audit(gf)
            nextn = info["gguf"]["nextn_predict_layers"]
            if report.status in BROKEN:
                raise StepError(f"converted {output.name} fails the MTP audit ({report.status}): " + "; ".join(report.problems))
            if "--no-mtp" in flags and nextn:
                raise StepError(f"--no-mtp left nextn_predict_layers = {nextn} in {output.name}")
            if expect_mtp and not nextn:
                console.warn(
                    f"{hf_dir.name} has {ctx.checkpoint.mtp_layers if ctx.checkpoint else '?'} MTP layer(s) but this "
                    f"converter wrote none into {output.name} (no MTP export for {info['gguf']['architecture']}?)"
                )
            return {**info, "audit": report.status}

        return Job(
            step=self.name,
            label=f"convert {outtype}" + ("" if part == "main" else f" ({part})"),
            output=output,
            tool=converter,
            inputs={"checkpoint": hf_dir},
            params={"outtype": outtype, "mtp": ctx.section.convert.mtp, "part": part, "flags": flags, "split": split},
            extra_key={"python": build.converter_python_key()},
            argv=argv,
            verify=verify,
            lines=progress.convert_lines,
            total=ctx.checkpoint.tensors,
            on_failure=_explain,
        )


def _explain(exc: CommandFailed) -> Exception:
    tail = exc.output_tail
    if "No module named" in tail or "ModuleNotFoundError" in tail:
        from harness.build.needs import CONVERT_INSTALL

        return StepError(
            f"the converter's Python ({exc.argv[0]}) lacks a module it needs\n{exc}",
            hint="the harness makes the converter's venv from the tree's requirements/; a build published "
            "without them, or model.python / --python, uses the interpreter given: give one with torch, transformers, "
            f"sentencepiece and safetensors ({CONVERT_INSTALL})",
        )
    return exc
