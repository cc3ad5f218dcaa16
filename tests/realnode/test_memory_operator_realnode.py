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

import pytest

from .conftest import RealCluster, clusterkit

# In the default suite since session 5: 5 consecutive passes at nice 10, load 8-16 (docs/memory.md).
pytestmark = pytest.mark.realnode
realmem = clusterkit.load_hack("realmem")


def test_operator_move_and_sigkill_replacements_recover_the_acknowledged_state(
        real: RealCluster, real_operator, rn_namespace: str, tmp_path_factory: pytest.TempPathFactory) -> None:
    from kubernetes import client

    from .conftest import images, realnode

    img = images.build_edgeweave()
    realnode.import_image(real.nodes[:2], img.archive)
    ns = rn_namespace
    res = realmem.operator_driven(real.cluster.core, client.AppsV1Api(real.cluster.api), real.cluster.custom,
                                  real.prom, real.nodes[:2], ns, img.ref, tmp_path_factory.mktemp("realmem-op"),
                                  real_operator.log)
    print(json.dumps({k: ({kk: vv for kk, vv in v.items() if kk != "init_script"} if isinstance(v, dict) else v)
                      for k, v in res.items()}))
    (src, dst), (src_ip, dst_ip), (uid1, uid2) = res["nodes"], res["ips"], res["uids"]
    app = realmem.APP

    # 1. the operator's move: eviction + steering; the replacement recovered first, from A's agent
    move, moved = res["move_status"], res["move"]
    assert move["podUid"] == uid1 and move["fromNode"] == src and move["toNode"] == dst, move
    assert moved["node"] == dst and moved["steered_by"] == move["id"], moved
    assert f"--region {ns}/{uid1}/{app}" in moved["init_script"], moved["init_script"]
    assert f"--source {src_ip}:7470" in moved["init_script"], moved["init_script"]
    assert moved["restore_mode"] == "baseline+dirty", moved
    assert moved["restore_dirty_pages"] > 0 and moved["restore_bytes_from_source"] > 0, moved
    assert moved["source_agent"]["owner_alive"] is False, moved  # read after the old writer had exited
    assert moved["check"]["lost"] == 0 and moved["check"]["acked_writes"] > 0, moved
    assert moved["state_restored"] is True
    assert (move.get("recovery") or {}).get("mode") == "baseline+dirty", move  # the operator's record of it
    assert res["deployment_unchanged"] is True  # GitOps sees no drift: only the replacement pod was patched

    # 2. SIGKILL + force delete: the ReplicaSet's replacement, through the standing registration, from B
    killed = res["kill"]
    assert (killed["steered_by"] or "").startswith("standing-"), killed
    assert f"--region {ns}/{uid2}/{app}" in killed["init_script"], killed["init_script"]
    assert f"--source {dst_ip}:7470" in killed["init_script"], killed["init_script"]
    assert killed["restore_mode"] == "baseline+dirty" and killed["restore_dirty_pages"] > 0, killed
    assert killed["check"]["lost"] == 0 and killed["check"]["acked_writes"] > 0, killed
    assert killed["state_restored"] is True
