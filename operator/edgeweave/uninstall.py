"""`edgeweave uninstall-cleanup`: what the chart's pre-delete hook runs before `helm uninstall` removes
the operator, so that nothing is left that can never be deleted.

kopf puts its finalizer on every EdgeSite, WorkloadGroup and GpuJob it handles. Once the operator is
gone nothing removes it, and deleting such an object then hangs forever. Two modes (chart value
`cleanup.onUninstall`):

- ``keep`` (default, like cert-manager: your CRs stay, from Git or not): stop the operator (scale its
  Deployment to 0 and wait for its pods to go, so it cannot put a finalizer back), remove the
  release's webhook configurations (with no endpoint left, the Fail-policy validating webhook would
  refuse every update), then remove kopf's finalizer from every object, leaving the objects.
- ``delete``: delete the objects while the operator still runs, so its delete handlers release what
  they hold (taint claims, steering), wait for them to go (``--wait-s``), then do what ``keep`` does
  for any that are left.

This is an administrator's tool run by the release's own hook (like `helm` itself), not an action of
the operator on workloads, so it does not go through `actuate/`. Decisions are in `finalizers_without`
and `plan_objects` (pure); the rest is API calls.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import logging
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from . import GROUP, VERSION

log = logging.getLogger("edgeweave.uninstall")
KOPF_FINALIZER = "kopf.zalando.org/KopfFinalizerMarker"
# plural, namespaced
KINDS: tuple[tuple[str, bool], ...] = (("gpujobs", True), ("workloadgroups", True), ("edgesites", False))


@dataclass(frozen=True)
class Obj:
    plural: str
    namespace: str | None
    name: str
    finalizers: tuple[str, ...]
    deleting: bool


def finalizers_without(finalizers: Iterable[str], finalizer: str) -> list[str] | None:
    """The finalizer list without ours, or None when ours is not there (nothing to patch)."""
    current = list(finalizers)
    if finalizer not in current:
        return None
    return [f for f in current if f != finalizer]


def in_scope(obj: Obj, namespaces: Sequence[str]) -> bool:
    """Namespaced objects only in the operator's namespaces (globs; empty = all); EdgeSites always."""
    return obj.namespace is None or not namespaces or any(fnmatch.fnmatchcase(obj.namespace, g) for g in namespaces)


def plan_objects(objs: Iterable[Obj], namespaces: Sequence[str]) -> list[Obj]:
    return [o for o in objs if in_scope(o, namespaces)]


def _list(custom: Any) -> list[Obj]:
    out = []
    for plural, _ in KINDS:
        for item in custom.list_cluster_custom_object(GROUP, VERSION, plural).get("items", []):
            meta = item["metadata"]
            out.append(Obj(plural=plural, namespace=meta.get("namespace"), name=meta["name"],
                           finalizers=tuple(meta.get("finalizers") or ()),
                           deleting=bool(meta.get("deletionTimestamp"))))
    return out


def _delete(custom: Any, o: Obj) -> None:
    from kubernetes.client.exceptions import ApiException

    try:
        if o.namespace is None:
            custom.delete_cluster_custom_object(GROUP, VERSION, o.plural, o.name)
        else:
            custom.delete_namespaced_custom_object(GROUP, VERSION, o.namespace, o.plural, o.name)
    except ApiException as e:
        if e.status != 404:
            raise


def _strip(custom: Any, o: Obj, finalizer: str) -> bool:
    """Remove our finalizer from one object (optimistic: resourceVersion, retried on conflict)."""
    from kubernetes.client.exceptions import ApiException

    for _ in range(5):
        try:
            cur = (custom.get_cluster_custom_object(GROUP, VERSION, o.plural, o.name) if o.namespace is None else
                   custom.get_namespaced_custom_object(GROUP, VERSION, o.namespace, o.plural, o.name))
        except ApiException as e:
            if e.status == 404:
                return False
            raise
        rest = finalizers_without(cur["metadata"].get("finalizers") or (), finalizer)
        if rest is None:
            return False
        body = {"metadata": {"finalizers": rest, "resourceVersion": cur["metadata"]["resourceVersion"]}}
        try:
            if o.namespace is None:
                custom.patch_cluster_custom_object(GROUP, VERSION, o.plural, o.name, body)
            else:
                custom.patch_namespaced_custom_object(GROUP, VERSION, o.namespace, o.plural, o.name, body)
            return True
        except ApiException as e:
            if e.status == 404:
                return False
            if e.status != 409:
                raise
    raise RuntimeError(f"{o.plural} {o.namespace}/{o.name}: finalizer patch kept conflicting")


def _stop_operator(api: Any, namespace: str, deployment: str, selector: str, timeout: float) -> None:
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    apps, core = client.AppsV1Api(api), client.CoreV1Api(api)
    try:
        apps.patch_namespaced_deployment_scale(deployment, namespace, {"spec": {"replicas": 0}})
    except ApiException as e:
        if e.status != 404:
            raise
    deadline = time.monotonic() + timeout
    while core.list_namespaced_pod(namespace, label_selector=selector).items:
        if time.monotonic() > deadline:
            raise RuntimeError(f"the operator's pods ({selector}) did not stop within {timeout:.0f}s")
        time.sleep(1)


def _drop_webhooks(api: Any, name: str) -> None:
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    adm = client.AdmissionregistrationV1Api(api)
    for delete in (adm.delete_validating_webhook_configuration, adm.delete_mutating_webhook_configuration):
        try:
            delete(name)
        except ApiException as e:
            if e.status != 404:
                raise


def run(api: Any, ns: argparse.Namespace) -> dict[str, Any]:
    from kubernetes import client

    custom = client.CustomObjectsApi(api)
    namespaces = [g for g in ns.namespaces.split(",") if g]
    report: dict[str, Any] = {"event": "uninstall-cleanup", "mode": ns.mode, "deleted": 0, "finalizers_removed": 0}
    if ns.mode == "delete":
        targets = plan_objects(_list(custom), namespaces)
        for o in targets:
            _delete(custom, o)
        report["deleted"] = len(targets)
        deadline = time.monotonic() + ns.wait_s
        while (left := plan_objects(_list(custom), namespaces)) and time.monotonic() < deadline:
            time.sleep(1)
        report["left_after_wait"] = len(left)
    _stop_operator(api, ns.release_namespace, ns.deployment, ns.operator_selector, ns.stop_timeout_s)
    if ns.webhook_config:
        _drop_webhooks(api, ns.webhook_config)
    for o in plan_objects(_list(custom), namespaces):
        if ns.finalizer in o.finalizers and _strip(custom, o, ns.finalizer):
            report["finalizers_removed"] += 1
    return report


def main(argv: Sequence[str]) -> int:
    p = argparse.ArgumentParser(prog="edgeweave uninstall-cleanup", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--mode", choices=("keep", "delete"), default="keep")
    p.add_argument("--release-namespace", required=True)
    p.add_argument("--deployment", required=True, help="the operator's Deployment (scaled to 0)")
    p.add_argument("--operator-selector", required=True, help="label selector of the operator's pods")
    p.add_argument("--webhook-config", default="", help="the release's webhook configurations' name")
    p.add_argument("--namespaces", default="", help="the operator's namespaces (comma-separated globs; empty = all)")
    p.add_argument("--finalizer", default=KOPF_FINALIZER)
    p.add_argument("--wait-s", type=float, default=60.0, help="delete mode: how long the operator may take")
    p.add_argument("--stop-timeout-s", type=float, default=60.0)
    ns = p.parse_args(list(argv))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from kubernetes import client, config

    try:
        config.load_incluster_config()
        api = client.ApiClient()
    except config.ConfigException:
        api = config.new_client_from_config()
    try:
        report = run(api, ns)
    except Exception as exc:  # noqa: BLE001 - one clear line for `kubectl logs` of the hook Job
        print(json.dumps({"event": "uninstall-cleanup-failed", "error": f"{type(exc).__name__}: {exc}"}), flush=True)
        return 1
    print(json.dumps(report), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
