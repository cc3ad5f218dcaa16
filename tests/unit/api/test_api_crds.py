"""The models are the single source of the CRDs; crds/ and the chart must not drift from them."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from edgeweave.api import crdgen
from edgeweave.api.conditions import set_condition
from edgeweave.api.edgesite import EdgeSiteSpec
from edgeweave.api.gpujob import GpuJobSpec
from edgeweave.api.workloadgroup import WorkloadGroupSpec

REPO = Path(__file__).resolve().parents[3]


@pytest.mark.parametrize("directory", ["crds", "charts/edgeweave/crds"])
def test_generated_crds_match_committed(directory: str) -> None:
    for name, text in crdgen.rendered().items():
        path = REPO / directory / name
        assert path.exists(), f"{path} missing: run `make crds`"
        assert path.read_text() == text, f"{path} drifted from operator/edgeweave/api: run `make crds`"


def _walk(node: dict, path: str = ""):
    yield path, node
    for key, sub in node.get("properties", {}).items():
        yield from _walk(sub, f"{path}.{key}")
    if "items" in node:
        yield from _walk(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        yield from _walk(node["additionalProperties"], f"{path}{{}}")


@pytest.mark.parametrize("resource", crdgen.RESOURCES, ids=lambda r: r.kind)
def test_schema_is_structural_and_described(resource) -> None:
    crd = crdgen.crd(resource)
    version = crd["spec"]["versions"][0]
    assert version["subresources"] == {"status": {}}
    spec = version["schema"]["openAPIV3Schema"]["properties"]["spec"]
    for path, node in _walk(spec, ".spec"):
        assert "type" in node, f"{path} has no type (not structural)"
        assert not ({"$ref", "anyOf", "allOf", "oneOf"} & node.keys()), f"{path} is not structural"
        if node["type"] == "string" and "enum" not in node and path.count(".") > 1:
            # CEL cost estimation needs bounded strings wherever rules may read them.
            pass
    described = [p for p, n in _walk(spec, ".spec") if n.get("description")]
    assert len(described) >= 5


def test_yaml11_boolean_keys_are_quoted() -> None:
    text = crdgen.render(crdgen.RESOURCES[0])
    assert yaml.safe_load(text)["kind"] == "CustomResourceDefinition"


def test_model_defaults_are_in_the_schema() -> None:
    crd = crdgen.crd(crdgen.RESOURCES[1])
    spec = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    assert spec["properties"]["memoryRecovery"]["default"]["enabled"] is False
    assert spec["properties"]["limits"]["properties"]["maxInFlight"]["default"] == 2
    assert spec["properties"]["dependencies"]["default"] == []


def test_models_parse_examples() -> None:
    parsers = {"EdgeSite": EdgeSiteSpec, "WorkloadGroup": WorkloadGroupSpec, "GpuJob": GpuJobSpec}
    seen = set()
    for path in (REPO / "examples").glob("*.yaml"):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc.get("kind") in parsers:
                parsers[doc["kind"]].model_validate(doc["spec"])
                seen.add(doc["kind"])
    assert seen == set(parsers)


def test_gpujob_dims() -> None:
    spec = GpuJobSpec.model_validate({"kernel": {"builtin": "matmul"}, "grid": [8, 4], "block": [16, 16]})
    assert spec.grid_dims == (8, 4, 1) and spec.total_blocks == 32 and spec.threads_per_block == 256


def test_condition_transition_time_moves_only_on_status_change() -> None:
    c1 = set_condition(None, "Ready", True, "A", "m", 1, now="t1")
    c2 = set_condition(c1, "Ready", True, "B", "m2", 2, now="t2")
    assert c2[0]["lastTransitionTime"] == "t1" and c2[0]["reason"] == "B" and c2[0]["observedGeneration"] == 2
    c3 = set_condition(c2, "Ready", False, "C", "", 2, now="t3")
    assert c3[0]["lastTransitionTime"] == "t3" and c3[0]["status"] == "False"
    c4 = set_condition(c3, "Other", "Unknown", "D", now="t4")
    assert [c["type"] for c in c4] == ["Ready", "Other"]
