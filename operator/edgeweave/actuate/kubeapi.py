"""Typed API errors and read-or-none, for the actuation layer and the handlers above it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")


@dataclass
class ApiError(Exception):
    """An API call that failed, by HTTP status: 404 NotFound, 409 Conflict, 429 TooManyRequests (for an
    eviction: a PodDisruptionBudget forbids it), 413 too large, ..."""

    status: int
    reason: str = ""

    def __str__(self) -> str:
        return f"{self.status} {self.reason}".strip()

    @property
    def not_found(self) -> bool:
        return self.status == 404

    @property
    def conflict(self) -> bool:
        return self.status == 409


def api_error(e: BaseException) -> ApiError | None:
    """The typed form of a kubernetes-client ApiException; None for anything else."""
    from kubernetes.client.exceptions import ApiException

    if isinstance(e, ApiException):
        return ApiError(int(e.status or 0), str(e.reason or ""))
    return None


def read_or_none(fn: Callable[[], T]) -> T | None:
    """A read that returns None on 404 and raises ApiError on any other failure."""
    try:
        return fn()
    except Exception as e:
        err = api_error(e)
        if err is None:
            raise
        if err.not_found:
            return None
        raise err from e
