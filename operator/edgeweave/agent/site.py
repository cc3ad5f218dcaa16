"""`edgeweave agent-site`: write the EdgeSite that selects this node, for the agent to read.

Runs as the agent pod's init container: the datapath itself never talks to the API server, so a
control-plane outage cannot disturb pinned flows.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from .. import GROUP, VERSION


def site_for_node(node_labels: dict[str, str], node_name: str, sites: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The first EdgeSite (by name) whose nodeNames or nodeSelector selects the node."""
    for site in sorted(sites, key=lambda s: s["metadata"]["name"]):
        spec = site.get("spec") or {}
        selector = spec.get("nodeSelector") or {}
        if node_name in (spec.get("nodeNames") or []) or (
                selector and all(node_labels.get(k) == v for k, v in selector.items())):
            return site
    return None


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="edgeweave agent-site", description=__doc__)
    parser.add_argument("--node", required=True)
    parser.add_argument("--out", required=True, type=Path)
    args = parser.parse_args(argv)
    from kubernetes import client, config

    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config()
    node = client.CoreV1Api().read_node(args.node)
    sites = client.CustomObjectsApi().list_cluster_custom_object(GROUP, VERSION, "edgesites")["items"]
    site = site_for_node(node.metadata.labels or {}, args.node, sites)
    if site is None:
        print(f"no EdgeSite selects node {args.node}: create one whose nodeSelector or nodeNames matches it",
              file=sys.stderr)
        return 3
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(site))
    print(f"node {args.node} belongs to EdgeSite {site['metadata']['name']}", file=sys.stderr)
    return 0
