"""Prove that steering is live before evicting anything.

A server-side dry-run create of a probe pod goes through the same admission chain as a controller's
replacement, webhooks included, and persists nothing. The probe registers a target for a made-up owner,
creates the pod (dryRun=All) with that owner as its controller, and checks that the pod comes back with
the steering patch. Webhook off, down, not reachable, or not selecting this namespace: no patch, not live.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

from .steering import STEERED_ANNOTATION, SteeringTable

log = logging.getLogger(__name__)

PROBE_OWNER_NAME = "edgeweave-steering-probe"
PROBE_NODE = "edgeweave-steering-probe"
PROBE_PREFIX = "probe-"


def probe_manifest(namespace: str, owner_uid: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"generateName": f"{PROBE_OWNER_NAME}-", "namespace": namespace,
                     "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": PROBE_OWNER_NAME,
                                          "uid": owner_uid, "controller": True}]},
        "spec": {"containers": [{"name": "probe", "image": "registry.invalid/edgeweave-probe:0"}],
                 "automountServiceAccountToken": False},
    }


def was_steered(pod: dict[str, Any], move_id: str) -> bool:
    annotations = (pod.get("metadata") or {}).get("annotations") or {}
    if annotations.get(STEERED_ANNOTATION) != move_id:
        return False
    terms = (((pod.get("spec") or {}).get("affinity") or {}).get("nodeAffinity") or {}).get(
        "requiredDuringSchedulingIgnoredDuringExecution", {}).get("nodeSelectorTerms", [])
    return any(PROBE_NODE in (e.get("values") or []) for t in terms for e in t.get("matchExpressions", []))


def probe_steering(api_client: Any, namespace: str, steering: SteeringTable) -> tuple[bool, str]:
    """(live, why not). Never raises: an error is 'not live', with the error as the reason."""
    from kubernetes import client

    move_id = f"{PROBE_PREFIX}{uuid.uuid4().hex[:8]}"
    owner = f"ReplicaSet/{PROBE_OWNER_NAME}"
    steering.register(namespace, owner, PROBE_NODE, move_id, ttl=30)
    try:
        import json

        raw = client.CoreV1Api(api_client).create_namespaced_pod(
            namespace, probe_manifest(namespace, str(uuid.uuid4())), dry_run="All", _preload_content=False)
        pod = json.loads(raw.data)
    except Exception as e:  # noqa: BLE001 - any failure means we cannot prove steering
        log.debug("steering probe in %s failed: %s", namespace, e)
        return False, f"the steering probe could not be created: {getattr(e, 'reason', e)}"
    finally:
        steering.release(namespace, owner, move_id)
    if was_steered(pod, move_id):
        return True, ""
    return False, ("a dry-run replacement came back without the steering patch: the admission webhook is off, "
                   "down or does not select this namespace (start the operator with --webhook-port, or enable "
                   "the webhook in the chart)")
