"""One Kubernetes API client per operator process (the kubernetes client is thread-safe per ApiClient)."""

from __future__ import annotations

import functools
import os
from typing import Any


@functools.cache
def api_client() -> Any:
    from kubernetes import client, config

    if os.environ.get("KUBERNETES_SERVICE_HOST") and not os.environ.get("KUBECONFIG"):
        config.load_incluster_config()
        return client.ApiClient()
    return config.new_client_from_config(config_file=os.environ.get("KUBECONFIG"))


def core() -> Any:
    from kubernetes import client

    return client.CoreV1Api(api_client())


def custom() -> Any:
    from kubernetes import client

    return client.CustomObjectsApi(api_client())
