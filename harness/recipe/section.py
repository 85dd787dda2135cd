"""The base of every recipe section: unknown keys are errors (with "did you mean", see
harness/recipe/load.py) and a validated section is frozen."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
