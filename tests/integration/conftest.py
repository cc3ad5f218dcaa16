"""Session fixtures for integration tests: one real control plane + kwok fleet, started once.

Set EDGEWEAVE_TEST_KUBECONFIG to run against a cluster you already have instead.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]

# Tests get their own ports and state dir, so a `make run` in another shell is left alone. The ports sit
# below the kernel's ephemeral range (32768+), where an outgoing connection could already hold them.
os.environ.setdefault("EDGEWEAVE_RUN_DIR", str(REPO / ".run" / "test-cluster"))
os.environ.setdefault("EDGEWEAVE_ETCD_PORT", "22790")
os.environ.setdefault("EDGEWEAVE_ETCD_PEER_PORT", "22800")
os.environ.setdefault("EDGEWEAVE_APISERVER_PORT", "22443")
os.environ.setdefault("EDGEWEAVE_KCM_PORT", "22257")
os.environ.setdefault("EDGEWEAVE_SCHED_PORT", "22259")
os.environ.setdefault("EDGEWEAVE_KWOK_PORT", "22280")




sys.path.insert(0, str(REPO / "hack"))
import clusterkit  # noqa: E402 - hack/ is a script dir
import reaper  # noqa: E402

devcluster = clusterkit.load_hack("devcluster")
PromStack = clusterkit.load_hack("promstack").PromStack
free_port = clusterkit.free_port


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.5) -> Any:
    return clusterkit.wait_for(predicate, timeout, what, interval, exc=AssertionError)






@dataclass
class Cluster:
    kubeconfig: Path
    bin_dir: Path
    api: Any  # kubernetes.client.ApiClient

    def kubectl(self, *args: str, input: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run([str(self.bin_dir / "kubectl"), f"--kubeconfig={self.kubeconfig}", *args],
                              input=input, text=True, capture_output=True, check=check, timeout=120)

    @property
    def core(self):
        from kubernetes import client
        return client.CoreV1Api(self.api)

    @property
    def custom(self):
        from kubernetes import client
        return client.CustomObjectsApi(self.api)

    def env(self) -> dict[str, str]:
        return {**os.environ, "KUBECONFIG": str(self.kubeconfig)}


FLEET_SITES = 3
FLEET_NODES_PER_SITE = 2


@pytest.fixture(scope="session")
def cluster() -> Iterator[Cluster]:
    from kubernetes import config

    from edgeweave.sim.fleet import FleetShape, create_fleet

    external = os.environ.get("EDGEWEAVE_TEST_KUBECONFIG")
    bins = devcluster.bin_dir()
    if external:
        kubeconfig = Path(external)
    else:
        devcluster.stop()
        kubeconfig = devcluster.start()
    api = config.new_client_from_config(config_file=str(kubeconfig))
    c = Cluster(kubeconfig=kubeconfig, bin_dir=bins, api=api)
    c.kubectl("apply", "-f", str(REPO / "crds"))
    c.kubectl("wait", "--for", "condition=established", "crd", "--all", "--timeout=60s")
    create_fleet(api, FleetShape(sites=FLEET_SITES, nodes_per_site=FLEET_NODES_PER_SITE, gpu_every=3))
    wait_for(lambda: len([n for n in c.core.list_node().items
                          if any(x.type == "Ready" and x.status == "True" for x in n.status.conditions or [])])
             >= FLEET_SITES * FLEET_NODES_PER_SITE, 60, "kwok nodes Ready")
    try:
        yield c
    finally:
        if not external and not os.environ.get("EDGEWEAVE_KEEP_CLUSTER"):
            devcluster.stop()


@dataclass
class OperatorProcess:
    proc: subprocess.Popen
    log_path: Path
    probe_port: int
    record: Path | None = None  # hack/reaper.py's record of it in the run dir, dropped once it is stopped

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def sigkill(self) -> None:
        """Die as a crashed or OOM-killed replica does: no handler runs, nothing is released."""
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)
        reaper.forget(self.record)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        reaper.forget(self.record)


_STARTED: list[OperatorProcess] = []  # every operator this session started (live ones: `paused_operators`)


@contextlib.contextmanager
def paused_operators() -> Iterator[list[OperatorProcess]]:
    """SIGSTOP every operator process this test session started and still runs, for a test that needs the
    cluster's cluster-scoped objects to itself: kopf's finalizer has one name for every operator, so the
    suite's session operator would put it back on each EdgeSite while the test checks that it is gone.
    Pod creates meanwhile wait out the paused steering webhook's timeout (failurePolicy Ignore)."""
    live = [o for o in _STARTED if o.proc.poll() is None]
    for o in live:
        os.killpg(o.proc.pid, signal.SIGSTOP)
    try:
        yield live
    finally:
        for o in live:
            if o.proc.poll() is None:
                os.killpg(o.proc.pid, signal.SIGCONT)


def start_operator(cluster: Cluster, tmp_dir: Path, *extra: str, peering: str | None = None,
                   name: str = "operator", env: dict[str, str] | None = None) -> OperatorProcess:
    port = free_port()
    log_path = tmp_dir / f"{name}-{port}.log"
    args = [sys.executable, "-m", "edgeweave.cli", "operator", "--probe-host", "127.0.0.1",
            "--probe-port", str(port)]
    if peering:
        cluster.kubectl("apply", "-f", "-", input=(
            f'{{"apiVersion":"kopf.dev/v1","kind":"ClusterKopfPeering","metadata":{{"name":"{peering}"}}}}'))
        args += ["--peering", peering]
    else:
        args += ["--standalone"]
    args += list(extra)
    logf = open(log_path, "wb")  # noqa: SIM115 - owned by the child
    # Dies with this session (PDEATHSIG) and is recorded in the run dir, so that a session killed from
    # outside (even while `paused_operators` has it SIGSTOPped) leaves no operator: the next start reaps it.
    proc = subprocess.Popen(args, stdout=logf, stderr=subprocess.STDOUT, env={**cluster.env(), **(env or {})},
                            cwd=REPO, start_new_session=True, preexec_fn=reaper.die_with_parent)
    op = OperatorProcess(proc=proc, log_path=log_path, probe_port=port,
                         record=reaper.record(devcluster.run_dir(), f"operator-{port}", proc.pid))
    _STARTED.append(op)
    import urllib.request

    def ready() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"operator exited rc={proc.returncode}:\n{op.log()[-4000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as r:
                return r.status == 200
        except OSError:
            return False

    wait_for(ready, 60, "operator /readyz")
    return op


@pytest.fixture(scope="session")
def prometheus() -> Iterator[PromStack]:
    stack = PromStack(prom_port=free_port(), exporter_port=free_port(), record_dir=devcluster.run_dir())
    stack.start()
    try:
        yield stack
    finally:
        stack.close()


@pytest.fixture(scope="session")
def operator(cluster: Cluster, prometheus: PromStack,
             tmp_path_factory: pytest.TempPathFactory) -> Iterator[OperatorProcess]:
    # Watches the t-* namespaces the `namespace` fixture makes; tests that need an operator of their own
    # (restart) use other namespaces so that exactly one operator acts on each group. Standalone: kopf
    # peering of a namespaced operator needs a KopfPeering in every namespace (the peering test covers it).
    op = start_operator(cluster, tmp_path_factory.mktemp("operator"), "--prometheus-url", prometheus.url,
                        "--webhook-port", str(free_port()), "--namespace", "t-*")
    try:
        yield op
    finally:
        op.stop()


def fresh_namespace(cluster: Cluster, prefix: str) -> Iterator[str]:
    name = f"{prefix}-{uuid.uuid4().hex[:8]}"
    cluster.core.create_namespace({"metadata": {"name": name}})
    wait_for(lambda: cluster.core.read_namespaced_service_account("default", name), 30, "default SA")
    try:
        yield name
    finally:
        cluster.core.delete_namespace(name)


@pytest.fixture
def namespace(cluster: Cluster) -> Iterator[str]:
    yield from fresh_namespace(cluster, "t")
