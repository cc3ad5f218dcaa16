"""The init container that recovers a moved workload's memory region before its application starts.

Added by the admission webhook to the replacement pod of a move (never to the user's Deployment, so
GitOps sees no drift). The report — the last line `edgeweave memory-recover` prints — goes to the
container's termination message, where the operator reads it from the pod status and records it in
the WorkloadGroup's status. Standard Kubernetes, no extra RBAC for the pod.
"""

from __future__ import annotations

import json
import os
import shlex
from typing import Any

from ..api.workloadgroup import MemoryRecovery
from .initcontainer import LAZY_ENV, PRESTAGE_DIR, STORE_MOUNT, TLS_DIR, TOKEN_DIR, recover_command
from .naming import RegionId

INIT_NAME = "edgeweave-memory-recover"
STORE_VOLUME = "edgeweave-baselines"
TOKEN_VOLUME = "edgeweave-memory-token"
SHM_VOLUME = "edgeweave-shm"
TLS_VOLUME = "edgeweave-memory-tls"
TLS_SECRET = "edgeweave-memory-tls"  # the chart's (or cert-manager's) client certificate + CA
PRESTAGE_VOLUME = "edgeweave-prestaged"


def lazy_socket(spec: dict[str, Any]) -> str | None:
    """The socket an app container declares (env EDGEWEAVE_MEMORY_LAZY_SOCKET) it will attach its
    userfaultfd to: it serves before its region is resident. Only a path on the shared /dev/shm counts."""
    for c in spec.get("containers") or []:
        for e in c.get("env") or []:
            v = e.get("value")
            if e.get("name") == LAZY_ENV and isinstance(v, str) and v.startswith("/dev/shm/") and ".." not in v:
                return v
    return None


def recovery_patch(spec: dict[str, Any], settings: MemoryRecovery, region: str, source_host: str | None,
                   image: str, prestage_host_dir: str | None = None) -> dict[str, Any]:
    """initContainers and volumes for the pod spec, with the recovery container first.

    `prestage_host_dir` (default: $EDGEWEAVE_MEMORY_PRESTAGE_HOST_DIR, which the chart sets when the
    agents pre-stage) is the node agents' pre-staged copies: the region's own directory is mounted
    read-only (subPath) and recovery reads it instead of the store when it is the right epoch. It is
    a copy within the node, not an adoption: the pod's /dev/shm is another mount.
    When an app container declares a lazy socket (`lazy_socket`), the recovery runs as a native
    sidecar (restartPolicy Always, Kubernetes >= 1.29): the app starts once the socket listens,
    attaches and serves while the recovery answers its faults and fills the rest; the sidecar then
    idles (its report is in its log; a sidecar has no termination message while it runs).
    """
    if prestage_host_dir is None:
        prestage_host_dir = os.environ.get("EDGEWEAVE_MEMORY_PRESTAGE_HOST_DIR") or None
    lazy = lazy_socket(spec)
    # The old pod (same template) may still be in its grace period when this one starts: wait for its
    # workload to exit first, at most the grace period and a margin (kubelet SIGKILLs it by then).
    grace = spec.get("terminationGracePeriodSeconds")
    wait = (grace if isinstance(grace, int) and grace >= 0 else 30) + 5
    argv = recover_command(settings, region, source_host, local_cache=PRESTAGE_DIR if prestage_host_dir else None,
                           lazy_socket=lazy, wait_owner_exit=wait)
    script = (f"{shlex.join(argv)} > /tmp/recovery.out; rc=$?; cat /tmp/recovery.out; "
              "tail -n 1 /tmp/recovery.out > /dev/termination-log; ")
    script += "[ $rc -eq 0 ] || exit $rc; exec sleep infinity" if lazy else "exit $rc"
    mounts = [{"name": STORE_VOLUME, "mountPath": STORE_MOUNT, "readOnly": True},
              {"name": TOKEN_VOLUME, "mountPath": TOKEN_DIR, "readOnly": True},
              {"name": TLS_VOLUME, "mountPath": TLS_DIR, "readOnly": True},
              {"name": SHM_VOLUME, "mountPath": "/dev/shm"}]
    vols: list[dict[str, Any]] = [
        {"name": STORE_VOLUME, "persistentVolumeClaim": {"claimName": settings.store_claim, "readOnly": True}},
        {"name": TOKEN_VOLUME, "secret": {"secretName": settings.token_secret}},
        {"name": TLS_VOLUME, "secret": {"secretName": TLS_SECRET}},
        {"name": SHM_VOLUME, "emptyDir": {"medium": "Memory"}}]
    if prestage_host_dir:
        # only this region's directory, read-only: the pod sees no other tenant's baselines
        name = RegionId.parse(region).store_name
        mounts.append({"name": PRESTAGE_VOLUME, "mountPath": f"{PRESTAGE_DIR}/{name}", "subPath": name,
                       "readOnly": True})
        vols.append({"name": PRESTAGE_VOLUME, "hostPath": {"path": prestage_host_dir, "type": "Directory"}})
    init: dict[str, Any] = {
        "name": INIT_NAME, "image": image, "command": ["sh", "-c", script],
        "terminationMessagePolicy": "FallbackToLogsOnError", "volumeMounts": mounts,
    }
    if lazy:
        init["restartPolicy"] = "Always"
        init["startupProbe"] = {"exec": {"command": ["test", "-S", lazy]}, "periodSeconds": 1,
                                "failureThreshold": 600}
    volumes = list(spec.get("volumes") or [])
    have = {v.get("name") for v in volumes}
    volumes += [v for v in vols if v["name"] not in have]
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
