"""Session fixtures for the real-node suite: real kubelets running real containers beside the kwok fleet.

The control plane is the integration suite's (same run dir and ports): if it is already up in this
session it is reused, otherwise it is started here. Two real nodes (hack/realnodes.py) join it, a
Prometheus discovers their pods through the API server, and an operator with its steering webhook on
watches the rn-* namespaces.
"""

from __future__ import annotations

import json
import os
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from integration.conftest import (  # the same cluster helpers (and env defaults) as the integration suite
    REPO,
    Cluster,
    OperatorProcess,
    clusterkit,
    devcluster,
    free_port,
    fresh_namespace,
    paused_operators,  # noqa: F401 - re-exported to the tests
    start_operator,
    wait_for,  # noqa: F401 - re-exported to the tests
)

realnode = clusterkit.load_hack("realnodes")
RealProm = clusterkit.load_hack("realprom").RealProm
demo = clusterkit.load_hack("demo")
images = clusterkit.load_hack("images")

REAL_NODES = 2
pytestmark = pytest.mark.realnode


@dataclass
class RealCluster:
    cluster: Cluster
    nodes: list[Any]       # realnode.Node
    ready_s: float
    prom: Any              # RealProm
    run_dir: Path
    sysctls_before: dict[str, str]

    @property
    def node_names(self) -> list[str]:
        return [n.name for n in self.nodes]


def http_get(url: str, timeout: float = 2.0) -> str:
    with urllib.request.urlopen(url, timeout=timeout) as r:  # noqa: S310 - addresses in our namespaces
        return r.read().decode()


def scrape(text: str, name: str) -> float:
    """The sum of a metric's samples in a Prometheus text page."""
    total, seen = 0.0, False
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            total += float(line.rsplit(" ", 1)[1])
            seen = True
    if not seen:
        raise KeyError(name)
    return total


@pytest.fixture(scope="session")
def real() -> Iterator[RealCluster]:
    from kubernetes import config

    from edgeweave.sim.fleet import FleetShape, create_fleet

    if os.geteuid() != 0:
        pytest.fail("the real-node suite needs root (network namespaces, cgroups, containerd)")
    started_here = not devcluster.running()
    kubeconfig = devcluster.start()
    bins = devcluster.bin_dir()
    api = config.new_client_from_config(config_file=str(kubeconfig))
    c = Cluster(kubeconfig=kubeconfig, bin_dir=bins, api=api)
    c.kubectl("apply", "-f", str(REPO / "crds"))
    c.kubectl("wait", "--for", "condition=established", "crd", "--all", "--timeout=60s")
    create_fleet(api, FleetShape(sites=2, nodes_per_site=2, gpu_every=0))  # the kwok fleet beside them
    rd = devcluster.run_dir()
    realnode.stop(rd)  # reap what a killed earlier run left, so the sysctls read next are the host's own
    sysctls = {s: realnode._sysctl_get(s) for s in realnode.SYSCTLS}
    prom = RealProm(rd, kubeconfig, free_port())
    try:
        nodes = realnode.start(REAL_NODES, rd=rd)
        ready_s = json.loads(realnode.state_path(rd).read_text())["ready_s"]
        prom.start()
        yield RealCluster(cluster=c, nodes=nodes, ready_s=ready_s, prom=prom, run_dir=rd, sysctls_before=sysctls)
    finally:
        prom.stop()
        realnode.stop(rd)
        if started_here and not os.environ.get("EDGEWEAVE_KEEP_CLUSTER"):
            devcluster.stop()


@pytest.fixture(scope="session")
def real_operator(real: RealCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[OperatorProcess]:
    # Its own webhook configuration name: the integration suite's operator may still be up in this session.
    op = start_operator(real.cluster, tmp_path_factory.mktemp("rn-operator"), "--prometheus-url", real.prom.url,
                        "--webhook-port", str(free_port()), "--webhook-config", "rn.steer.edgeweave.io",
                        "--namespace", "rn-*",
                        # The image built here is this cluster's edgeweave image: admission's allow-list always
                        # admits the operator's own image (GpuJob slice pods, recovery init containers).
                        env={"EDGEWEAVE_IMAGE": demo.EDGEWEAVE_IMAGE})
    try:
        yield op
    finally:
        op.stop()


@pytest.fixture
def rn_namespace(real: RealCluster) -> Iterator[str]:
    yield from fresh_namespace(real.cluster, "rn")
