"""The CRDs on a real API server: invalid objects are rejected with the field named; examples apply."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from .conftest import REPO, Cluster

pytestmark = pytest.mark.integration

INVALID = [
    pytest.param(
        {"kind": "EdgeSite", "metadata": {"name": "bad-no-nodes"},
         "spec": {"uplinks": [{"name": "mpls", "interface": "wan0", "bandwidthMbps": 10}]}},
        ["one of nodeSelector or nodeNames"], id="edgesite-selects-no-node"),
    pytest.param(
        {"kind": "EdgeSite", "metadata": {"name": "bad-negative"},
         "spec": {"nodeNames": ["x"], "uplinks": [{"name": "mpls", "interface": "wan0", "bandwidthMbps": -5}]}},
        ["spec.uplinks[0].bandwidthMbps"], id="edgesite-negative-capacity"),
    pytest.param(
        {"kind": "EdgeSite", "metadata": {"name": "bad-missing"},
         "spec": {"nodeNames": ["x"], "uplinks": [{"name": "mpls", "bandwidthMbps": 5}]}},
        ["spec.uplinks[0].interface", "Required value"], id="edgesite-missing-field"),
    pytest.param(
        {"kind": "EdgeSite", "metadata": {"name": "bad-mice"},
         "spec": {"nodeNames": ["x"], "uplinks": [{"name": "mpls", "interface": "w", "bandwidthMbps": 5}],
                  "flowPolicy": {"miceUplinks": ["lte"]}}},
        ["spec.flowPolicy.miceUplinks"], id="edgesite-unknown-uplink"),
    pytest.param(
        {"kind": "WorkloadGroup", "metadata": {"name": "bad-op"},
         "spec": {"selector": {"app": "x"}, "requirements": [{"element": "BatteryPercent", "operator": "Above"}]}},
        ["spec.requirements[0].operator", "Unsupported value"], id="wg-unknown-operator"),
    pytest.param(
        {"kind": "WorkloadGroup", "metadata": {"name": "bad-element"},
         "spec": {"selector": {"app": "x"}, "requirements": [{"element": "Humidity", "operator": "Exists"}]}},
        ["spec.requirements[0].element"], id="wg-unknown-element"),
    pytest.param(
        {"kind": "WorkloadGroup", "metadata": {"name": "bad-value"},
         "spec": {"selector": {"app": "x"}, "requirements": [{"element": "BatteryPercent", "operator": "Gte"}]}},
        ["spec.requirements[0].value", "value is required"], id="wg-missing-operand"),
    pytest.param(
        {"kind": "WorkloadGroup", "metadata": {"name": "bad-mode"},
         "spec": {"selector": {"app": "x"}, "mode": "Sometimes"}},
        ["spec.mode"], id="wg-unknown-mode"),
    pytest.param(
        {"kind": "WorkloadGroup", "metadata": {"name": "bad-type"},
         "spec": {"selector": {"app": "x"}, "limits": {"maxInFlight": "many"}}},
        ["spec.limits.maxInFlight"], id="wg-wrong-type"),
    pytest.param(
        {"kind": "WorkloadGroup", "metadata": {"name": "bad-selector"}, "spec": {"selector": {}}},
        ["spec.selector"], id="wg-empty-selector"),
    pytest.param(
        {"kind": "GpuJob", "metadata": {"name": "bad-grid"},
         "spec": {"kernel": {"builtin": "saxpy"}, "grid": [0], "block": [256]}},
        ["spec.grid[0]"], id="gpujob-zero-grid"),
    pytest.param(
        {"kind": "GpuJob", "metadata": {"name": "bad-block"},
         "spec": {"kernel": {"builtin": "saxpy"}, "grid": [64], "block": [64, 32]}},
        ["spec.block", "at most 1024 threads"], id="gpujob-block-too-large"),
    pytest.param(
        {"kind": "GpuJob", "metadata": {"name": "bad-policy"},
         "spec": {"kernel": {"builtin": "saxpy"}, "grid": [64], "block": [64], "policy": "Lottery"}},
        ["spec.policy", "Unsupported value"], id="gpujob-unknown-policy"),
    pytest.param(
        {"kind": "GpuJob", "metadata": {"name": "bad-kernel"},
         "spec": {"kernel": {"builtin": "saxpy", "source": "__global__ void k(){}"}, "grid": [64],
                  "block": [64]}},
        ["exactly one of builtin or source"], id="gpujob-two-kernels"),
    pytest.param(
        {"kind": "GpuJob", "metadata": {"name": "bad-deadline"},
         "spec": {"kernel": {"builtin": "saxpy"}, "grid": [64], "block": [64], "policy": "Deadline"}},
        ["spec.deadlineSeconds"], id="gpujob-deadline-missing"),
]


@pytest.mark.parametrize(("manifest", "expected"), INVALID)
def test_invalid_objects_are_rejected_naming_the_field(cluster: Cluster, namespace: str, manifest: dict,
                                                       expected: list[str]) -> None:
    doc = {"apiVersion": "edgeweave.io/v1alpha1", **manifest}
    args = ["apply", "-f", "-"] if doc["kind"] == "EdgeSite" else ["apply", "-n", namespace, "-f", "-"]
    result = cluster.kubectl(*args, input=json.dumps(doc), check=False)
    assert result.returncode != 0, f"API server accepted an invalid {doc['kind']}: {result.stdout}"
    for text in expected:
        assert text in result.stderr, f"{text!r} not in: {result.stderr}"


def _example_docs() -> list[tuple[Path, dict]]:
    out = []
    for path in sorted((REPO / "examples").glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                out.append((path, doc))
    return out


def test_examples_exist() -> None:
    kinds = {doc["kind"] for _, doc in _example_docs()}
    assert {"EdgeSite", "WorkloadGroup", "GpuJob"} <= kinds


@pytest.mark.parametrize("path", sorted((REPO / "examples").glob("*.yaml")), ids=lambda p: p.name)
def test_example_applies(cluster: Cluster, namespace: str, path: Path) -> None:
    result = cluster.kubectl("apply", "-n", namespace, "-f", str(path), check=False)
    assert result.returncode == 0, result.stderr
    for doc in yaml.safe_load_all(path.read_text()):
        if doc and doc["kind"] == "EdgeSite":
            cluster.kubectl("delete", "edgesite", doc["metadata"]["name"], "--wait=false")


def test_kubectl_explain_reads_well(cluster: Cluster) -> None:
    out = cluster.kubectl("explain", "workloadgroups.spec.requirements").stdout
    assert "A constraint on a context element" in out
    assert "gracePeriodSeconds" in out
    out = cluster.kubectl("explain", "edgesites.spec.uplinks.bandwidthMbps").stdout
    assert "Provisioned bandwidth in Mbit/s" in out


def test_printer_columns(cluster: Cluster) -> None:
    header = cluster.kubectl("get", "edgesites").stdout.splitlines()[0].split()
    assert header[:6] == ["NAME", "NODES", "READY", "CPU%", "GPUS", "BREACHED"]
    header = cluster.kubectl("get", "crd", "gpujobs.edgeweave.io", "-o",
                             "jsonpath={.spec.versions[0].additionalPrinterColumns[*].name}").stdout.split()
    assert header == ["Policy", "Phase", "Done", "Slices", "Age"]
