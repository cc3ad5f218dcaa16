"""Context elements of an edge device and how each is read."""

from __future__ import annotations

from enum import StrEnum

from pydantic import ConfigDict, Field

from .base import Model


class ContextElement(StrEnum):
    """The context elements edgeweave knows. Requirements may only name these."""

    UplinkBandwidthMbps = "UplinkBandwidthMbps"
    UplinkLatencyMs = "UplinkLatencyMs"
    UplinkLossPercent = "UplinkLossPercent"
    PowerSource = "PowerSource"
    BatteryPercent = "BatteryPercent"
    TemperatureCelsius = "TemperatureCelsius"
    Zone = "Zone"
    SecurityPosture = "SecurityPosture"
    GpuHealthy = "GpuHealthy"


NUMERIC_ELEMENTS = frozenset(
    {
        ContextElement.UplinkBandwidthMbps,
        ContextElement.UplinkLatencyMs,
        ContextElement.UplinkLossPercent,
        ContextElement.BatteryPercent,
        ContextElement.TemperatureCelsius,
    }
)
PER_UPLINK_ELEMENTS = frozenset(
    {ContextElement.UplinkBandwidthMbps, ContextElement.UplinkLatencyMs, ContextElement.UplinkLossPercent}
)


class SourceKind(StrEnum):
    Prometheus = "Prometheus"
    NodeLabel = "NodeLabel"
    NodeAnnotation = "NodeAnnotation"
    NodeCondition = "NodeCondition"


class ContextSource(Model):
    """Where one context element's value comes from."""

    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": [
        {"rule": "self.source != 'Prometheus' || has(self.query)",
         "message": "query is required when source is Prometheus", "fieldPath": ".query"},
        {"rule": "self.source == 'Prometheus' || has(self.key)",
         "message": "key is required when source is NodeLabel, NodeAnnotation or NodeCondition",
         "fieldPath": ".key"},
    ]})

    element: ContextElement = Field(description="Which context element this source provides.")
    source: SourceKind = Field(description="Prometheus (a PromQL query), or a node label, annotation or condition.")
    query: str | None = Field(
        default=None,
        description=(
            "PromQL for source=Prometheus. `$node` is replaced by the node name and `$uplink` by the uplink "
            "name; the result must carry a `node` label (and `uplink` for per-uplink elements)."
        ),
        max_length=4096,
    )
    key: str | None = Field(
        default=None,
        description="Label/annotation key or condition type for the node sources.",
        max_length=316,
    )



# Fleet-wide defaults: what a site gets when it names no source for an element.
DEFAULT_SOURCES: tuple[ContextSource, ...] = (
    ContextSource(element=ContextElement.UplinkBandwidthMbps, source=SourceKind.Prometheus,
                  query="edgeweave_uplink_bandwidth_mbps"),
    ContextSource(element=ContextElement.UplinkLatencyMs, source=SourceKind.Prometheus,
                  query="edgeweave_uplink_latency_ms"),
    ContextSource(element=ContextElement.UplinkLossPercent, source=SourceKind.Prometheus,
                  query="edgeweave_uplink_loss_percent"),
    ContextSource(element=ContextElement.PowerSource, source=SourceKind.NodeLabel,
                  key="edgeweave.io/power-source"),
    ContextSource(element=ContextElement.BatteryPercent, source=SourceKind.Prometheus,
                  query="edgeweave_battery_percent"),
    ContextSource(element=ContextElement.TemperatureCelsius, source=SourceKind.Prometheus,
                  query="edgeweave_temperature_celsius"),
    ContextSource(element=ContextElement.Zone, source=SourceKind.NodeLabel, key="topology.kubernetes.io/zone"),
    ContextSource(element=ContextElement.SecurityPosture, source=SourceKind.NodeLabel,
                  key="edgeweave.io/security-posture"),
    ContextSource(element=ContextElement.GpuHealthy, source=SourceKind.NodeCondition, key="GpuHealthy"),
)
