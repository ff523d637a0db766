"""The base of every config model: strict about what YAML can silently turn into something else.

pydantic's lax mode reads ``epochs: true`` as 1 and accepts ``lr: .inf``; a benchmark config
must not. `StrictModel` forbids unknown keys, is frozen, refuses NaN and infinities, and
refuses booleans where a number is expected (YAML's ``true``/``yes``/``on``). Plugin params
get the same checks from the registry (`registry.core.value_problem`), whatever base class
their author chose.
"""
from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationInfo, field_validator

from registry.core import value_problem


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    @field_validator("*", mode="before")
    @classmethod
    def _plain_values(cls, value: Any, info: ValidationInfo) -> Any:
        problem = value_problem(cls, info.field_name, value)
        if problem:
            raise ValueError(problem)
        return value
