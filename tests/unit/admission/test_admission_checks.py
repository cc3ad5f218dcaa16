"""Semantic admission checks: each refusal names the field at fault; good objects pass."""

from __future__ import annotations

import pytest

from edgeweave.admission import checks
from edgeweave.admission.checks import AdmissionPolicy, Peer
from edgeweave.admission.config import mutating_configuration, validating_configuration

POLICY = AdmissionPolicy(allowed_images=("registry.local/edgeweave/*",), operator_image="ghcr.io/edgeweave/edgeweave:1")
SAXPY = "__global__ void k(float *x) { x[blockIdx.x * blockDim.x + threadIdx.x] *= 2.0f; }"


def wg(spec: dict, name: str = "g", ns: str = "team-a") -> dict:
    return {"apiVersion": "edgeweave.io/v1alpha1", "kind": "WorkloadGroup",
            "metadata": {"name": name, "namespace": ns}, "spec": spec}


def wg_fields(spec: dict, peers=(), pods=(), uplinks=frozenset({"mpls", "inet"})) -> list[str]:
    return [r.field for r in checks.workloadgroup(wg(spec), policy=POLICY, peers=list(peers), pod_labels=list(pods),
                                                  uplinks=set(uplinks))]


def test_a_good_group_passes() -> None:
    assert wg_fields({"selector": {"group": "shop"}, "requirements": [
        {"element": "UplinkLatencyMs", "operator": "Lte", "value": "50", "uplink": "mpls"},
        {"element": "Zone", "operator": "In", "values": ["a"]}]}) == []


@pytest.mark.parametrize("spec, field", [
    ({"selector": {"group": "x" * 300_000}}, "metadata"),
    ({"selector": {"group": "x" * 64}}, "spec.selector['group']"),
    ({"selector": {"bad key!": "v"}}, "spec.selector['bad key!']"),
    ({"selector": {"g": "a"}, "requirements": [{"element": "BatteryPercent", "operator": "Gte", "value": "Infinity"}]},
     "spec.requirements[0].value"),
    ({"selector": {"g": "a"}, "requirements": [{"element": "BatteryPercent", "operator": "Gte", "value": "NaN"}]},
     "spec.requirements[0].value"),
    ({"selector": {"g": "a"}, "requirements": [{"element": "BatteryPercent", "operator": "Lte", "value": "lots"}]},
     "spec.requirements[0].value"),
    ({"selector": {"g": "a"}, "requirements": [{"element": "TemperatureCelsius", "operator": "In",
                                                 "values": ["1", "-inf"]}]}, "spec.requirements[0].values[1]"),
    ({"selector": {"g": "a"}, "requirements": [{"element": "UplinkLatencyMs", "operator": "Lte", "value": "5",
                                                 "uplink": "nope"}]}, "spec.requirements[0].uplink"),
    ({"selector": {"g": "a"}, "requirements": [{"element": "Zone", "operator": "Eq", "value": "a",
                                                 "uplink": "mpls"}]}, "spec.requirements[0].uplink"),
    ({"selector": {"g": "a"}, "requirements": [{"element": "GpuHealthy", "operator": "Eq", "value": "yes"}]},
     "spec.requirements[0].value"),
    ({"selector": {"g": "a"}, "requirements": [{"element": "BatteryPercent", "operator": "Gte", "value": "5",
                                                 "hysteresis": float("inf")}]}, "spec.requirements[0].hysteresis"),
    ({"selector": {"g": "a"}, "dependencies": [{"source": "a b", "target": "c"}]}, "spec.dependencies[0].source"),
    ({"selector": {"g": "a"}, "discovery": {"dataQuery": "sum(rate("}}, "spec.discovery.dataQuery"),
    ({"selector": {"g": "a"}, "discovery": {"triggerQuery": 'x{a="1" or b="2"}'}}, "spec.discovery.triggerQuery"),
    ({"selector": {"g": "a"}, "mode": "Sometimes"}, "spec.mode"),
])
def test_bad_groups_name_the_field(spec: dict, field: str) -> None:
    assert field in wg_fields(spec)


def test_overlap_by_containment_and_by_a_shared_pod() -> None:
    broad = Peer(name="everything", selector={"team": "a"})
    assert wg_fields({"selector": {"team": "a", "app": "api"}}, peers=[broad]) == ["spec.selector"]
    assert wg_fields({"selector": {"team": "a"}}, peers=[Peer(name="same", selector={"team": "a"})]) == ["spec.selector"]
    other = Peer(name="tier", selector={"tier": "web"})
    assert wg_fields({"selector": {"app": "api"}}, peers=[other]) == []  # could overlap; no pod does
    pod = {"app": "api", "tier": "web"}
    assert wg_fields({"selector": {"app": "api"}}, peers=[other], pods=[pod]) == ["spec.selector"]
    assert wg_fields({"selector": {"app": "api"}}, peers=[Peer(name="x", selector={"app": "db"})], pods=[pod]) == []


def site(spec: dict, name: str = "s") -> dict:
    return {"apiVersion": "edgeweave.io/v1alpha1", "kind": "EdgeSite", "metadata": {"name": name}, "spec": spec}


UPLINK = {"name": "mpls", "interface": "eth0", "bandwidthMbps": 100}


@pytest.mark.parametrize("spec, field", [
    ({"nodeNames": ["n1"], "uplinks": [{**UPLINK, "gateway": "not-an-ip"}]}, "spec.uplinks[0].gateway"),
    ({"nodeNames": ["n1"], "uplinks": [{**UPLINK, "gateway": "10.0.0.300"}]}, "spec.uplinks[0].gateway"),
    ({"nodeNames": ["n1"], "uplinks": [{**UPLINK, "interface": "../x"}]}, "spec.uplinks[0].interface"),
    ({"nodeNames": ["n1"], "uplinks": [{**UPLINK, "bandwidthMbps": float("nan")}]}, "spec.uplinks[0].bandwidthMbps"),
    ({"nodeNames": ["taken"]}, "spec.nodeNames[0]"),
    ({"nodeSelector": {"zone": "a"}}, "spec.nodeSelector"),
    ({"nodeNames": ["n1"], "context": [{"element": "BatteryPercent", "source": "Prometheus", "query": "x{"}]},
     "spec.context[0].query"),
])
def test_bad_sites_name_the_field(spec: dict, field: str) -> None:
    peers = [Peer(name="other", node_names=("taken", "z1"))]
    nodes = {"taken": {}, "z1": {"zone": "a"}, "n1": {}}
    assert field in [r.field for r in checks.edgesite(site(spec), policy=POLICY, peers=peers, node_labels=nodes)]


def test_a_good_site_passes() -> None:
    spec = {"nodeNames": ["n1"], "uplinks": [{**UPLINK, "gateway": "192.0.2.1"}]}
    assert checks.edgesite(site(spec), policy=POLICY, peers=[], node_labels={"n1": {}}) == []


def job(spec: dict) -> dict:
    return {"metadata": {"name": "j", "namespace": "team-a"},
            "spec": {"kernel": {"builtin": "saxpy"}, "grid": [64], "block": [256], **spec}}


@pytest.mark.parametrize("spec, field", [
    ({"grid": [2**31 - 1]}, "spec.grid"),
    ({"grid": [65535, 65535, 2]}, "spec.grid"),
    ({"kernel": {"source": "__device__ int f() { return blockIdx.x; } __global__ void k() { f(); }", "entry": "k"}},
     "spec.kernel.source"),
    ({"kernel": {"source": SAXPY, "entry": "missing"}}, "spec.kernel.source"),
    ({"image": "docker.io/evil/miner:latest"}, "spec.image"),
    ({"vgpu": {"resource": "cpu"}}, "spec.vgpu.resource"),
    ({"latencyTargetMs": float("inf")}, "spec.latencyTargetMs"),
    ({"kernel": {"builtin": "saxpy", "problemSize": 2**60}}, "spec.kernel.problemSize"),
])
def test_bad_jobs_name_the_field(spec: dict, field: str) -> None:
    assert field in [r.field for r in checks.gpujob(job(spec), policy=POLICY)]


def test_good_jobs_pass() -> None:
    assert checks.gpujob(job({"kernel": {"source": SAXPY, "entry": "k"}}), policy=POLICY) == []
    assert checks.gpujob(job({"image": "registry.local/edgeweave/runtime:2"}), policy=POLICY) == []
    assert checks.gpujob(job({"image": "ghcr.io/edgeweave/edgeweave:1"}), policy=POLICY) == []


def test_configurations_exclude_system_namespaces_and_time_out_fast() -> None:
    client = {"service": {"namespace": "ew", "name": "ew-webhook", "port": 443}}
    v = validating_configuration("validate.edgeweave.io", client, ca_bundle="Q0E=", excluded_namespaces=["ew"])
    m = mutating_configuration("steer.edgeweave.io", client, ca_bundle="Q0E=", excluded_namespaces=["ew"])
    for hook in v["webhooks"] + m["webhooks"]:
        assert hook["namespaceSelector"]["matchExpressions"][0]["values"] == ["ew", "kube-system"]
        assert hook["timeoutSeconds"] <= 5 and hook["clientConfig"]["caBundle"] == "Q0E="
    assert {h["clientConfig"]["service"]["path"] for h in v["webhooks"]} == {
        "/validate-workloadgroups", "/validate-gpujobs", "/validate-edgesites"}
    assert m["webhooks"][0]["failurePolicy"] == "Ignore"
