"""A corpus of hostile and careless custom resources, shared by tests/integration/test_bad_inputs.py and
`make bench-hostile`.

Each case says what must happen to it: refused at admission with the field named (`reject`), or — for
faults admission cannot see, or objects that reached the store while the webhook was not in the way
(`bypass`: an excluded namespace stands in for a webhook that was down, or an object older than it) —
admitted and answered with a condition and an Event that name the real fault (`condition`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from dataclasses import field as dc_field
from typing import Any

GROUP, VERSION = "edgeweave.io", "v1alpha1"
PLURALS = {"EdgeSite": "edgesites", "WorkloadGroup": "workloadgroups", "GpuJob": "gpujobs"}
SAXPY = "__global__ void k(float *x) { x[blockIdx.x * blockDim.x + threadIdx.x] *= 2.0f; }"
HELPER_USES_BLOCKIDX = ("__device__ int at() { return blockIdx.x; }\n"
                        "__global__ void k(float *x) { x[at()] = 1.0f; }")


@dataclass(frozen=True)
class Case:
    id: str
    kind: str
    spec: dict[str, Any]
    expect: str  # "reject" or "condition"
    field: str = ""  # reject: the field the refusal must name
    condition: tuple[str, str, str] = ("", "", "")  # condition: (type, status, reason)
    event: str = ""  # condition: the Warning Event's reason
    says: str = ""  # condition: a substring of the condition message naming the fault
    bypass: bool = False  # created where the validating webhook does not look
    metadata: dict[str, Any] = dc_field(default_factory=dict)

    def manifest(self, name: str, namespace: str | None) -> dict[str, Any]:
        meta: dict[str, Any] = {"name": name, **self.metadata}
        if namespace and self.kind != "EdgeSite":
            meta["namespace"] = namespace
        return {"apiVersion": f"{GROUP}/{VERSION}", "kind": self.kind, "metadata": meta, "spec": self.spec}


def wg(**spec: Any) -> dict[str, Any]:
    return {"selector": {"app.kubernetes.io/part-of": "hostile"}, **spec}


def req(element: str, operator: str, **kw: Any) -> dict[str, Any]:
    return {"element": element, "operator": operator, **kw}


def job(**spec: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"kernel": {"builtin": "saxpy", "problemSize": 4096}, "grid": [16], "block": [256]}
    return {**base, **spec}


# A JSON number beyond float64 (the only way a non-finite number reaches the API: kubectl refuses +Inf
# client-side) is refused by the API server's own decoder before any admission step, and its message
# does not name the field; nothing of ours can change that. Non-finite values in strings ("Infinity",
# "1e999" as a threshold) are ours to refuse, and are named (CEL and the webhook).
DECODER_REFUSES_1E999 = "cannot unmarshal number 1e999"

UPLINK = {"name": "mpls", "interface": "eth0", "bandwidthMbps": 100}


def site(**spec: Any) -> dict[str, Any]:
    return {"nodeNames": ["hostile-node-0"], "uplinks": [UPLINK], **spec}


CASES: tuple[Case, ...] = (
    # -- WorkloadGroup: refused at admission --------------------------------------------------------------
    Case("wg-selector-300kb", "WorkloadGroup", wg(selector={"app": "x" * 300_000}), "reject", "spec.selector"),
    Case("wg-selector-64-chars", "WorkloadGroup", wg(selector={"app": "x" * 64}), "reject", "spec.selector"),
    Case("wg-selector-bad-key", "WorkloadGroup", wg(selector={"bad key": "v"}), "reject", "spec.selector"),
    Case("wg-selector-empty", "WorkloadGroup", {"selector": {}}, "reject", "spec.selector"),
    Case("wg-gte-infinity", "WorkloadGroup", wg(mode="DryRun", requirements=[req("BatteryPercent", "Gte", value="Infinity")]),
         "reject", "spec.requirements[0].value"),
    Case("wg-gte-nan", "WorkloadGroup", wg(requirements=[req("BatteryPercent", "Gte", value="NaN")]),
         "reject", "spec.requirements[0].value"),
    Case("wg-lte-1e999", "WorkloadGroup", wg(requirements=[req("UplinkLatencyMs", "Lte", value="1e999")]),
         "reject", "spec.requirements[0].value"),
    Case("wg-lte-word", "WorkloadGroup", wg(requirements=[req("TemperatureCelsius", "Lte", value="hot")]),
         "reject", "spec.requirements[0].value"),
    Case("wg-eq-no-value", "WorkloadGroup", wg(requirements=[req("BatteryPercent", "Eq")]),
         "reject", "spec.requirements[0].value"),
    Case("wg-in-no-values", "WorkloadGroup", wg(requirements=[req("Zone", "In")]), "reject",
         "spec.requirements[0].values"),
    Case("wg-in-nonfinite", "WorkloadGroup", wg(requirements=[req("BatteryPercent", "In", values=["5", "inf"])]),
         "reject", "spec.requirements[0].values[1]"),
    Case("wg-gte-on-zone", "WorkloadGroup", wg(requirements=[req("Zone", "Gte", value="3")]), "reject",
         "spec.requirements[0].operator"),
    Case("wg-unknown-element", "WorkloadGroup", wg(requirements=[req("Humidity", "Exists")]), "reject",
         "spec.requirements[0].element"),
    Case("wg-unknown-uplink", "WorkloadGroup", wg(requirements=[req("UplinkLatencyMs", "Lte", value="20",
                                                                     uplink="starlink")]),
         "reject", "spec.requirements[0].uplink"),
    Case("wg-uplink-on-battery", "WorkloadGroup", wg(requirements=[req("BatteryPercent", "Gte", value="20",
                                                                        uplink="mpls")]),
         "reject", "spec.requirements[0].uplink"),
    Case("wg-gpuhealthy-maybe", "WorkloadGroup", wg(requirements=[req("GpuHealthy", "Eq", value="maybe")]),
         "reject", "spec.requirements[0].value"),
    Case("wg-grace-negative", "WorkloadGroup", wg(requirements=[req("Zone", "Exists", gracePeriodSeconds=-1)]),
         "reject", "spec.requirements[0].gracePeriodSeconds"),
    Case("wg-hysteresis-1e999", "WorkloadGroup", wg(requirements=[req("BatteryPercent", "Gte", value="5",
                                                                       hysteresis=1e999)]),
         "reject", DECODER_REFUSES_1E999),
    Case("wg-self-dependency", "WorkloadGroup", wg(dependencies=[{"source": "a", "target": "a"}]), "reject",
         "spec.dependencies"),
    Case("wg-dependency-not-a-name", "WorkloadGroup", wg(dependencies=[{"source": "a b", "target": "c"}]),
         "reject", "spec.dependencies[0].source"),
    Case("wg-promql-broken", "WorkloadGroup", wg(discovery={"dataQuery": "sum(rate(x[2m]"}), "reject",
         "spec.discovery.dataQuery"),
    Case("wg-promql-or-matchers", "WorkloadGroup", wg(discovery={"triggerQuery": 'x{namespace="a" or namespace="b"}'}),
         "reject", "spec.discovery.triggerQuery"),
    Case("wg-mode-bogus", "WorkloadGroup", wg(mode="Sometimes"), "reject", "spec.mode"),
    Case("wg-limits-zero", "WorkloadGroup", wg(limits={"maxMovesPerInterval": 0}), "reject",
         "spec.limits.maxMovesPerInterval"),
    Case("wg-gain-above-one", "WorkloadGroup", wg(aggregation={"gainThreshold": 7}), "reject",
         "spec.aggregation.gainThreshold"),
    Case("wg-memory-no-claim", "WorkloadGroup", wg(memoryRecovery={"enabled": True}), "reject",
         "spec.memoryRecovery.storeClaim"),
    Case("wg-unknown-field", "WorkloadGroup", wg(evictEverything=True), "reject", "evictEverything"),
    # -- GpuJob: refused at admission ------------------------------------------------------------------------
    Case("gj-grid-2^31", "GpuJob", job(grid=[2**31 - 1]), "reject", "spec.grid"),
    Case("gj-grid-3d-huge", "GpuJob", job(grid=[65535, 65535, 65535]), "reject", "spec.grid"),
    Case("gj-grid-zero", "GpuJob", job(grid=[0]), "reject", "spec.grid"),
    Case("gj-block-2048", "GpuJob", job(block=[64, 32]), "reject", "spec.block"),
    Case("gj-cuda-helper-blockidx", "GpuJob", job(kernel={"source": HELPER_USES_BLOCKIDX, "entry": "k"}),
         "reject", "spec.kernel.source"),
    Case("gj-cuda-missing-entry", "GpuJob", job(kernel={"source": SAXPY, "entry": "nope"}), "reject",
         "spec.kernel.source"),
    Case("gj-cuda-no-entry", "GpuJob", job(kernel={"source": SAXPY}), "reject", "spec.kernel.entry"),
    Case("gj-both-builtin-and-source", "GpuJob", job(kernel={"builtin": "saxpy", "source": SAXPY, "entry": "k"}),
         "reject", "spec.kernel"),
    Case("gj-image-not-allowed", "GpuJob", job(image="docker.io/someone/miner:latest"), "reject", "spec.image"),
    Case("gj-resource-cpu", "GpuJob", job(vgpu={"resource": "cpu"}), "reject", "spec.vgpu.resource"),
    Case("gj-vgpu-count-1000", "GpuJob", job(vgpu={"count": 1000}), "reject", "spec.vgpu.count"),
    Case("gj-deadline-missing", "GpuJob", job(policy="Deadline"), "reject", "spec.deadlineSeconds"),
    Case("gj-latency-1e999", "GpuJob", job(latencyTargetMs=1e999), "reject", DECODER_REFUSES_1E999),
    Case("gj-problem-2^60", "GpuJob", job(kernel={"builtin": "saxpy", "problemSize": 2**60}), "reject",
         "spec.kernel.problemSize"),
    # -- EdgeSite: refused at admission ----------------------------------------------------------------------
    Case("es-gateway-hostname", "EdgeSite", site(uplinks=[{**UPLINK, "gateway": "router.local"}]), "reject",
         "spec.uplinks[0].gateway"),
    Case("es-gateway-octet-300", "EdgeSite", site(uplinks=[{**UPLINK, "gateway": "10.0.0.300"}]), "reject",
         "spec.uplinks[0].gateway"),
    Case("es-interface-path", "EdgeSite", site(uplinks=[{**UPLINK, "interface": "../x"}]), "reject",
         "spec.uplinks[0].interface"),
    Case("es-bandwidth-zero", "EdgeSite", site(uplinks=[{**UPLINK, "bandwidthMbps": 0}]), "reject",
         "spec.uplinks[0].bandwidthMbps"),
    Case("es-bandwidth-1e999", "EdgeSite", site(uplinks=[{**UPLINK, "bandwidthMbps": 1e999}]), "reject",
         DECODER_REFUSES_1E999),
    Case("es-no-nodes", "EdgeSite", {"uplinks": [UPLINK]}, "reject", "nodeSelector or nodeNames"),
    Case("es-mice-unknown-uplink", "EdgeSite", site(flowPolicy={"miceUplinks": ["lte"]}), "reject",
         "spec.flowPolicy.miceUplinks"),
    Case("es-steals-named-node", "EdgeSite", site(nodeNames=["edge-000-0"]), "reject", "spec.nodeNames[0]"),
    Case("es-steals-by-selector", "EdgeSite", {"nodeSelector": {"edgeweave.io/site": "site-001"}}, "reject",
         "spec.nodeSelector"),
    Case("es-context-bad-promql", "EdgeSite", site(context=[{"element": "BatteryPercent", "source": "Prometheus",
                                                             "query": "battery{"}]),
         "reject", "spec.context[0].query"),
    Case("es-selector-value-too-long", "EdgeSite", {"nodeSelector": {"zone": "z" * 100}}, "reject",
         "spec.nodeSelector"),
    # -- admitted (the webhook could not look), answered with a condition and an Event -------------------------
    Case("gj-bypass-cuda-helper", "GpuJob", job(kernel={"source": HELPER_USES_BLOCKIDX, "entry": "k"}),
         "condition", condition=("Ready", "False", "InvalidSpec"), event="InvalidSpec", says="spec.kernel.source",
         bypass=True),
    Case("gj-bypass-image", "GpuJob", job(image="docker.io/someone/miner:latest"), "condition",
         condition=("Ready", "False", "InvalidSpec"), event="InvalidSpec", says="spec.image", bypass=True),
    Case("gj-bypass-grid-2^31", "GpuJob", job(grid=[2**31 - 1]), "condition",
         condition=("Ready", "False", "InvalidSpec"), event="InvalidSpec", says="spec.grid", bypass=True),
    Case("gj-no-such-resource", "GpuJob", job(vgpu={"resource": "example.com/no-such-gpu"}), "condition",
         condition=("Schedulable", "False", "NoSuchResource"), event="Unschedulable", says="example.com/no-such-gpu"),
)


def wire_body(case: Case, name: str, namespace: str | None) -> str:
    """The manifest as the bytes a client would send. Non-finite floats go out as the JSON text 1e999
    (what a hand-written manifest can hold; json.dumps would write the invalid `Infinity`)."""
    body = json.dumps(case.manifest(name, namespace))
    return body.replace("-Infinity", "-1e999").replace("Infinity", "1e999").replace("NaN", "1e999")


def post(api: Any, case: Case, name: str, namespace: str | None) -> tuple[int, str]:
    """POST the raw bytes with the client's own connection pool and credentials; (HTTP status, body).
    Strict field validation, as kubectl does by default."""
    plural = PLURALS[case.kind]
    path = (f"/apis/{GROUP}/{VERSION}/{plural}" if case.kind == "EdgeSite"
            else f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{plural}")
    cfg = api.configuration
    headers = {"Content-Type": "application/json", "Accept": "application/json"}
    token = (cfg.api_key or {}).get("authorization") or (cfg.api_key or {}).get("BearerToken")
    if token:
        headers["Authorization"] = token if token.lower().startswith("bearer ") else f"Bearer {token}"
    resp = api.rest_client.pool_manager.request("POST", f"{cfg.host}{path}?fieldValidation=Strict",
                                                body=wire_body(case, name, namespace).encode(), headers=headers,
                                                timeout=30)
    return resp.status, resp.data.decode(errors="replace")
