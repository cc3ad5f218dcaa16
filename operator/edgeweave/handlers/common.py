"""Helpers every handler shares: parse the body into a model, or say clearly why not — once."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, TypeVar

import kopf
from pydantic import BaseModel, ValidationError

from .. import metrics
from ..actuate import events
from ..api.conditions import ConditionType, Reason, get_condition, set_condition

M = TypeVar("M", bound=BaseModel)
log = logging.getLogger("edgeweave.handlers")


def describe_validation_error(err: ValidationError) -> str:
    parts = []
    for e in err.errors()[:5]:
        loc = ".".join(str(p) for p in e["loc"])
        parts.append(f"spec.{loc}: {e['msg']}"[:300])
    return "; ".join(parts)


def invalid_spec(kind: str, status: Mapping[str, Any] | None, generation: int, err: ValidationError | str,
                 involved: dict[str, str], api_client: Any, logger: Any = None) -> dict[str, Any]:
    """The one handling of a spec that does not parse: the status to write (Ready=False/InvalidSpec naming
    the field), the metric, and a Warning Event and a log line only when the fault is new — never a
    traceback or an Event per round.

    Admission rejects almost everything this could catch; this guards objects stored before a CRD
    upgrade tightened the schema, or admitted while the validating webhook was off (`err` is then the
    semantic checks' own message)."""
    message = describe_validation_error(err) if isinstance(err, ValidationError) else err
    conditions = (status or {}).get("conditions")
    old = get_condition(conditions, ConditionType.Ready.value) or {}
    if (old.get("reason"), old.get("message")) != (Reason.InvalidSpec.value, message):
        metrics.INVALID_SPECS.labels(kind).inc()
        events.post(api_client, involved, "Warning", Reason.InvalidSpec.value, message)
        (logger or log).warning("invalid %s spec: %s", kind, message)
    return {"conditions": set_condition(conditions, ConditionType.Ready.value, False, Reason.InvalidSpec.value,
                                        message, generation),
            "observedGeneration": generation}


def parse_spec(model: type[M], kind: str, body: kopf.Body, patch: kopf.Patch, logger: Any) -> M | None:
    """Parse spec inside a kopf handler; on failure the status goes into `patch` and None is returned
    (not raised: that keeps kopf from retrying forever)."""
    try:
        return model.model_validate(dict(body.get("spec") or {}))
    except ValidationError as err:
        from . import kube

        meta = body.get("metadata", {})
        involved = {"apiVersion": body.get("apiVersion", ""), "kind": kind, "name": meta.get("name", ""),
                    "namespace": meta.get("namespace") or "", "uid": meta.get("uid", "")}
        new = invalid_spec(kind, body.get("status") or {}, meta.get("generation", 0), err, involved,
                           kube.api_client(), logger)
        for key, value in new.items():
            patch.status[key] = value
        return None
