"""Two tenants, one hostile: what it writes never acts beyond its namespace.

- Its PromQL runs scoped to its namespace (real Prometheus): asking for the other team's series by
  name, by regex or with no matcher at all returns only its own.
- The operator's own identity is fenced by the chart: the ValidatingAdmissionPolicy lets its service
  account touch only edgeweave.io taints and annotations on nodes (never labels, other annotations,
  cordons or other taints); the breach-taint claim the operator makes through its actuator passes it
  and create only its own pods; RBAC names the webhook configurations it may read and nothing more.
- The chart installs with both webhooks on, and its generated certificate is kept across upgrades.
"""

from __future__ import annotations

import base64
import subprocess
import uuid

import pytest

from edgeweave.telemetry.prometheus import PrometheusClient, tenant_query

from .conftest import REPO, Cluster, fresh_namespace, wait_for

pytestmark = pytest.mark.integration

CHART = REPO / "charts" / "edgeweave"


def helm(cluster: Cluster, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(cluster.bin_dir / "helm"), f"--kubeconfig={cluster.kubeconfig}", *args],
                          capture_output=True, text=True, timeout=240)


def test_tenant_promql_sees_only_its_namespace(prometheus) -> None:
    mine, theirs = f"team-{uuid.uuid4().hex[:6]}", f"team-{uuid.uuid4().hex[:6]}"
    labels = {"source_workload": "api", "destination_workload": "db"}
    prometheus.series.set_rate("edgeweave_flow_bytes_total", {**labels, "namespace": mine}, 10.0)
    prometheus.series.set_rate("edgeweave_flow_bytes_total", {**labels, "namespace": theirs}, 5e6)
    client = PrometheusClient(prometheus.url)
    raw = f'sum by (namespace) (rate(edgeweave_flow_bytes_total{{namespace=~"{mine}|{theirs}"}}[10s]))'
    wait_for(lambda: len(client.query(raw).samples) == 2, 60, "both tenants' series in Prometheus")
    hostile = [
        f'rate(edgeweave_flow_bytes_total{{namespace="{theirs}"}}[10s])',   # the other team's, by name
        'sum by (namespace) (rate(edgeweave_flow_bytes_total{namespace=~".+"}[10s]))',  # everyone's, by regex
        "sum by (namespace) (rate(edgeweave_flow_bytes_total[10s]))",          # no matcher at all
        'sum by (namespace) (rate({__name__="edgeweave_flow_bytes_total"}[10s])) or vector(0)',
    ]
    for query in hostile:
        result = client.query(tenant_query(query, mine))
        seen = {s.labels.get("namespace") for s in result.samples if "namespace" in s.labels}
        assert theirs not in seen, (query, result.query, seen)
        assert seen <= {mine}, (query, seen)
    # And the tenant's own data is there: scoping does not blind it.
    own = client.query(tenant_query("sum by (namespace) (rate(edgeweave_flow_bytes_total[10s]))", mine))
    assert {s.labels["namespace"] for s in own.samples} == {mine}
    prometheus.series.clear()


@pytest.fixture
def fenced(cluster: Cluster):
    """The chart's RBAC and operator policy, rendered for a release in a fresh namespace, applied."""
    gen = fresh_namespace(cluster, "ewt-fence")
    ns = next(gen)
    release = f"f{uuid.uuid4().hex[:5]}"
    res = helm(cluster, "template", release, str(CHART), "-n", ns, "--kube-version", "1.33.0",
               "--show-only", "templates/serviceaccounts.yaml", "--show-only", "templates/rbac.yaml",
               "--show-only", "templates/operator-policy.yaml")
    assert res.returncode == 0, res.stderr
    cluster.kubectl("apply", "-n", ns, "-f", "-", input=res.stdout)
    sa = f"system:serviceaccount:{ns}:{release}-edgeweave-operator"
    try:
        yield ns, release, sa
    finally:
        cluster.kubectl("delete", "-n", ns, "-f", "-", "--ignore-not-found", input=res.stdout, check=False)
        next(gen, None)


def test_operator_identity_is_fenced_by_the_chart(cluster: Cluster, fenced) -> None:
    ns, release, sa = fenced
    node = "edge-001-0"

    def as_operator(*args: str) -> subprocess.CompletedProcess:
        return cluster.kubectl(f"--as={sa}", *args, check=False)

    # The policy is in force once its own refusal comes back (VAPs are compiled asynchronously). A fresh
    # value each try: one that landed before the policy was active would make later tries no-ops.
    wait_for(lambda: "may not change node labels" in as_operator(
        "label", "--overwrite", "node", node, f"ewt-probe={uuid.uuid4().hex[:8]}").stderr,
        60, "ValidatingAdmissionPolicy enforcing")
    try:
        ours = as_operator("taint", "node", node, "edgeweave.io/context-breach=ewt:NoSchedule")
        assert ours.returncode == 0, ours.stderr
        foreign = as_operator("taint", "node", node, "dedicated=ewt:NoSchedule")
        assert foreign.returncode != 0 and "only add or remove its own edgeweave.io/ taints" in foreign.stderr
        note = as_operator("annotate", "--overwrite", "node", node, f"ewt-probe={uuid.uuid4().hex[:8]}")
        assert note.returncode != 0 and "annotations" in note.stderr
        spoof = as_operator("annotate", "--overwrite", "node", node, "notedgeweave.io/ewt-probe=x")
        assert spoof.returncode != 0 and "annotations" in spoof.stderr
        # Its own annotations it may write: the breach-taint claim, exactly as the operator's actuator makes
        # it (taint and owners annotation in one patch), as that identity; and a pre-stage list.
        from kubernetes import client as kclient

        from edgeweave.actuate.actuator import TAINT_OWNERS_ANNOTATION, Actuator

        impersonated = kclient.ApiClient(cluster.api.configuration)
        impersonated.set_default_header("Impersonate-User", sa)
        act = Actuator(impersonated)
        claim = act.claim_taint(node, f"{ns}/ewt-group", True, message="fence test")
        assert claim.ok, claim
        got = cluster.core.read_node(node)
        assert (got.metadata.annotations or {}).get(TAINT_OWNERS_ANNOTATION) == f"{ns}/ewt-group"
        assert "edgeweave.io/context-breach" in [t.key for t in got.spec.taints or []]
        drop = act.claim_taint(node, f"{ns}/ewt-group", False, message="fence test")
        assert drop.ok, drop
        assert TAINT_OWNERS_ANNOTATION not in (cluster.core.read_node(node).metadata.annotations or {})
        pre = as_operator("annotate", "--overwrite", "node", node, "prestage.memory.edgeweave.io/ewt=a")
        assert pre.returncode == 0, pre.stderr
        cordon = as_operator("cordon", node)
        # kubectl cordon reports the refusal on stderr but exits 0; the node must stay schedulable.
        assert "may not cordon" in cordon.stderr
        assert not cluster.core.read_node(node).spec.unschedulable
        # Pods: only its own kinds. A plain pod is refused; a slice pod is admitted.
        plain = as_operator("run", "ewt-plain", "-n", ns, "--image=registry.local/x:1", "--restart=Never")
        assert plain.returncode != 0 and "GpuJob slice pods" in plain.stderr
        slice_pod = as_operator("run", "ewt-slice", "-n", ns, "--image=registry.local/x:1", "--restart=Never",
                                "--labels=edgeweave.io/gpujob=j")
        assert slice_pod.returncode == 0, slice_pod.stderr
        # RBAC: webhook configurations by name, read only.
        assert as_operator("auth", "can-i", "get", f"validatingwebhookconfigurations/{release}-edgeweave"
                           ).stdout.strip() == "yes"
        for verb, what in (("patch", f"mutatingwebhookconfigurations/{release}-edgeweave"),
                           ("create", "mutatingwebhookconfigurations"), ("get", "validatingwebhookconfigurations/other"),
                           ("delete", "nodes"), ("create", "secrets")):
            assert as_operator("auth", "can-i", verb, what).stdout.strip() == "no", (verb, what)
        # An admin is not affected by the operator's policy.
        admin = cluster.kubectl("label", "--overwrite", "node", node, "ewt-probe=admin", check=False)
        assert admin.returncode == 0, admin.stderr
    finally:
        cluster.kubectl("label", "node", node, "ewt-probe-", check=False)
        cluster.kubectl("annotate", "node", node, "prestage.memory.edgeweave.io/ewt-",
                        "edgeweave.io/context-breach-owners-", check=False)
        cluster.kubectl("taint", "node", node, "edgeweave.io/context-breach-", check=False)


def test_chart_installs_with_webhooks_on_and_keeps_its_certificate(cluster: Cluster) -> None:
    ns, release = f"ewt-chart-{uuid.uuid4().hex[:5]}", "ewt"
    from kubernetes import client
    adm = client.AdmissionregistrationV1Api(cluster.api)
    res = helm(cluster, "install", release, str(CHART), "-n", ns, "--create-namespace", "--set",
               "operator.dryRun=true", "--set", "agent.enabled=false", "--wait", "--timeout", "120s")
    try:
        assert res.returncode == 0, res.stdout + res.stderr
        secret = cluster.core.read_namespaced_secret(f"{release}-edgeweave-webhook-tls", ns)
        ca = secret.data["ca.crt"]
        validating = adm.read_validating_webhook_configuration(f"{release}-edgeweave")
        mutating = adm.read_mutating_webhook_configuration(f"{release}-edgeweave")
        hooks = validating.webhooks + mutating.webhooks
        assert {h.name for h in hooks} == {"workloadgroups.validate.edgeweave.io", "gpujobs.validate.edgeweave.io",
                                           "edgesites.validate.edgeweave.io", "pods.steer.edgeweave.io"}
        for h in hooks:
            assert h.client_config.ca_bundle == ca
            assert h.timeout_seconds <= 5
            assert set(h.namespace_selector.match_expressions[0].values) >= {"kube-system", ns}
        assert mutating.webhooks[0].failure_policy == "Ignore"
        # The chart's paths are the handler ids the operator serves (admission/config.py is the dev-mode twin).
        from edgeweave.admission.config import STEERING_HANDLER, VALIDATING_HANDLERS
        assert {h.client_config.service.path for h in hooks} == {
            f"/{hid}" for hid, _ in VALIDATING_HANDLERS} | {f"/{STEERING_HANDLER}"}
        assert b"BEGIN CERTIFICATE" in base64.b64decode(ca)
        deploy = client.AppsV1Api(cluster.api).read_namespaced_deployment(f"{release}-edgeweave-operator", ns)
        args = deploy.spec.template.spec.containers[0].args
        assert "--no-webhook-manage" in args and f"--admission-config={release}-edgeweave" in args
        # An upgrade keeps the certificate (lookup of the Secret), so caBundle stays what the pods serve.
        up = helm(cluster, "upgrade", release, str(CHART), "-n", ns, "--reuse-values", "--wait", "--timeout", "120s")
        assert up.returncode == 0, up.stdout + up.stderr
        again = cluster.core.read_namespaced_secret(f"{release}-edgeweave-webhook-tls", ns)
        assert again.data["tls.crt"] == secret.data["tls.crt"] and again.data["ca.crt"] == ca
        assert adm.read_validating_webhook_configuration(f"{release}-edgeweave").webhooks[0].client_config.ca_bundle == ca
    finally:
        helm(cluster, "uninstall", release, "-n", ns, "--wait")
        cluster.core.delete_namespace(ns)
