"""What each smoke check proved: one small frozen model per check, and :class:`SmokeResults`, the
build manifest's ``smoke`` section (harness/build/manifest.py), read back by the next build's decode
check (its kernel-library digests), nightly's report and the binary cache.

The models live here, beside the checks that return them (``harness/smoke/<check>.py``), and import
nothing of the harness: the manifest sits below the build layer and reads them.  Their version is
the manifest's schema; their JSON is the dicts the checks wrote before they were typed (a key that
was never set stays out of the JSON, so a manifest written before reads and writes back the same).
A section of another shape (a decode result without its types...) fails the manifest's validation:
a clean message naming the key, or a rebuild (manifest.read_or_none).

A new check is its module and one line in harness/smoke/registry.py: until it declares a model here
(and a field of :class:`SmokeResults`), its result is kept as the dict it returns, under its name.
A name the registry does not list is a foreign section.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    RootModel,
    SerializerFunctionWrapHandler,
    model_serializer,
    model_validator,
)

from harness.smoke import registry


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
    """The manifest's ``smoke``: each check that ran, by name (a check not run is left out).  A check
    the registry lists without a model here is kept as its dict (``unmodeled``; in the JSON, under
    its name like the others)."""

    version: VersionResult | None = None
    decode: DecodeResult | Skipped | None = None
    quantize: QuantizeResult | None = None
    serve: ServeResult | None = None
    rpc: RpcResult | Skipped | None = None
    unmodeled: dict[str, dict[str, Any]] = {}

    @model_validator(mode="before")
    @classmethod
    def _gather_unmodeled(cls, data: Any) -> Any:
        """Registered checks without a model go to ``unmodeled``; any other unknown name stays where it
        is and is refused by name (``smoke.NAME``)."""
        if isinstance(data, dict):
            named = {k for k in data if k not in cls.model_fields and k in registry.NAMES}
            if named:
                data = {k: v for k, v in data.items() if k not in named} | {"unmodeled": {k: data[k] for k in named}}
        return data

    @model_serializer(mode="wrap")
    def _flat(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data: dict[str, Any] = handler(self)
        data = {k: v for k, v in data.items() if v is not None or k in self.model_fields_set}
        return {k: v for k, v in data.items() if k != "unmodeled"} | dict(self.unmodeled)

    def names(self) -> set[str]:
        """The checks this build passed."""
        return {name for name, _ in self.items()}

    def items(self) -> list[tuple[str, CheckResult | dict[str, Any]]]:
        """(check, result) of each check that ran, in the registry's order (a check without a model
        here: its dict)."""
        found: list[tuple[str, CheckResult | dict[str, Any]]] = [
            (name, r) for name in type(self).model_fields if name != "unmodeled" and (r := getattr(self, name)) is not None]
        found += list(self.unmodeled.items())
        return sorted(found, key=lambda item: registry.NAMES.index(item[0]))
