"""Kubernetes-style conditions: pure updates that keep lastTransitionTime honest."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from .base import now_rfc3339

MAX_CONDITION_MESSAGE = 1024


def set_condition(
    existing: Iterable[dict[str, Any]] | None,
    ctype: str,
    status: bool | str,
    reason: str,
    message: str = "",
    generation: int = 0,
    now: str | None = None,
) -> list[dict[str, Any]]:
    """Return the conditions with `ctype` set; the transition time moves only when status changes."""
    value = status if isinstance(status, str) else ("True" if status else "False")
    # Bounded: a message built from user input (a selector, an error) must never grow status without limit.
    if len(message) > MAX_CONDITION_MESSAGE:
        message = message[:MAX_CONDITION_MESSAGE - 3] + "..."
    out: list[dict[str, Any]] = []
    found = False
    for cond in existing or []:
        if cond.get("type") != ctype:
            out.append(dict(cond))
            continue
        found = True
        changed = cond.get("status") != value
        out.append({
            "type": ctype, "status": value, "reason": reason, "message": message,
            "observedGeneration": generation,
            "lastTransitionTime": (now or now_rfc3339()) if changed else cond.get("lastTransitionTime", ""),
        })
    if not found:
        out.append({"type": ctype, "status": value, "reason": reason, "message": message,
                    "observedGeneration": generation, "lastTransitionTime": now or now_rfc3339()})
    return out


def get_condition(conditions: Iterable[dict[str, Any]] | None, ctype: str) -> dict[str, Any] | None:
    for cond in conditions or []:
        if cond.get("type") == ctype:
            return cond
    return None
