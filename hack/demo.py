#!/usr/bin/env python3
"""The demo on the real nodes: a TCP client/server pair (hack/images/demo.c) that edgeweave co-locates.

The pair starts split (a soft anti-affinity, as a user might write it), the client's own exporter counts
the bytes it had acknowledged as `edgeweave_flow_bytes_total{source_workload,destination_workload,
namespace}`, Prometheus scrapes the pods it finds through the API server, and the WorkloadGroup lets the
operator discover the dependency and move one pod. Used by tests/realnode, bench/realnode and `make run`.

  demo.py manifests [NAMESPACE] [--gpujob]   -> a kubectl-applyable JSON List (--gpujob: also a GpuJob
                                               on the CPU runtime, which needs the edgeweave image)
Stdlib only.
"""

from __future__ import annotations

import json
import sys

GROUP_LABEL = "edgeweave.io/group"
REAL_LABEL = "edgeweave.io/real-node"
IMAGE = "edgeweave.local/demo:dev"
METRICS_PORT = 9100
SERVER_PORT = 7000


def _pod_spec(role: str, avoid: str | None, env: dict[str, str], cpu: str) -> dict:
    spec: dict = {
        "nodeSelector": {REAL_LABEL: "true"},
        "terminationGracePeriodSeconds": 2,
        "dnsPolicy": "Default",  # no cluster DNS here: the client finds the server through Service env vars
        "enableServiceLinks": True,
        "containers": [{
            "name": role, "image": IMAGE, "imagePullPolicy": "Never", "args": [role],
            "env": [{"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
                    *({"name": k, "value": v} for k, v in env.items())],
            "ports": [{"name": "metrics", "containerPort": METRICS_PORT}],
            "readinessProbe": {"tcpSocket": {"port": METRICS_PORT}, "periodSeconds": 1},
            "resources": {"requests": {"cpu": cpu, "memory": "16Mi"}, "limits": {"memory": "64Mi"}},
        }],
    }
    if role == "server":
        spec["containers"][0]["ports"].append({"name": "demo", "containerPort": SERVER_PORT})
    if avoid:
        spec["affinity"] = {"podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
            {"weight": 100, "podAffinityTerm": {"topologyKey": "kubernetes.io/hostname",
                                                 "labelSelector": {"matchLabels": {"app": avoid}}}}]}}
    return spec


def deployment(name: str, role: str, group: str, *, replicas: int = 1, avoid: str | None = None,
               env: dict[str, str] | None = None, cpu: str = "100m") -> dict:
    """`avoid`: an app this one prefers not to share a node with (soft); several replicas also spread."""
    labels = {"app": name, GROUP_LABEL: group}
    return {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "labels": labels},
        "spec": {"replicas": replicas, "selector": {"matchLabels": labels},
                 "template": {"metadata": {"labels": labels, "annotations": {
                     "prometheus.io/scrape": "true", "prometheus.io/port": str(METRICS_PORT)}},
                     "spec": _pod_spec(role, avoid, env or {}, cpu)}},
    }


def service(name: str, app: str) -> dict:
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
            "spec": {"selector": {"app": app}, "ports": [{"name": "demo", "port": SERVER_PORT,
                                                           "targetPort": SERVER_PORT}]}}


def workload_group(name: str, *, resync: int = 5, mode: str = "Enforce", replicas_per_device: int | None = None) -> dict:
    """`replicas_per_device`: how many replicas of one workload aggregation may put on one device (the
    default, 1, keeps two server replicas apart; 2 lets the remote one join the client)."""
    aggregation: dict = {"gainThreshold": 0.2, "cooldownSeconds": 600}
    if replicas_per_device is not None:
        aggregation["spread"] = {"maxReplicasPerDevice": replicas_per_device}
    return {"apiVersion": "edgeweave.io/v1alpha1", "kind": "WorkloadGroup", "metadata": {"name": name},
            "spec": {"selector": {GROUP_LABEL: name}, "mode": mode,
                     "telemetry": {"resyncSeconds": resync, "maxAgeSeconds": 60},
                     "aggregation": aggregation}}


def pdb(name: str, app: str, min_available: int = 1) -> dict:
    return {"apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": {"name": name},
            "spec": {"minAvailable": min_available, "selector": {"matchLabels": {"app": app}}}}


def pair(group: str = "demo", *, client_replicas: int = 1, server_replicas: int = 1) -> list[dict]:
    """Server first (it is what the client avoids), its Service, then the client. The client reaches the
    server through the Service (kube-proxy on every real node), so a moved server is found again. With
    several server replicas they spread over the nodes and a PDB keeps one serving through a move."""
    server = deployment("demo-server", "server", group, replicas=server_replicas,
                        avoid="demo-server" if server_replicas > 1 else None)
    return [
        server,
        *([pdb("demo-server", "demo-server")] if server_replicas > 1 else []),
        service("demo-server", "demo-server"),
        deployment("demo-client", "client", group, replicas=client_replicas, avoid="demo-server",
                   env={"SOURCE_WORKLOAD": "demo-client", "DESTINATION_WORKLOAD": "demo-server",
                        "INTERVAL_MS": "20", "REQUEST_BYTES": "32768"}),
    ]


VGPU_RESOURCE = "edgeweave.io/vgpu"  # what hack/realnodes.py advertises on each real node
EDGEWEAVE_IMAGE = "edgeweave.local/edgeweave:dev"


def gpujob(name: str = "demo-slices") -> list[dict]:
    """A GpuJob whose slice pods run the CPU runtime in the edgeweave image on the real nodes, and the
    Role that lets its pods report finished slices on themselves (slice_report patches its own pod)."""
    return [
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": {"name": "slice-report"},
         "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "patch"]}]},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": {"name": "slice-report"},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "slice-report"},
         "subjects": [{"kind": "ServiceAccount", "name": "default"}]},
        {"apiVersion": "edgeweave.io/v1alpha1", "kind": "GpuJob", "metadata": {"name": name},
         "spec": {"kernel": {"builtin": "saxpy", "problemSize": 1 << 20}, "grid": [4096], "block": [256],
                  "vgpu": {"resource": VGPU_RESOURCE, "count": 2}, "image": EDGEWEAVE_IMAGE}},
    ]


LOSS_FROM_AGENT = "100 * (1 - edgeweave_agent_uplink_up)"  # an uplink without carrier loses everything


def uplink_drill(group: str = "pay") -> list[dict]:
    """The server of `group` and a client in no group that talks to it through the Service from another
    node (it avoids the server), for the uplink-loss drill."""
    return [deployment("demo-server", "server", group), service("demo-server", "demo-server"),
            deployment("demo-client", "client", "none", avoid="demo-server",
                       env={"SOURCE_WORKLOAD": "demo-client", "DESTINATION_WORKLOAD": "demo-server",
                            "INTERVAL_MS": "20", "REQUEST_BYTES": "4096"})]


def uplink_group(group: str = "pay", uplink: str = "inet") -> dict:
    """A WorkloadGroup whose pods need `uplink` to lose at most 10 % (grace 0: remediate at once)."""
    return {"apiVersion": "edgeweave.io/v1alpha1", "kind": "WorkloadGroup", "metadata": {"name": group},
            "spec": {"selector": {GROUP_LABEL: group}, "aggregation": {"enabled": False},
                     "telemetry": {"resyncSeconds": 5, "maxAgeSeconds": 30},
                     "requirements": [{"element": "UplinkLossPercent", "uplink": uplink, "operator": "Lte",
                                       "value": "10", "gracePeriodSeconds": 0}]}}


def manifests(namespace: str = "edgeweave-demo", *, with_gpujob: bool = False) -> dict:
    items = [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}}]
    for obj in [*pair(), workload_group("demo"), *(gpujob() if with_gpujob else [])]:
        items.append({**obj, "metadata": {**obj["metadata"], "namespace": namespace}})
    return {"apiVersion": "v1", "kind": "List", "items": items}


if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] != "manifests":
        raise SystemExit(__doc__)
    args = [a for a in sys.argv[2:] if a != "--gpujob"]
    print(json.dumps(manifests(*args[:1], with_gpujob="--gpujob" in sys.argv), indent=2))
