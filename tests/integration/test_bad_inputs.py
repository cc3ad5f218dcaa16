"""Bad input against the real API server and a real operator with semantic admission on.

Every case of the corpus (bad_inputs_corpus.py, 50+ across the three kinds) is either refused at
admission — the CRD schema, CEL or our validating webhook — with the field named, or admitted and
answered with a condition and a Warning Event that name the real fault. Throughout, the operator stays
up, /readyz stays 200, nothing is logged as a traceback, and good objects keep being served.
"""

from __future__ import annotations

import subprocess
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from .bad_inputs_corpus import CASES, GROUP, PLURALS, VERSION, Case, post
from .conftest import Cluster, OperatorProcess, free_port, fresh_namespace, start_operator, wait_for

pytestmark = pytest.mark.integration

ADMISSION_CONFIG = "validate-bad.edgeweave.io"
STEER_CONFIG = "steer-bad.edgeweave.io"
GPU_NODE = "edge-002-0"


def post_raw(cluster: Cluster, case: Case, name: str, namespace: str | None) -> subprocess.CompletedProcess:
    code, text = post(cluster.api, case, name, namespace)
    return subprocess.CompletedProcess([], 0 if code in (200, 201) else code, stdout=text, stderr=text)


def read(cluster: Cluster, case: Case, name: str, namespace: str) -> dict:
    if case.kind == "EdgeSite":
        return cluster.custom.get_cluster_custom_object(GROUP, VERSION, PLURALS[case.kind], name)
    return cluster.custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURALS[case.kind], name)


def delete(cluster: Cluster, case: Case, name: str, namespace: str) -> None:
    from kubernetes.client.exceptions import ApiException
    try:
        if case.kind == "EdgeSite":
            cluster.custom.delete_cluster_custom_object(GROUP, VERSION, PLURALS[case.kind], name)
        else:
            cluster.custom.delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURALS[case.kind], name)
    except ApiException as e:
        if e.status != 404:
            raise


def warning_reasons(cluster: Cluster, namespace: str, name: str) -> set[str]:
    evs = cluster.core.list_namespaced_event(namespace, field_selector=f"involvedObject.name={name}").items
    return {e.reason for e in evs if e.type == "Warning"}


def ready(op: OperatorProcess) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{op.probe_port}/readyz", timeout=2) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


@pytest.fixture(scope="module")
def namespaces(cluster: Cluster) -> Iterator[tuple[str, str]]:
    admitted = fresh_namespace(cluster, "bad")
    bypass = fresh_namespace(cluster, "bad-bypass")
    a, b = next(admitted), next(bypass)
    try:
        yield a, b
    finally:
        for gen in (admitted, bypass):
            next(gen, None)


@pytest.fixture(scope="module")
def hardened(cluster: Cluster, prometheus, namespaces: tuple[str, str],
             tmp_path_factory: pytest.TempPathFactory) -> Iterator[OperatorProcess]:
    """An operator serving the validating webhook (failurePolicy Fail) for its own bad-* namespaces; the
    bypass namespace is excluded from the webhook, standing in for a webhook that was not in the way."""
    tmp = tmp_path_factory.mktemp("hardened")
    _, bypass = namespaces
    op = start_operator(cluster, tmp, "--prometheus-url", prometheus.url, "--webhook-port", str(free_port()),
                        "--webhook-config", STEER_CONFIG, "--admission-config", ADMISSION_CONFIG,
                        "--webhook-cert-dir", str(tmp / "certs"), "--webhook-exclude-namespace", bypass,
                        "--namespace", "bad-*", name="hardened",
                        env={"EDGEWEAVE_ADMISSION_ALLOWED_IMAGES": "registry.local/edgeweave/*"})
    # The webhook is in place once one of its own refusals comes back (not "failed calling webhook").
    probe = next(c for c in CASES if c.id == "wg-unknown-uplink")

    def answering() -> bool:
        name = "probe-" + uuid.uuid4().hex[:6]
        res = post_raw(cluster, probe, name, namespaces[0])
        if res.returncode == 0:
            delete(cluster, probe, name, namespaces[0])
        return "no EdgeSite has an uplink" in res.stderr
    wait_for(answering, 30, "validating webhook answering")
    try:
        yield op
    finally:
        op.stop()
        from kubernetes import client
        adm = client.AdmissionregistrationV1Api(cluster.api)
        # A clean stop removes them; this is for a crashed one (Fail with no server would block writes).
        for fn, name in ((adm.delete_validating_webhook_configuration, ADMISSION_CONFIG),
                         (adm.delete_mutating_webhook_configuration, STEER_CONFIG)):
            try:
                fn(name)
            except client.exceptions.ApiException:
                pass


def test_corpus_is_big_enough_and_covers_every_kind() -> None:
    assert len(CASES) >= 40
    assert {c.kind for c in CASES} == {"EdgeSite", "WorkloadGroup", "GpuJob"}
    assert len({c.id for c in CASES}) == len(CASES)


REJECTS = [c for c in CASES if c.expect == "reject"]
CONDITIONS = [c for c in CASES if c.expect == "condition"]


@pytest.mark.parametrize("case", REJECTS, ids=[c.id for c in REJECTS])
def test_refused_at_admission_naming_the_field(cluster: Cluster, hardened: OperatorProcess,
                                               namespaces: tuple[str, str], case: Case) -> None:
    ns = namespaces[0]
    name = f"{case.id.lower().replace('^', '')}-{uuid.uuid4().hex[:4]}"[:63]
    res = post_raw(cluster, case, name, ns)
    try:
        assert res.returncode != 0, f"{case.id} was admitted: {res.stdout[:300]}"
        assert case.field in res.stderr, f"{case.id}: refusal does not name {case.field!r}: {res.stderr[:600]}"
    finally:
        if res.returncode == 0:
            delete(cluster, case, name, ns)
    assert hardened.proc.poll() is None


@pytest.mark.parametrize("case", CONDITIONS, ids=[c.id for c in CONDITIONS])
def test_admitted_faults_get_a_condition_and_an_event(cluster: Cluster, hardened: OperatorProcess,
                                                      namespaces: tuple[str, str], case: Case) -> None:
    ns = namespaces[1] if case.bypass else namespaces[0]
    name = f"{case.id.lower().replace('^', '')}-{uuid.uuid4().hex[:4]}"[:63]
    res = post_raw(cluster, case, name, ns)
    assert res.returncode == 0, res.stderr
    ctype, status, reason = case.condition

    def conditioned() -> dict | None:
        conds = (read(cluster, case, name, ns).get("status") or {}).get("conditions") or []
        c = next((c for c in conds if c["type"] == ctype), None)
        return c if c and c["status"] == status and c["reason"] == reason else None

    cond = wait_for(conditioned, 60, f"{case.id}: {ctype}={status} {reason}")
    assert case.says in cond["message"], cond
    wait_for(lambda: case.event in warning_reasons(cluster, ns, name), 30, f"{case.id}: Warning Event {case.event}")
    if case.kind == "GpuJob":
        assert not cluster.core.list_namespaced_pod(ns, label_selector=f"edgeweave.io/gpujob={name}").items
        if reason == "InvalidSpec":  # never started and never will: not a job that looks still pending
            assert (read(cluster, case, name, ns).get("status") or {}).get("phase") == "Failed"
    delete(cluster, case, name, ns)


def test_operator_stays_healthy_and_serves_good_objects(cluster: Cluster, hardened: OperatorProcess,
                                                        namespaces: tuple[str, str]) -> None:
    ns = namespaces[0]
    assert hardened.proc.poll() is None
    assert ready(hardened)[0] == 200
    good = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "GpuJob", "metadata": {"name": "good-job"},
            "spec": {"kernel": {"builtin": "saxpy", "problemSize": 4096}, "grid": [16], "block": [256],
                     "vgpu": {"resource": "nvidia.com/gpu", "count": 1}, "profile": {"timePerBlockUs": 1000}}}
    cluster.custom.create_namespaced_custom_object(GROUP, VERSION, ns, "gpujobs", good)

    def planned() -> bool:
        job = cluster.custom.get_namespaced_custom_object(GROUP, VERSION, ns, "gpujobs", "good-job")
        pods = cluster.core.list_namespaced_pod(ns, label_selector="edgeweave.io/gpujob=good-job").items
        return (job.get("status") or {}).get("slicesTotal", 0) > 0 and bool(pods)
    wait_for(planned, 60, "the good GpuJob planned and its pod created")
    group = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "WorkloadGroup", "metadata": {"name": "good-group"},
             "spec": {"selector": {"app": "nothing-yet"}, "mode": "DryRun"}}
    cluster.custom.create_namespaced_custom_object(GROUP, VERSION, ns, "workloadgroups", group)

    def accepted() -> bool:
        st = cluster.custom.get_namespaced_custom_object(GROUP, VERSION, ns, "workloadgroups", "good-group")
        return any(c["type"] == "Ready" and c["status"] == "True" for c in (st.get("status") or {}).get("conditions", []))
    wait_for(accepted, 60, "the good WorkloadGroup Ready")
    # An overlapping second group is refused now that the first exists.
    dup = {**group, "metadata": {"name": "dup-group"}}
    from kubernetes.client.exceptions import ApiException
    with pytest.raises(ApiException) as err:
        cluster.custom.create_namespaced_custom_object(GROUP, VERSION, ns, "workloadgroups", dup)
    assert "spec.selector" in err.value.body and "good-group" in err.value.body
    log = hardened.log()
    assert "Traceback" not in log, log[-3000:]
    assert ready(hardened)[0] == 200


def test_the_certificate_survives_a_restart(cluster: Cluster, tmp_path: Path, namespaces: tuple[str, str],
                                            prometheus) -> None:
    """The dev-mode webhook certificate is written once and reused: its CA in the configuration stays valid."""
    certs = tmp_path / "certs"
    cfg = "validate-restart.edgeweave.io"
    args = ("--webhook-port", str(free_port()), "--webhook-config", "steer-restart.edgeweave.io",
            "--admission-config", cfg, "--webhook-cert-dir", str(certs), "--namespace", "bad-restart-*")
    first = start_operator(cluster, tmp_path, *args, name="first")
    try:
        crt = next(certs.glob("generated-*/tls.crt")).read_bytes()
    finally:
        first.stop()
    from kubernetes import client
    adm = client.AdmissionregistrationV1Api(cluster.api)
    wait_for(lambda: cfg not in {c.metadata.name for c in adm.list_validating_webhook_configuration().items}, 30,
             "a clean stop removes the configuration it applied")
    second = start_operator(cluster, tmp_path, *args, name="second")
    try:
        assert next(certs.glob("generated-*/tls.crt")).read_bytes() == crt
        hooks = adm.read_validating_webhook_configuration(cfg).webhooks
        import base64
        assert all(base64.b64decode(h.client_config.ca_bundle) == crt for h in hooks)
        assert all(h.timeout_seconds <= 5 for h in hooks)
        excluded = hooks[0].namespace_selector.match_expressions[0].values
        assert "kube-system" in excluded
    finally:
        second.stop()



def test_unknown_uplink_is_named_not_reported_as_missing_telemetry(cluster: Cluster, hardened: OperatorProcess,
                                                                   namespaces: tuple[str, str]) -> None:
    ns = namespaces[1]  # the webhook would refuse it; here it was stored anyway
    cluster.core.create_namespaced_pod(ns, {"metadata": {"name": "member", "labels": {"app": "uplinked"}},
                                            "spec": {"nodeName": "edge-000-0", "containers": [
                                                {"name": "c", "image": "registry.local/app:1"}]}})
    group = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "WorkloadGroup", "metadata": {"name": "uplinked"},
             "spec": {"selector": {"app": "uplinked"}, "mode": "DryRun", "requirements": [
                 {"element": "UplinkLatencyMs", "operator": "Lte", "value": "50", "uplink": "starlink"}]}}
    cluster.custom.create_namespaced_custom_object(GROUP, VERSION, ns, "workloadgroups", group)

    def named() -> dict | None:
        st = cluster.custom.get_namespaced_custom_object(GROUP, VERSION, ns, "workloadgroups", "uplinked")
        c = next((c for c in (st.get("status") or {}).get("conditions", []) if c["type"] == "ContextSatisfied"), None)
        return c if c and c["reason"] == "UnknownUplink" else None
    cond = wait_for(named, 60, "ContextSatisfied reason UnknownUplink")
    assert "spec.requirements[0].uplink" in cond["message"] and "starlink" in cond["message"]
    wait_for(lambda: "UnknownUplink" in warning_reasons(cluster, ns, "uplinked"), 30, "UnknownUplink Event")


def test_sites_that_come_to_share_a_node_get_a_conflict(cluster: Cluster, hardened: OperatorProcess) -> None:
    """Admission refuses the overlap it can see; a label added later makes one it could not."""
    site = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "EdgeSite", "metadata": {"name": "ewt-late-site"},
            "spec": {"nodeSelector": {"ewt-hostile": "yes"}}}
    cluster.custom.create_cluster_custom_object(GROUP, VERSION, "edgesites", site)
    node = "edge-000-1"
    try:
        cluster.core.patch_node(node, {"metadata": {"labels": {"ewt-hostile": "yes"}}})

        def conflict() -> dict | None:
            st = cluster.custom.get_cluster_custom_object(GROUP, VERSION, "edgesites", "ewt-late-site")
            c = next((c for c in (st.get("status") or {}).get("conditions", []) if c["type"] == "Conflict"), None)
            return c if c and c["status"] == "True" else None
        cond = wait_for(conflict, 60, "Conflict=True on the late site")
        assert cond["reason"] == "NodesShared" and node in cond["message"] and "site-000" in cond["message"]
        # kopf posts Events of cluster-scoped objects in the default namespace.
        wait_for(lambda: any(e.reason == "NodesShared" for e in cluster.core.list_namespaced_event(
            "default", field_selector="involvedObject.name=ewt-late-site").items) or None, 30, "NodesShared Event")
    finally:
        cluster.core.patch_node(node, {"metadata": {"labels": {"ewt-hostile": None}}})
        cluster.custom.delete_cluster_custom_object(GROUP, VERSION, "edgesites", "ewt-late-site")

