"""The pipeline's steps, in the order they run.

Each is a small class with a ``name`` and ``run(ctx) -> list[Outcome]``: it reads what
earlier steps put on the context (``hf_dir``, ``converted``, ``imatrix``), makes its outputs
through :func:`harness.pipeline.steps.job.execute` (skipped when nothing changed) and puts
its own results on the context.  Adding a step is one module and one line here.
"""

from __future__ import annotations

from typing import ClassVar, Protocol

from harness.pipeline.plan import STEP_ORDER, Context, Outcome
from harness.pipeline.steps.convert import Convert
from harness.pipeline.steps.download import Download
from harness.pipeline.steps.draft import Draft
from harness.pipeline.steps.imatrix import Imatrix
from harness.pipeline.steps.quality import Quality
from harness.pipeline.steps.quantize import Quantize


class Step(Protocol):
    name: ClassVar[str]

    def run(self, ctx: Context) -> list[Outcome]: ...


STEPS: dict[str, type[Step]] = {
    Download.name: Download,
    Convert.name: Convert,
    Imatrix.name: Imatrix,
    Quantize.name: Quantize,
    Quality.name: Quality,
    Draft.name: Draft,
}
assert tuple(STEPS) == STEP_ORDER, "plan.STEP_ORDER names the steps in the order they run"
