"""Which servers a bench starts: ``--spec none,mtp,ngram-mod`` times ``--sweep draft-n-max=1..6``.

A mode is one llama-server configuration: ``none`` (no speculation), ``mtp``
(``--spec-type draft-mtp``) or any ``--spec-type`` name, at one draft depth.  The depth
goes to the flag that governs that type (see ``server.DEPTH_FLAGS``); ``none`` and
types without a depth knob run once.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from harness.errors import InputError
from harness.serve import server

SWEEP_KEYS = ("draft-n-max",)


@dataclass(frozen=True)
class Mode:
    name: str  # as the user wrote it: none, mtp, ngram-mod, ...
    types: tuple[str, ...]  # resolved --spec-type values; empty for none
    depth: int | None = None

    @property
    def label(self) -> str:
        return self.name if self.depth is None else f"{self.name}@{self.depth}"

    @property
    def speculative(self) -> bool:
        return bool(self.types)

    def flags(self, draft: Path | None = None) -> list[str]:
        """The llama-server flags of this mode (``-md`` only for draft-model types)."""
        return server.spec_flags(self.types, depth=self.depth, draft=draft if self.needs_model else None)

    @property
    def needs_model(self) -> bool:
        """Whether a draft GGUF applies (``draft-mtp`` may also use the model's own MTP layers)."""
        return any(t.startswith("draft-") for t in self.types)

    def serve_flags(self) -> list[str]:
        """The same mode as ``harness serve`` flags."""
        if not self.types:
            return ["--spec", "none"]
        flags = ["--mtp"] if self.types == ("draft-mtp",) else ["--spec", ",".join(self.types)]
        return flags + (["--draft-n-max", str(self.depth)] if self.depth is not None else [])


def parse_sweep(text: str) -> list[int]:
    """``draft-n-max=1..6`` or ``draft-n-max=1,2,4`` -> the depths."""
    key, sep, values = text.partition("=")
    if not sep:
        raise InputError(f"--sweep {text!r}: expected KEY=VALUES, e.g. draft-n-max=1..6")
    if key not in SWEEP_KEYS:
        close = difflib.get_close_matches(key, SWEEP_KEYS, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise InputError(f"--sweep: cannot sweep {key!r}", hint=f"{hint}sweepable: {', '.join(SWEEP_KEYS)}")
    depths: list[int] = []
    for part in values.split(","):
        m = re.fullmatch(r"\s*(\d+)\s*(?:\.\.\s*(\d+)\s*)?", part)
        if m is None:
            raise InputError(f"--sweep {text!r}: {part!r} is not N or N..M")
        lo, hi = int(m.group(1)), int(m.group(2) or m.group(1))
        if lo < 1 or hi < lo:
            raise InputError(f"--sweep {text!r}: {part!r} is not a range of positive depths")
        depths.extend(d for d in range(lo, hi + 1) if d not in depths)
    return depths


def plan(names: Sequence[str], known: Sequence[str], depths: Sequence[int | None] = (None,)) -> list[Mode]:
    """The modes to run, in order: each name at each depth (once if it has no depth)."""
    modes: list[Mode] = []
    for name in dict.fromkeys(n.strip() for n in names if n.strip()):
        types = tuple(server.resolve_spec(name.split("+"), known))
        runs = depths if types and all(server.depth_applies(t) for t in types) else [None]
        modes.extend(Mode(name, types, d) for d in runs)
    if not any(not m.speculative for m in modes):
        modes.insert(0, Mode("none", ()))  # the baseline every speedup is measured against
    return modes
