"""draft: the recipe's draft / assistant model (``draft:``), fetched and audited against the quants.

A Hugging Face draft is downloaded at the revision and file names the lock pins (into the
Hugging Face cache, :mod:`harness.serve.draft`); a local one is used where it is.  It is audited
with ``--target`` the first quant of this run (else the converted file): a draft llama.cpp
would refuse with that model (architecture, hidden width, vocabulary) fails the step.
"""

from __future__ import annotations

import time
from typing import Any, ClassVar

from harness.gguf_files.split import open_model
from harness.pipeline import summary
from harness.pipeline.plan import Context, Outcome
from harness.serve import draft as drafts


class Draft:
    name: ClassVar[str] = "draft"

    def run(self, ctx: Context) -> list[Outcome]:
        t0 = time.monotonic()
        path = drafts.path(ctx.recipe)
        if path is None:
            return []
        quants = [o.output for o in ctx.outcomes if o.step == "quantize" and not o.output.name.startswith("mtp-")]
        target = quants[0] if quants else ctx.converted
        report = drafts.fit(path, target)
        with open_model(path) as gf:
            info = summary.gguf_info(gf)
        spec = ctx.recipe.spec.draft
        assert spec is not None
        sidecar: dict[str, Any] = {
            "step": self.name, **info, "source": spec.source, "file": spec.file,
            "params": {"type": f"draft ({info['gguf']['file_type'] or '?'})"},
            "target": str(target) if target else None, "audit": report.to_json(),
            "spec_type": drafts.spec_type_for(report),
        }  # fmt: skip
        return [Outcome(self.name, "draft", path, False, time.monotonic() - t0, sidecar)]
