"""One recipe's night in report.json: :class:`Entry` and its parts, filled in by harness/nightly/run.py
as the night goes and written by harness/nightly/report.py (the night's report, its schema).

Each part is a model: the stack items' rows, the builds by backend, the smoke checks by
``check:backend`` (a passed check's result is its own model, harness/smoke/results.py), the gates and
the bisection.  The JSON holds the keys that were set, as the night's dict did before it was typed.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from harness.bisect.report import Commit, Result
from harness.build.manifest import Stamp
from harness.smoke.results import DecodeResult, QuantizeResult, RpcResult, ServeResult, Skipped


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class Missing(_Model):
    item: str
    detail: str


class MoveRecord(_Model):
    what: str
    old: str | None
    new: str
    gone: bool = False


# -- items: one row per stack item ------------------------------------------------------------
class ItemMove(_Model):
    """A pin that changed or a ref that vanished tonight (harness/nightly/run.py: ``classify_moves``)."""

    status: Literal["moved", "gone"]
    detail: str
    force_push: bool | None = None  # moved: the new head does not descend from the locked one


class ConflictHunk(_Model):
    """harness/source/conflicts.py: ``Hunk.to_json``."""

    start: int
    end: int
    ours: list[str]
    theirs: list[str]
    ours_lines: int
    theirs_lines: int
    ours_more: int
    theirs_more: int


class ConflictFile(_Model):
    path: str
    hunks: list[ConflictHunk]
    message: str = ""


class ItemRow(_Model):
    """A stack item and what became of it tonight (applied, already-merged, moved, conflict, not-tried...)."""

    item: str  # its label (PR #N of repo...)
    kind: str
    ref: str
    repo: str | None
    pin: str
    status: str
    detail: str | None = None
    retired: bool | None = None  # already merged upstream: retired from the lock
    moved: ItemMove | None = None
    files: list[ConflictFile] | None = None  # the conflict's files (status conflict)


# -- builds: by backend --------------------------------------------------------------------------
class BuildIsa(_Model):
    variant: str | None = None
    disabled: dict[str, str] | None = None  # extension -> why
    fallbacks: list[dict[str, Any]] | None = None  # the extensions a crashed decode excluded (the manifest's isa)


class Built(_Model):
    ok: Literal[True] = True
    noop: bool
    identity: str | None = None
    stamp: Stamp
    timings: dict[str, float]
    ninja_steps: int
    log: str | None = None
    isa: BuildIsa | None = None


class BuildFailed(_Model):
    """A backend whose build failed, or that built and failed a smoke check (``smoke_failed``)."""

    ok: Literal[False] = False
    log: str | None = None
    smoke_failed: str | None = None


# -- smoke: by check:backend ---------------------------------------------------------------------
class VersionSummary(_Model):
    """The ``version`` check as the report shows it: one version line per binary."""

    ok: bool
    versions: dict[str, str]


class SmokeFailed(_Model):
    """A check that failed; its other keys are the failure's details (signal, quant type, cause...)."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    ok: Literal[False] = False
    error: str


# a passed check's result is its own model (harness/smoke/results.py)
# the first that fits, in this order (a dict fits anything: a check without a model in harness/smoke/results.py)
SmokeRecord = Annotated[VersionSummary | DecodeResult | QuantizeResult | ServeResult | RpcResult | Skipped | SmokeFailed
                        | dict[str, Any], Field(union_mode="left_to_right")]


# -- gates ---------------------------------------------------------------------------------------
class GateRefusal(_Model):
    """harness/nightly/gates.py: ``Refusal.record``."""

    metric: str
    last_good: float
    candidate: float
    threshold: float
    kind: str | None = None  # (a night written before refusals said their kind and text: the report words them)
    text: str | None = None


class GatesRecord(_Model):
    metrics: dict[str, float]
    last_good: dict[str, Any] | None = None
    # the recipe's limits (None: not set there, or a night written before the gate existed)
    max_kld_increase: float | None = None
    max_mtp_acceptance_drop: float | None = None
    min_tokens_per_s_ratio: float | None = None
    tokens_per_s: dict[str, Any] | None = None  # harness/nightly/gate_speed.py: ``summarize``
    refused: list[GateRefusal] = []


# -- bisect: what the night's culprit hunt found (harness/bisect/run.py: ``for_night``) -----------
class BisectFailed(_Model):
    error: str


class StackCulprit(_Model):
    """The last good stack passes at the new base: the moved stack items broke it, not upstream."""

    culprit: Literal["stack"]
    moved: list[str]
    check: str
    base: Commit
    detail: str


class UpstreamCulprit(Result):
    """The bisection of the upstream range (harness/bisect/report.py), and the items that moved too."""

    moved: list[str] | None = None


NightBisect = UpstreamCulprit | StackCulprit | BisectFailed
NIGHT_BISECT: TypeAdapter[NightBisect] = TypeAdapter(NightBisect)


class Entry(_Model):
    """One recipe's night (harness/nightly/run.py: ``run_recipe`` fills it in as the night goes).
    Its JSON holds the keys that were set, as the night's dict did before it was typed."""

    recipe: str
    path: str | None = None
    status: Literal["passed", "degraded", "failed"]
    failed_step: str | None = None
    error: str | None = None
    adopted: bool = False
    items: list[ItemRow] = Field(default_factory=list)
    missing: list[Missing] = Field(default_factory=list)
    moves: list[MoveRecord] = Field(default_factory=list)
    builds: dict[str, Built | BuildFailed] = Field(default_factory=dict)
    smoke: dict[str, SmokeRecord] = Field(default_factory=dict)  # by check:backend
    old_base: str | None = None
    new_base: str | None = None
    skipped_conflicts: list[str] = Field(default_factory=list)
    gates: GatesRecord | None = None
    bisect: NightBisect | None = None
    seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True, exclude_unset=True)
