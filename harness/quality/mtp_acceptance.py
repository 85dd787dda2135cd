"""Whether a quant kept its MTP heads useful: draft acceptance at depth 1 and 3, temperature 0, fixed prompts.

One real llama-server per depth with ``--spec-type draft-mtp`` (the bench's runner: greedy sampling, a fixed
seed, one slot, no prompt cache), over the bench's built-in prompts, so the figure depends on the model and
the build, not on the machine.  Acceptance is llama-server's own ``draft_n_accepted / draft_n`` summed over
the prompts.  ``flags`` names the depths where a quant accepts less than ``min_ratio`` of the reference's.
"""

from __future__ import annotations

from pathlib import Path

from harness.bench import modes, prompts, runner
from harness.serve import server

DEPTHS = (1, 3)
N_PREDICT = 64
CATEGORIES = ("code", "quote")  # the shortest of the built-in categories that still drafts


def measure(server_bin: Path, model: Path, *, log_dir: Path, depths: tuple[int, ...] = DEPTHS,
            n_predict: int = N_PREDICT, threads: int | None = None) -> dict[str, float | None]:
    """depth (as a string, for JSON) -> acceptance (None: nothing was drafted)."""
    known = server.spec_types(server_bin)
    plan = [m for m in modes.plan(["mtp"], known, depths) if m.speculative]
    known_categories = {p.category for p in prompts.load_suite()}
    suite = prompts.load_suite(categories=[c for c in CATEGORIES if c in known_categories] or None)
    base_args = ["-c", "2048", *(["-t", str(threads)] if threads else [])]
    commands = {mode.label: [*base_args, *mode.flags()] for mode in plan}
    _argvs, samples = runner.run_plan(server_bin, model, commands, plan, suite, runner.Settings(n_predict=n_predict, repeat=1),
                                      log_dir=log_dir)  # fmt: skip
    out: dict[str, float | None] = {}
    for mode in plan:
        mine = [s for s in samples if s.mode == mode.label]
        drafted = sum(s.draft_n for s in mine)
        out[str(mode.depth)] = round(sum(s.draft_n_accepted for s in mine) / drafted, 4) if drafted else None
    return out


def flags(quant: dict[str, float | None], reference: dict[str, float | None], min_ratio: float) -> list[str]:
    """Depths where the quant's acceptance is below ``min_ratio`` x the reference's."""
    low = []
    for depth, ref in reference.items():
        got = quant.get(depth)
        if ref and (got is None or got < ref * min_ratio):
            low.append(f"depth {depth}: {0 if got is None else got:.0%} vs {ref:.0%} for the reference")
    return low
