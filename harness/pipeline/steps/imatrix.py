"""imatrix: ``llama-imatrix`` over the calibration text, on the converted file.

It runs the trunk only: the MTP layers never get importance data, which is why the
quantize step keeps them at ``mtp_type``.  llama-imatrix also prints the perplexity of the
calibration text (``Final estimate: PPL = x``); the sidecar records it.

Both formats llama-quantize reads are accepted, told apart by content
(:mod:`harness.gguf_files.imatrix`): GGUF (``<name>.imatrix.gguf``, today's default) and the
legacy ``.dat`` of older pins and forks (``imatrix.format: dat`` asks for it with
``--output-format dat`` and names the file ``<name>.imatrix.dat``).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, ClassVar

from harness import console
from harness.gguf_files import imatrix as imatrix_file
from harness.pipeline import progress
from harness.pipeline.plan import Context, Outcome
from harness.pipeline.steps.job import Job, execute
from harness.recipe.schema import ModelImatrix

VERSION = 1


class Imatrix:
    name: ClassVar[str] = "imatrix"

    def run(self, ctx: Context) -> list[Outcome]:
        assert ctx.converted is not None
        settings = ctx.section.imatrix or ModelImatrix()
        model, calibration, tool = ctx.converted, ctx.calibration(), ctx.build.imatrix
        output = ctx.imatrix_path()

        fmt = ["--output-format", settings.format] if settings.format else []

        def argv(tmp: Path) -> list[str]:
            return [str(tool), "-m", str(model), "-f", str(calibration), "-o", str(tmp),
                    "--chunks", str(settings.chunks), "-c", str(settings.ctx), *fmt]  # fmt: skip

        def verify(tmp: Path) -> dict[str, Any]:
            found = imatrix_file.read(tmp)
            if settings.format and found.format != settings.format:
                console.warn(f"asked llama-imatrix for {settings.format}, it wrote {found.format}: using it")
            return found.to_json()

        outcome = execute(
            ctx,
            Job(
                step=self.name,
                label="imatrix",
                output=output,
                tool=tool,
                inputs={"model": model, "calibration": calibration},
                params={"chunks": settings.chunks, "ctx": settings.ctx, "format": settings.format},
                argv=argv,
                verify=verify,
                lines=progress.imatrix_lines,
            ),
            version=VERSION,
        )
        ppl = outcome.sidecar.get("ppl")
        if not outcome.skipped and (ppl is None or not math.isfinite(ppl)):
            console.warn(f"llama-imatrix reported no finite perplexity ({ppl}); check {outcome.sidecar.get('log')}")
        ctx.imatrix = outcome.output
        return [outcome]
