"""A fix for kopf with several operators of one kind scoped to different namespaces (installed by `main`).

kopf's finalizer has one name for every operator of a kind. An operator with no handler for an object
(our `--namespace` scope is a `when=` filter: every object of the kind is seen, only some are acted on)
takes the finalizer off that object at its next event: "no handlers requiring it". So an operator scoped
to `team-a-*` stripped the finalizer from a group in `team-b` whose own operator had just put it there,
and a deletion could then go through without the group's delete handler (the one that releases its
breach-taint claims and pre-stage lists) ever running: the claim outlived its group. Seen in the
remediation tests, where a test's operator for its own namespace runs beside the session's operator.

The fix: an operator never takes the finalizer off an object outside its scope; that object's own
operator does, after its delete handler ran. Objects in scope, and cluster-scoped ones (EdgeSites), are
handled exactly as before. `tests/unit/handlers/test_finalizer_scope.py`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from kopf._cogs.structs import finalizers

ORIGINAL = finalizers.allow_deletion
_INSTALLED = False


def scoped_allow_deletion(in_scope: Callable[[str | None], bool]) -> Callable[..., None]:
    def allow_deletion(body: Any, finalizer: str) -> None:
        namespace = (body.get("metadata") or {}).get("namespace")
        if namespace and not in_scope(namespace):
            return  # not ours to release: its own operator removes the finalizer after its delete handler
        ORIGINAL(body, finalizer)
    return allow_deletion


def install() -> None:
    """Idempotent. kopf looks the function up at each use (`finalizers.allow_deletion`), so replacing the
    module attribute is enough."""
    global _INSTALLED
    if _INSTALLED:
        return
    from .state import in_scope

    finalizers.allow_deletion = scoped_allow_deletion(lambda ns: in_scope(ns))  # type: ignore[assignment]
    _INSTALLED = True
