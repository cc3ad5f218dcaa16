"""Events on the objects we act on, posted through the API (works inside and outside kopf handlers)."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

import kopf

log = logging.getLogger(__name__)
COMPONENT = "edgeweave"


def normal(obj: Any, reason: str, message: str) -> None:
    """On a kopf body (our own resources): kopf posts it, whatever the posting level."""
    kopf.event(obj, type="Normal", reason=reason, message=message)


def warning(obj: Any, reason: str, message: str) -> None:
    kopf.event(obj, type="Warning", reason=reason, message=message)


def post(api_client: Any, involved: dict[str, str], etype: str, reason: str, message: str) -> None:
    """An Event on any object (pods we evict or create, nodes we taint). Never raises: an Event that
    cannot be posted must not fail the action it describes."""
    from kubernetes import client

    namespace = involved.get("namespace") or "default"
    now = datetime.now(UTC)
    body = client.CoreV1Event(
        metadata=client.V1ObjectMeta(generate_name=f"{involved.get('name', 'obj')}.", namespace=namespace),
        # V1ObjectReference takes snake_case keywords; the refs here use the wire's camelCase.
        involved_object=client.V1ObjectReference(**{"api_version" if k == "apiVersion" else k: v
                                                    for k, v in involved.items() if v}),
        reason=reason, message=message[:1024], type=etype,
        first_timestamp=now, last_timestamp=now, count=1,
        source=client.V1EventSource(component=COMPONENT), reporting_component=COMPONENT,
        reporting_instance=COMPONENT,
    )
    try:
        client.CoreV1Api(api_client).create_namespaced_event(namespace, body)
    except Exception as e:  # noqa: BLE001
        log.warning("could not post event %s on %s: %s", reason, involved, e)


def pod_ref(namespace: str, name: str, uid: str | None = None) -> dict[str, str]:
    return {"apiVersion": "v1", "kind": "Pod", "namespace": namespace, "name": name, "uid": uid or ""}


def node_ref(name: str) -> dict[str, str]:
    return {"apiVersion": "v1", "kind": "Node", "name": name, "namespace": "default"}
