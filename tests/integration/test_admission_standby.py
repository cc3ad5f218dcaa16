"""Semantic admission on a standby replica: every replica serves the webhook, so a paused one must refuse
what the active one refuses. Its own module: no other validating configuration may be live meanwhile
(the bad-input suite's is module-scoped), so the standby's answers are the only ones the API server gets."""

from __future__ import annotations

from pathlib import Path

import pytest

from .bad_inputs_corpus import CASES, GROUP, VERSION, post
from .conftest import Cluster, free_port, fresh_namespace, start_operator, wait_for

pytestmark = pytest.mark.integration



def test_a_standby_replica_refuses_just_as_well(cluster: Cluster, tmp_path: Path) -> None:
    """Every replica serves the webhook, and a paused (standby) one keeps no watch streams: its checks must
    not depend on kopf's indexes. Only the standby's configuration is left in place, so its answers are
    the ones the API server gets."""
    gen = fresh_namespace(cluster, "bad-standby")
    ns = next(gen)
    peering = "ewt-admission-peering"
    common = ("--webhook-cert-dir", str(tmp_path / "certs"), "--namespace", "bad-standby-*")
    active = start_operator(cluster, tmp_path, "--priority", "200", "--webhook-port", str(free_port()),
                            "--webhook-config", "steer-active.edgeweave.io", *common, peering=peering, name="active")
    standby = None
    try:
        standby = start_operator(cluster, tmp_path, "--priority", "100", "--webhook-port", str(free_port()),
                                 "--webhook-config", "steer-standby.edgeweave.io",
                                 "--admission-config", "validate-standby.edgeweave.io", *common, peering=peering,
                                 name="standby")
        # kopf starts a replica paused and says so only when it resumes: two peers registered and no
        # "Resuming" from the standby means it is the paused one.
        wait_for(lambda: len(cluster.custom.get_cluster_custom_object(
            "kopf.dev", "v1", "clusterkopfpeerings", peering).get("status") or {}) == 2, 30, "two peers")
        assert "Resuming operations" in active.log() and "Resuming operations" not in standby.log()
        first = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "WorkloadGroup", "metadata": {"name": "first"},
                 "spec": {"selector": {"team": "a"}, "mode": "DryRun"}}
        cluster.custom.create_namespaced_custom_object(GROUP, VERSION, ns, "workloadgroups", first)
        inner = {**first, "metadata": {"name": "inner"}, "spec": {"selector": {"team": "a", "app": "api"},
                                                                    "mode": "DryRun"}}
        from kubernetes.client.exceptions import ApiException
        with pytest.raises(ApiException) as err:
            cluster.custom.create_namespaced_custom_object(GROUP, VERSION, ns, "workloadgroups", inner)
        assert "validate-standby.edgeweave.io" in err.value.body and "spec.selector" in err.value.body
        assert "'first'" in err.value.body
        assert "Resuming operations" not in standby.log()  # it answered while paused
        uplink = next(c for c in CASES if c.id == "wg-unknown-uplink")
        code, text = post(cluster.api, uplink, "uplinked", ns)
        assert code == 422 and "no EdgeSite has an uplink named 'starlink'" in text and "mpls" in text, text
    finally:
        if standby:
            standby.stop()
        active.stop()
        next(gen, None)
