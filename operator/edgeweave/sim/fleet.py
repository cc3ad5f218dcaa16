"""Create a simulated edge fleet on a cluster: kwok-managed nodes grouped into sites, plus EdgeSites."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from .. import GROUP, VERSION
from ..placement.inventory import SITE_LABEL

FLEET_LABEL = "edgeweave.io/fleet"
KWOK_ANNOTATION = "kwok.x-k8s.io/node"


@dataclass(frozen=True)
class FleetShape:
    sites: int = 3
    nodes_per_site: int = 2
    cpu: str = "4"
    memory: str = "8Gi"
    pods: str = "110"
    gpu_every: int = 3  # every Nth site's nodes advertise nvidia.com/gpu
    gpus_per_node: int = 1
    fleet: str = "dev"
    zones: tuple[str, ...] = ("zone-a", "zone-b", "zone-c")
    extra_labels: dict[str, str] = field(default_factory=dict)


def site_name(i: int) -> str:
    return f"site-{i:03d}"


def node_name(site: int, idx: int) -> str:
    return f"edge-{site:03d}-{idx}"


def node_manifest(shape: FleetShape, site: int, idx: int) -> dict:
    """A kwok-managed Node. No NoSchedule taint: ordinary workloads land here as users write them."""
    name = node_name(site, idx)
    capacity = {"cpu": shape.cpu, "memory": shape.memory, "pods": shape.pods}
    if shape.gpu_every and site % shape.gpu_every == shape.gpu_every - 1:
        capacity["nvidia.com/gpu"] = str(shape.gpus_per_node)
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "annotations": {KWOK_ANNOTATION: "fake", "node.alpha.kubernetes.io/ttl": "0"},
            "labels": {
                "type": "kwok",
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                "node-role.kubernetes.io/edge": "",
                SITE_LABEL: site_name(site),
                FLEET_LABEL: shape.fleet,
                "topology.kubernetes.io/zone": shape.zones[site % len(shape.zones)],
                "edgeweave.io/power-source": "mains",
                "edgeweave.io/security-posture": "trusted",
                **shape.extra_labels,
            },
        },
        "spec": {},
        "status": {
            "allocatable": capacity,
            "capacity": capacity,
            "nodeInfo": {"architecture": "amd64", "kubeletVersion": "kwok", "operatingSystem": "linux"},
            "phase": "Running",
        },
    }


def site_manifest(site: int) -> dict:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "EdgeSite",
        "metadata": {"name": site_name(site), "labels": {FLEET_LABEL: "dev"}},
        "spec": {
            "nodeSelector": {SITE_LABEL: site_name(site)},
            "region": "hq",
            "uplinks": [
                {"name": "mpls", "kind": "MPLS", "interface": "wan0", "bandwidthMbps": 50, "latencyMs": 15,
                 "costPerGB": 0},
                {"name": "inet", "kind": "Broadband", "interface": "wan1", "bandwidthMbps": 200,
                 "latencyMs": 30, "costPerGB": 0},
                {"name": "lte", "kind": "LTE", "interface": "wwan0", "bandwidthMbps": 20, "latencyMs": 60,
                 "costPerGB": 2.5},
            ],
        },
    }


def _create_or_keep(fn, *args) -> None:
    from kubernetes.client.exceptions import ApiException

    try:
        fn(*args)
    except ApiException as e:
        if e.status != 409:
            raise


def create_fleet(api_client, shape: FleetShape, *, edgesites: bool = True, workers: int = 16) -> list[str]:
    """Create (idempotently) the nodes and, if the CRDs are installed, one EdgeSite per site."""
    from kubernetes import client

    core = client.CoreV1Api(api_client)
    custom = client.CustomObjectsApi(api_client)
    nodes = [node_manifest(shape, s, i) for s in range(shape.sites) for i in range(shape.nodes_per_site)]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        list(pool.map(lambda n: _create_or_keep(core.create_node, n), nodes))
        if edgesites:
            list(pool.map(lambda s: _create_or_keep(custom.create_cluster_custom_object, GROUP, VERSION,
                                                    "edgesites", site_manifest(s)), range(shape.sites)))
    return [n["metadata"]["name"] for n in nodes]


def delete_fleet(api_client, names: Iterable[str]) -> None:
    from kubernetes import client

    core = client.CoreV1Api(api_client)
    with ThreadPoolExecutor(max_workers=16) as pool:
        list(pool.map(lambda n: _delete_quiet(core.delete_node, n), names))


def _delete_quiet(fn, *args) -> None:
    from kubernetes.client.exceptions import ApiException

    try:
        fn(*args)
    except ApiException as e:
        if e.status != 404:
            raise


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="edgeweave fleet", description="create a simulated kwok edge fleet")
    parser.add_argument("--sites", type=int, default=3)
    parser.add_argument("--nodes-per-site", type=int, default=2)
    parser.add_argument("--gpu-every", type=int, default=3, help="every Nth site gets nvidia.com/gpu (0 = none)")
    parser.add_argument("--no-edgesites", action="store_true")
    parser.add_argument("--kubeconfig", default=None)
    args = parser.parse_args(argv)
    from kubernetes import config

    api_client = config.new_client_from_config(config_file=args.kubeconfig)
    shape = FleetShape(sites=args.sites, nodes_per_site=args.nodes_per_site, gpu_every=args.gpu_every)
    names = create_fleet(api_client, shape, edgesites=not args.no_edgesites)
    print(f"fleet: {len(names)} edge nodes in {args.sites} sites", file=sys.stderr)
    return 0
