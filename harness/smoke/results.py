"""What each smoke check proved: one small frozen model per check, and :class:`SmokeResults`, the
build manifest's ``smoke`` section (harness/build/manifest.py), read back by the next build's decode
check (its kernel-library digests), nightly's report and the binary cache.

The models live here, beside the checks that return them (``harness/smoke/<check>.py``), and import
nothing of the harness: the manifest sits below the build layer and reads them.  Their version is
the manifest's schema; their JSON is the dicts the checks wrote before they were typed (a key that
was never set stays out of the JSON, so a manifest written before reads and writes back the same).
A section of another shape (a decode result without its types...) fails the manifest's validation:
a clean message naming the key, or a rebuild (manifest.read_or_none).

A new check adds its model here and one field to :class:`SmokeResults`.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, RootModel, SerializerFunctionWrapHandler, model_serializer


class _Result(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    @model_serializer(mode="wrap")
    def _set_keys_only(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        """An optional key left unset is left out (``note``, ``skipped``...), as the checks' dicts did."""
        data: dict[str, Any] = handler(self)
        return {k: v for k, v in data.items() if v is not None or k in self.model_fields_set}


class Skipped(_Result):
    """A check with nothing to run on this build (no llama-server, no rpc-server): passed, proving nothing."""

    ok: Literal[True] = True
    skipped: str


# -- version ------------------------------------------------------------------------------------
class TargetVersion(_Result):
    ok: bool
    returncode: int | None  # None: the binary did not start
    version: str  # its "version:" line, or the first line it printed (tools without --version)


class VersionResult(RootModel[dict[str, TargetVersion]]):
    """Per target (``llama-server``...): what ``--version`` printed."""

    model_config = ConfigDict(frozen=True)

    @property
    def ok(self) -> bool:
        return all(v.ok for v in self.root.values())


# -- decode -------------------------------------------------------------------------------------
class DecodedType(_Result):
    """One smoke-model type decoded in one placement."""

    tokens: int
    token_ids: list[int] | None
    probs_checked: bool
    seconds: float
    tokens_per_s: float | None
    note: str | None = None  # "no GPU device found: decoded on the CPU"


class Kernels(_Result):
    """What a full decode proof covers: the sha256 of each kernel library, and the machine it ran on."""

    files: dict[str, str]
    machine: str


class DecodeResult(_Result):
    ok: bool
    decoder: str  # llama-server or llama-completion
    n_predict: int
    types: dict[str, dict[str, DecodedType]]  # llama-quantize type -> placement (cpu, gpu) -> decode
    scope: Literal["full", "rebuild"] | None = None  # rebuild: one type, the kernels already proven
    kernels: Kernels | None = None  # None in a manifest written before the narrowed proof
    note: str | None = None
    features: dict[str, dict[str, str]] = {}  # ggml's system_info line per backend
    cpu_variant: str | None = None  # the all-variants CPU library ggml loaded
    seconds: float


# -- quantize, serve ----------------------------------------------------------------------------
class QuantizeResult(_Result):
    ok: bool
    seconds: float
    tensors: int
    bytes: int
    model: str


class ServeResult(_Result):
    ok: bool
    seconds: float
    content: str
    tokens_per_s: float | None
    model: str


# -- rpc ----------------------------------------------------------------------------------------
class RpcDevice(_Result):
    index: int
    free_mib: int
    total_mib: int


class RpcResult(_Result):
    ok: bool
    protocol: str  # the RPC wire protocol rpc-server answered with
    devices: list[RpcDevice]
    n_predict: int
    local_tokens_per_s: float | None
    rpc_tokens_per_s: float | None
    seconds: float


CheckResult = VersionResult | DecodeResult | QuantizeResult | ServeResult | RpcResult | Skipped


class SmokeResults(_Result):
    """The manifest's ``smoke``: each check that ran, by name (a check not run is left out)."""

    version: VersionResult | None = None
    decode: DecodeResult | Skipped | None = None
    quantize: QuantizeResult | None = None
    serve: ServeResult | None = None
    rpc: RpcResult | Skipped | None = None

    def names(self) -> set[str]:
        """The checks this build passed."""
        return {name for name in type(self).model_fields if getattr(self, name) is not None}

    def items(self) -> list[tuple[str, CheckResult]]:
        """(check, result) of each check that ran, in the registry's order."""
        return [(name, r) for name in type(self).model_fields if (r := getattr(self, name)) is not None]
