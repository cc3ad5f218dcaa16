from __future__ import annotations

import pytest

from edgeweave.api.context import ContextElement, ContextSource, SourceKind
from edgeweave.api.edgesite import EdgeSiteSpec
from edgeweave.placement.context import (
    MISSING,
    PromIndex,
    context_strings,
    observations,
    queries_to_run,
    resolve_context,
    sources_for,
)
from edgeweave.placement.inventory import Device

E = ContextElement
UPLINKS = ["mpls", "inet"]


def _device(name: str = "edge-1", **kw) -> Device:
    labels = {"edgeweave.io/power-source": "battery", "topology.kubernetes.io/zone": "zone-a",
              "edgeweave.io/security-posture": "trusted"}
    return Device(name=name, labels=labels | kw.pop("labels", {}), **kw)


def test_site_overrides_replace_only_their_element() -> None:
    spec = EdgeSiteSpec.model_validate({
        "nodeNames": ["edge-1"],
        "context": [{"element": "BatteryPercent", "source": "NodeAnnotation", "key": "ups/charge"}],
    })
    s = sources_for(spec)
    assert s[E.BatteryPercent].source is SourceKind.NodeAnnotation
    assert s[E.UplinkLatencyMs].query == "edgeweave_uplink_latency_ms"
    assert list(s) == list(ContextElement)  # stable order
    assert sources_for(None)[E.BatteryPercent].source is SourceKind.Prometheus
    assert "edgeweave_battery_percent" not in queries_to_run(s)
    assert "edgeweave_battery_percent" in queries_to_run(sources_for(None))


def test_templated_queries_expand_per_node_and_uplink() -> None:
    s = {E.UplinkLatencyMs: ContextSource(element=E.UplinkLatencyMs, source=SourceKind.Prometheus,
                                          query='lat{instance="$node",link="$uplink"}'),
         E.BatteryPercent: ContextSource(element=E.BatteryPercent, source=SourceKind.Prometheus,
                                         query='bat{instance="$node"}')}
    qs = queries_to_run(s, nodes=["a", "b"], uplinks=UPLINKS)
    assert qs == ['lat{instance="a",link="mpls"}', 'lat{instance="a",link="inet"}',
                  'lat{instance="b",link="mpls"}', 'lat{instance="b",link="inet"}',
                  'bat{instance="a"}', 'bat{instance="b"}']
    with pytest.raises(ValueError):
        queries_to_run(s)
    # A per-node query's series need not carry the node label: the query already chose the node.
    prom = {'lat{instance="a",link="mpls"}': [({}, 12.0)], 'bat{instance="a"}': [({"job": "x"}, 55.0)],
            'bat{instance="b"}': [({}, 11.0)]}
    ctx = resolve_context(_device("a"), s, prom, UPLINKS, 100.0)
    assert ctx["UplinkLatencyMs/mpls"].value == 12.0
    assert ctx["UplinkLatencyMs/inet"].value is MISSING
    assert ctx["BatteryPercent"].value == 55.0


def test_prometheus_values_match_by_node_and_uplink_and_are_typed() -> None:
    prom = {
        "edgeweave_uplink_latency_ms": [({"node": "edge-1", "uplink": "mpls"}, 20.0),
                                        ({"node": "edge-1", "uplink": "inet"}, 140.0),
                                        ({"node": "edge-2", "uplink": "mpls"}, 999.0)],
        "edgeweave_battery_percent": [({"node": "edge-2"}, 5.0), ({"node": "edge-1"}, 37.5)],
        "edgeweave_temperature_celsius": [({"node": "edge-1"}, float("nan"))],
    }
    dev = _device(conditions={"GpuHealthy": "False", "Ready": "True"})
    ctx = resolve_context(dev, sources_for(None), PromIndex.build(prom), UPLINKS, 100.0)
    assert ctx["UplinkLatencyMs/mpls"].value == 20.0 and ctx["UplinkLatencyMs/inet"].value == 140.0
    assert ctx["BatteryPercent"].value == 37.5 and isinstance(ctx["BatteryPercent"].value, float)
    assert ctx["TemperatureCelsius"].value is MISSING  # NaN is no value
    assert ctx["UplinkLossPercent/mpls"].value is MISSING
    assert ctx["PowerSource"].value == "battery" and ctx["Zone"].value == "zone-a"
    assert ctx["GpuHealthy"].value is False
    assert all(v.observed_at == 100.0 for v in ctx.values())
    assert "BatteryPercent" in context_strings(ctx) and "TemperatureCelsius" not in context_strings(ctx)
    obs = observations("edge-1", ctx)
    assert {o.element for o in obs} >= {"BatteryPercent", "UplinkLatencyMs"}
    assert next(o for o in obs if o.uplink == "inet" and o.element == "UplinkLatencyMs").value == "140"


def test_node_sources_parse_or_go_missing() -> None:
    s = {E.BatteryPercent: ContextSource(element=E.BatteryPercent, source=SourceKind.NodeLabel, key="bat"),
         E.TemperatureCelsius: ContextSource(element=E.TemperatureCelsius, source=SourceKind.NodeAnnotation,
                                             key="temp"),
         E.GpuHealthy: ContextSource(element=E.GpuHealthy, source=SourceKind.NodeLabel, key="gpu-ok"),
         E.UplinkLatencyMs: ContextSource(element=E.UplinkLatencyMs, source=SourceKind.NodeAnnotation,
                                          key="lat-$uplink"),
         E.SecurityPosture: ContextSource(element=E.SecurityPosture, source=SourceKind.NodeCondition,
                                          key="Attested")}
    dev = _device(labels={"bat": "high", "gpu-ok": "true"}, annotations={"temp": "71.5", "lat-mpls": "9"},
                  conditions={"Attested": "Unknown"})
    ctx = resolve_context(dev, s, {}, UPLINKS, 1.0)
    assert ctx["BatteryPercent"].value is MISSING and "not a number" in ctx["BatteryPercent"].note
    assert ctx["TemperatureCelsius"].value == 71.5
    assert ctx["GpuHealthy"].value is True
    assert ctx["UplinkLatencyMs/mpls"].value == 9.0 and ctx["UplinkLatencyMs/inet"].value is MISSING
    assert ctx["SecurityPosture"].value is MISSING


def test_conflicting_duplicate_series_are_missing_not_guessed() -> None:
    prom = {"edgeweave_battery_percent": [({"node": "edge-1", "job": "a"}, 80.0),
                                          ({"node": "edge-1", "job": "b"}, 20.0)]}
    ctx = resolve_context(_device(), sources_for(None), prom, UPLINKS, 1.0)
    assert ctx["BatteryPercent"].value is MISSING and "several series" in ctx["BatteryPercent"].note
    same = {"edgeweave_battery_percent": [({"node": "edge-1", "job": "a"}, 80.0),
                                          ({"node": "edge-1", "job": "b"}, 80.0)]}
    assert resolve_context(_device(), sources_for(None), same, UPLINKS, 1.0)["BatteryPercent"].value == 80.0


def test_uplinks_discovered_from_series_when_site_declares_none() -> None:
    prom = {"edgeweave_uplink_latency_ms": [({"node": "edge-1", "uplink": "lte"}, 70.0),
                                            ({"node": "edge-1"}, 33.0)]}
    ctx = resolve_context(_device(), sources_for(None), prom, [], 1.0)
    assert ctx["UplinkLatencyMs/lte"].value == 70.0
    assert ctx["UplinkLatencyMs"].value == 33.0  # a series without uplink label: the device as a whole
