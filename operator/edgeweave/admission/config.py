"""The webhook configurations, as data: one builder for what the chart renders and what `make run` applies.

kopf can manage these itself, but its configurations have no namespaceSelector, a 30 s timeout, and it
needs create/patch on every webhook configuration in the cluster. These are ours: kube-system and the
operator's own namespace are excluded (a broken operator must never block the pods that would fix it),
the timeout is short, and the operator needs no write access to them when the chart installs them.
Paths are kopf handler ids (kopf serves each handler at /<id>).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .. import GROUP, VERSION

VALIDATING_HANDLERS = (
    ("validate-workloadgroups", "workloadgroups"),
    ("validate-gpujobs", "gpujobs"),
    ("validate-edgesites", "edgesites"),
)
STEERING_HANDLER = "steer-moved-pods"
DEFAULT_TIMEOUT_S = 5
ALWAYS_EXCLUDED = ("kube-system",)


def namespace_selector(excluded: Sequence[str]) -> dict[str, Any]:
    names = sorted({*ALWAYS_EXCLUDED, *excluded})
    return {"matchExpressions": [{"key": "kubernetes.io/metadata.name", "operator": "NotIn", "values": names}]}


def _client(base: dict[str, Any], path: str, ca_bundle: str | None) -> dict[str, Any]:
    if "url" in base:
        out: dict[str, Any] = {"url": f"{base['url'].rstrip('/')}/{path}"}
    else:
        out = {"service": {**base["service"], "path": f"/{path}"}}
    if ca_bundle:
        out["caBundle"] = ca_bundle
    return out


def validating_configuration(name: str, client: dict[str, Any], *, ca_bundle: str | None,
                             excluded_namespaces: Sequence[str], failure_policy: str = "Fail",
                             timeout_s: int = DEFAULT_TIMEOUT_S) -> dict[str, Any]:
    hooks = []
    for handler, plural in VALIDATING_HANDLERS:
        hooks.append({
            "name": f"{plural}.{name}",
            "admissionReviewVersions": ["v1"],
            "sideEffects": "None",
            "failurePolicy": failure_policy,
            "matchPolicy": "Equivalent",
            "timeoutSeconds": timeout_s,
            "namespaceSelector": namespace_selector(excluded_namespaces),
            "rules": [{"apiGroups": [GROUP], "apiVersions": [VERSION], "resources": [plural],
                       "operations": ["CREATE", "UPDATE"], "scope": "*"}],
            "clientConfig": _client(client, handler, ca_bundle),
        })
    return {"apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingWebhookConfiguration",
            "metadata": {"name": name, "labels": {"app.kubernetes.io/part-of": "edgeweave"}}, "webhooks": hooks}


def mutating_configuration(name: str, client: dict[str, Any], *, ca_bundle: str | None,
                           excluded_namespaces: Sequence[str], timeout_s: int = DEFAULT_TIMEOUT_S) -> dict[str, Any]:
    # Ignore: an operator that is down must never block pod creation; the move then reports that its
    # replacement landed elsewhere and re-steers.
    hook = {
        "name": f"pods.{name}",
        "admissionReviewVersions": ["v1"],
        "sideEffects": "None",
        "failurePolicy": "Ignore",
        "matchPolicy": "Equivalent",
        "reinvocationPolicy": "Never",
        "timeoutSeconds": timeout_s,
        "namespaceSelector": namespace_selector(excluded_namespaces),
        "rules": [{"apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods"], "operations": ["CREATE"],
                   "scope": "Namespaced"}],
        "clientConfig": _client(client, STEERING_HANDLER, ca_bundle),
    }
    return {"apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingWebhookConfiguration",
            "metadata": {"name": name, "labels": {"app.kubernetes.io/part-of": "edgeweave"}}, "webhooks": [hook]}
