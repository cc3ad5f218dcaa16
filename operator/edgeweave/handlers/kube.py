"""The one place for Kubernetes API access: the client, read-or-none, status patches that write only what
changed, object references, typed API errors."""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping
from typing import Any

from .. import GROUP, VERSION
from ..actuate.kubeapi import ApiError, api_error, read_or_none

__all__ = ["ApiError", "api_client", "api_error", "changed_fields", "core", "custom", "group_ref",
           "patch_status_if_changed", "read_or_none"]


@functools.cache
def api_client() -> Any:
    """One ApiClient per process (thread-safe); in a pod the in-cluster config, else $KUBECONFIG."""
    from kubernetes import client, config

    from .. import __version__

    cfg = client.Configuration()
    if os.environ.get("KUBERNETES_SERVICE_HOST") and not os.environ.get("KUBECONFIG"):
        config.load_incluster_config(client_configuration=cfg)
    else:
        config.load_kube_config(config_file=os.environ.get("KUBECONFIG"), client_configuration=cfg)
    # urllib3 keeps cores x 5 connections (10 here); with rounds in 48 threads the rest were discarded
    # and opened again (a TLS handshake per request) — "Connection pool is full" in the log.
    cfg.connection_pool_maxsize = 64
    api = client.ApiClient(cfg)
    # The API server's audit log names each client by its user agent: ours is not the generic one.
    api.user_agent = f"edgeweave-operator/{__version__}"
    return api


def core() -> Any:
    from kubernetes import client

    return client.CoreV1Api(api_client())


def custom() -> Any:
    from kubernetes import client

    return client.CustomObjectsApi(api_client())


def group_ref(kind: str, namespace: str, name: str, uid: str) -> dict[str, str]:
    """An involvedObject for Events on our own resources."""
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": kind, "namespace": namespace, "name": name, "uid": uid}


def changed_fields(current: Mapping[str, Any] | None, new: Mapping[str, Any]) -> dict[str, Any]:
    """The top-level status fields whose value differs (a merge patch of just those)."""
    current = current or {}
    return {k: v for k, v in new.items() if current.get(k) != v}


def patch_status_if_changed(plural: str, namespace: str, name: str, current: Mapping[str, Any] | None,
                            new: Mapping[str, Any]) -> dict[str, Any] | None:
    """Patch only what changed; None when nothing did (a steady object costs no write). Returns the status
    as the API server stored it."""
    diff = changed_fields(current, new)
    if not diff:
        return None
    obj = custom().patch_namespaced_custom_object_status(GROUP, VERSION, namespace, plural, name,
                                                         {"status": diff})
    return obj.get("status") or {}


def read_custom(plural: str, namespace: str, name: str) -> dict[str, Any] | None:
    return read_or_none(lambda: custom().get_namespaced_custom_object(GROUP, VERSION, namespace, plural, name))

