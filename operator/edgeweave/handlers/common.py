"""Helpers every handler shares: parse the body into a model, or say clearly why not."""

from __future__ import annotations

from typing import Any, TypeVar

import kopf
from pydantic import BaseModel, ValidationError

from .. import metrics
from ..actuate import events
from ..api.conditions import set_condition

M = TypeVar("M", bound=BaseModel)


def describe_validation_error(err: ValidationError) -> str:
    parts = []
    for e in err.errors()[:5]:
        loc = ".".join(str(p) for p in e["loc"])
        parts.append(f"spec.{loc}: {e['msg']}")
    return "; ".join(parts)


def parse_spec(model: type[M], kind: str, body: kopf.Body, patch: kopf.Patch, logger: Any) -> M | None:
    """Parse spec; on failure set Ready=False/InvalidSpec, post a Warning Event and return None.

    Admission rejects almost everything this could catch; this guards objects stored before a CRD
    upgrade tightened the schema. Returning None (not raising) keeps kopf from retrying forever.
    """
    try:
        return model.model_validate(dict(body.get("spec") or {}))
    except ValidationError as err:
        message = describe_validation_error(err)
        metrics.INVALID_SPECS.labels(kind).inc()
        generation = body.get("metadata", {}).get("generation", 0)
        patch.status["conditions"] = set_condition(
            body.get("status", {}).get("conditions"), "Ready", False, "InvalidSpec", message, generation)
        patch.status["observedGeneration"] = generation
        events.warning(body, "InvalidSpec", message)
        logger.warning("invalid %s spec: %s", kind, message)
        return None


def apply_status(body: kopf.Body, patch: kopf.Patch, new: dict[str, Any]) -> bool:
    """Patch only the status fields that changed, so a periodic reconcile of a steady object is silent."""
    current = body.get("status", {}) or {}
    changed = False
    for key, value in new.items():
        if current.get(key) != value:
            patch.status[key] = value
            changed = True
    return changed
