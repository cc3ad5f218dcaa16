"""Memory recovery driven by the operator on real nodes, deployed as a user would (hack/realmem.py).

A stateful Deployment keeps its state in a registered region (the memory writer, beside the demo's TCP
server in one pod) on node A; the memory agent runs on both nodes; a WorkloadGroup with memoryRecovery
names the baseline claim (a ReadWriteMany PVC) and the token Secret. The demo client, pinned to node B,
talks to the server over a Service; Prometheus scrapes the client's bytes; the operator discovers the
dependency and moves the stateful pod to B (eviction + steering). Its webhook gives the replacement the
recovery init container, which rebuilds the region from the baseline plus the dirty pages pulled from A's
agent, and the app checks it against every write the old pod acknowledged. Then that pod is SIGKILLed and
force-deleted: its ReplicaSet replaces it, the operator's standing registration gives the replacement the
same init container (source: B's agent), and again every acknowledged write is there.
"""

from __future__ import annotations

import json
import os
import time

import pytest

from .conftest import RealCluster, clusterkit, demo, wait_for

pytestmark = [pytest.mark.realnode,
              pytest.mark.skipif(not os.environ.get("EDGEWEAVE_REALNODE_MEMORY"),
                                 reason="opt-in: EDGEWEAVE_REALNODE_MEMORY=1 (make test-realnode-memory)")]
realmem = clusterkit.load_hack("realmem")
GROUP, VERSION = "edgeweave.io", "v1alpha1"


def _wg_status(real: RealCluster, ns: str, name: str) -> dict:
    return real.cluster.custom.get_namespaced_custom_object(GROUP, VERSION, ns, "workloadgroups", name).get(
        "status") or {}


def test_operator_move_and_sigkill_replacements_recover_the_acknowledged_state(
        real: RealCluster, real_operator, rn_namespace: str, tmp_path_factory: pytest.TempPathFactory) -> None:
    from kubernetes import client

    from .conftest import images, realnode

    img = images.build_edgeweave()
    realnode.import_image(real.nodes[:2], img.archive)
    ns, core = rn_namespace, real.cluster.core
    apps = client.AppsV1Api(real.cluster.api)
    src, dst = real.nodes[0], real.nodes[1]
    base = tmp_path_factory.mktemp("realmem-op")
    base.chmod(0o755)
    try:
        realmem.prepare_store(core, ns, base, real.nodes[:2])
        realmem.start_agents(core, real.nodes[:2], ns, img.ref, base, 180)
        core.create_namespaced_service(ns, demo.service("demo-server", realmem.APP))
        apps.create_namespaced_deployment(ns, realmem.stateful_app(base, img.ref, prefer=src.name))
        pod1, ready1 = realmem.writer_ready(core, ns, base, 240)
        uid1 = pod1.metadata.uid
        assert pod1.spec.node_name == src.name, f"the stateful pod did not start on {src.name}"
        cl = demo.deployment("demo-client", "client", "kvg", env={
            "SOURCE_WORKLOAD": "demo-client", "DESTINATION_WORKLOAD": realmem.APP, "INTERVAL_MS": "20",
            "REQUEST_BYTES": "32768"})
        cl["spec"]["template"]["spec"]["nodeSelector"]["kubernetes.io/hostname"] = dst.name  # only kv can move
        apps.create_namespaced_deployment(ns, cl)
        query = f'sum(rate(edgeweave_flow_bytes_total{{namespace="{ns}"}}[15s]))'
        wait_for(lambda: (r := real.prom.query(query)) and float(r[0]["value"][1]) > 1e5, 120,
                 "Prometheus to see the client's bytes to the stateful server")
        realmem.steady_writes(base, uid1)
        template_before = apps.read_namespaced_deployment(realmem.APP, ns).spec.template.to_dict()
        gen_before = apps.read_namespaced_deployment(realmem.APP, ns).metadata.generation

        # 1. the operator's move: eviction + steering, the replacement recovers first
        t0 = time.monotonic()
        real.cluster.custom.create_namespaced_custom_object(GROUP, VERSION, ns, "workloadgroups",
                                                            realmem.memory_group("kvg"))
        moved = realmem.replacement_result(core, ns, base, uid1, 240)
        move_s = time.monotonic() - t0
        st = wait_for(lambda: (s := _wg_status(real, ns, "kvg")).get("movesTotal") == 1
                      and s["plan"]["moves"][0]["phase"] == "Done" and s, 60, "the move Done in status")
        (move,) = st["plan"]["moves"]
        print(json.dumps({"after_move": {k: v for k, v in moved.items() if k != "init_script"},
                          "move_s": round(move_s, 1), "move": move}))
        assert move["podUid"] == uid1 and move["fromNode"] == src.name and move["toNode"] == dst.name, move
        assert moved["node"] == dst.name and moved["steered_by"] == move["id"], moved
        script = moved["init_script"]
        assert f"--region {ns}/{uid1}/{realmem.APP}" in script and f"--source {src.ip}:7470" in script, script
        assert moved["restore_mode"] == "baseline+dirty", moved
        assert moved["restore_dirty_pages"] > 0 and moved["restore_bytes_from_source"] > 0, moved
        assert moved["source_agent"]["owner_alive"] is False, moved  # read after the old writer had exited
        assert moved["check"]["lost"] == 0 and moved["check"]["acked_writes"] > 0, moved
        assert moved["state_restored"] is True
        if move.get("recovery"):  # the operator records what the init container reported
            assert move["recovery"].get("mode") == "baseline+dirty", move
        dep = apps.read_namespaced_deployment(realmem.APP, ns)
        assert dep.metadata.generation == gen_before and dep.spec.template.to_dict() == template_before
        assert not dep.spec.template.spec.init_containers  # GitOps sees no drift

        # 2. SIGKILL: the pod is killed and force-deleted; its ReplicaSet replaces it
        pod2, ready2 = realmem.writer_ready(core, ns, base, 240, not_uid={uid1})
        uid2 = pod2.metadata.uid
        assert pod2.metadata.name == moved["pod"]
        wait_for(lambda: f"{uid2} on {dst.name}" in real_operator.log(), 60,
                 "the operator's standing registration for the moved pod")
        realmem.steady_writes(base, uid2)
        realmem.sigkill_and_replace(core, ns, pod2, int(ready2["pid"]))
        killed = realmem.replacement_result(core, ns, base, uid2, 240)
        print(json.dumps({"after_sigkill": {k: v for k, v in killed.items() if k != "init_script"}}))
        assert (killed["steered_by"] or "").startswith("standing-"), killed
        script = killed["init_script"]
        assert f"--region {ns}/{uid2}/{realmem.APP}" in script and f"--source {dst.ip}:7470" in script, script
        assert killed["restore_mode"] == "baseline+dirty" and killed["restore_dirty_pages"] > 0, killed
        assert killed["check"]["lost"] == 0 and killed["check"]["acked_writes"] > 0, killed
        assert killed["state_restored"] is True
    finally:
        core.delete_persistent_volume(f"{ns}-{realmem.STORE_CLAIM}")
