"""The init container that recovers a moved workload's memory region before its application starts.

Added by the admission webhook to the replacement pod of a move (never to the user's Deployment, so
GitOps sees no drift). The report — the last line `edgeweave memory-recover` prints — goes to the
container's termination message, where the operator reads it from the pod status and records it in
the WorkloadGroup's status. Standard Kubernetes, no extra RBAC for the pod.
"""

from __future__ import annotations

import json
import shlex
from typing import Any

from ..api.workloadgroup import MemoryRecovery
from .initcontainer import STORE_MOUNT, TLS_DIR, TOKEN_DIR, recover_command

INIT_NAME = "edgeweave-memory-recover"
STORE_VOLUME = "edgeweave-baselines"
TOKEN_VOLUME = "edgeweave-memory-token"
SHM_VOLUME = "edgeweave-shm"
TLS_VOLUME = "edgeweave-memory-tls"
TLS_SECRET = "edgeweave-memory-tls"  # the chart's (or cert-manager's) client certificate + CA


def recovery_patch(spec: dict[str, Any], settings: MemoryRecovery, region: str, source_host: str | None,
                   image: str) -> dict[str, Any]:
    """initContainers and volumes for the pod spec, with the recovery container first."""
    argv = recover_command(settings, region, source_host)
    script = (f"{shlex.join(argv)} > /tmp/recovery.out; rc=$?; cat /tmp/recovery.out; "
              "tail -n 1 /tmp/recovery.out > /dev/termination-log; exit $rc")
    init = {
        "name": INIT_NAME, "image": image, "command": ["sh", "-c", script],
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "volumeMounts": [{"name": STORE_VOLUME, "mountPath": STORE_MOUNT, "readOnly": True},
                         {"name": TOKEN_VOLUME, "mountPath": TOKEN_DIR, "readOnly": True},
                         {"name": TLS_VOLUME, "mountPath": TLS_DIR, "readOnly": True},
                         {"name": SHM_VOLUME, "mountPath": "/dev/shm"}],
    }
    volumes = list(spec.get("volumes") or [])
    have = {v.get("name") for v in volumes}
    for vol in ({"name": STORE_VOLUME, "persistentVolumeClaim": {"claimName": settings.store_claim, "readOnly": True}},
                {"name": TOKEN_VOLUME, "secret": {"secretName": settings.token_secret}},
                {"name": TLS_VOLUME, "secret": {"secretName": TLS_SECRET}},
                {"name": SHM_VOLUME, "emptyDir": {"medium": "Memory"}}):
        if vol["name"] not in have:
            volumes.append(vol)
    inits = [c for c in spec.get("initContainers") or [] if c.get("name") != INIT_NAME]
    return {"initContainers": [init, *inits], "volumes": volumes}


def recovery_report(pod_status: dict[str, Any] | None) -> dict[str, Any] | None:
    """The recovery report from the init container's termination message, if it has finished."""
    for cs in (pod_status or {}).get("initContainerStatuses") or []:
        if cs.get("name") != INIT_NAME:
            continue
        message = ((cs.get("state") or {}).get("terminated") or {}).get("message") or ""
        try:
            report = json.loads(message.strip().splitlines()[-1])
        except (ValueError, IndexError):
            return None
        return report if isinstance(report, dict) else None
    return None
