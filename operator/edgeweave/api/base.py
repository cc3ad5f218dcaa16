"""Shared pieces of the API models: camelCase wire names, conditions, quantities."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel


class Model(BaseModel):
    """Base for every spec/status model: camelCase on the wire, immutable in code."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        frozen=True,
        extra="forbid",
        use_enum_values=False,
    )

    def wire(self) -> dict[str, Any]:
        """The JSON-ready dict as the API server stores it."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


class StatusModel(Model):
    # Status is written by us and may carry fields added by newer operator versions.
    model_config = ConfigDict(extra="ignore")


class Mode(StrEnum):
    """Whether a plan is carried out or only computed and recorded."""

    Enforce = "Enforce"
    DryRun = "DryRun"


class ConditionStatus(StrEnum):
    TRUE = "True"
    FALSE = "False"
    UNKNOWN = "Unknown"


class Condition(StatusModel):
    """A Kubernetes-style condition (metav1.Condition)."""

    type: str = Field(description="Type of condition in CamelCase, e.g. Ready.")
    status: Literal["True", "False", "Unknown"] = Field(description="True, False or Unknown.")
    reason: str = Field(description="Machine-readable CamelCase reason for the last transition.")
    message: str = Field(default="", description="Human-readable detail.")
    observed_generation: int = Field(default=0, description="metadata.generation this condition was set for.")
    last_transition_time: str = Field(default="", description="When status last changed (RFC 3339).")


RFC3339 = "%Y-%m-%dT%H:%M:%SZ"


def now_rfc3339() -> str:
    return datetime.now(UTC).strftime(RFC3339)


def rfc3339(ts: float) -> str:
    """A Unix time as the API server writes times (UTC, seconds)."""
    return datetime.fromtimestamp(ts, UTC).strftime(RFC3339)


def parse_rfc3339(value: str | None) -> float | None:
    """The Unix time of an RFC 3339 string as we write them, or None when empty or malformed."""
    try:
        return datetime.strptime(value or "", RFC3339).replace(tzinfo=UTC).timestamp()
    except (TypeError, ValueError):
        return None


_QTY = re.compile(r"^([0-9.]+)([a-zA-Z]*)$")
_SUFFIX = {
    "": 1.0, "m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12,
    "Ki": 1024.0, "Mi": 1024.0**2, "Gi": 1024.0**3, "Ti": 1024.0**4,
}


def parse_quantity(q: str | int | float | None) -> float:
    """Parse a Kubernetes resource quantity ('250m', '2Gi', '4') into a float of base units."""
    if q is None:
        return 0.0
    if isinstance(q, int | float):
        return float(q)
    m = _QTY.match(q.strip())
    if not m or m.group(2) not in _SUFFIX:
        raise ValueError(f"not a resource quantity: {q!r}")
    return float(m.group(1)) * _SUFFIX[m.group(2)]
