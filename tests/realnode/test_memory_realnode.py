"""Memory recovery on real nodes: after a SIGKILL of the writer on one real node, a pod on the other
node restores the region in its init container (`edgeweave memory-recover`, as the operator's recovery
init container runs it) from the baseline plus the dirty pages pulled from the source node's agent, and
every write the workload acknowledged is there (hack/realmem.py)."""

from __future__ import annotations

import json

import pytest

from .conftest import RealCluster, clusterkit

# In the default suite since session 5: 5 consecutive passes at nice 10, load 8-16 (docs/memory.md).
pytestmark = pytest.mark.realnode
realmem = clusterkit.load_hack("realmem")


def test_region_restored_on_another_real_node_after_sigkill(real: RealCluster, rn_namespace: str,
                                                             tmp_path_factory: pytest.TempPathFactory) -> None:
    from .conftest import images, realnode

    img = images.build_edgeweave()
    realnode.import_image(real.nodes[:2], img.archive)
    base = tmp_path_factory.mktemp("realmem")
    res = realmem.restore_after_sigkill(real.cluster.core, real.nodes[:2], rn_namespace, img.ref, base)
    print(json.dumps({k: v for k, v in res.items() if k != "writer"}))
    assert res["phase"] == "Succeeded", res
    assert res["restore_mode"] == "baseline+dirty" and res["restore_epoch"] == res["writer"]["epoch"], res
    # the writes made after the baseline came from node A's agent, over the pod network, and none is lost
    assert res["restore_dirty_pages"] > 0 and res["restore_bytes_from_source"] > 0, res
    assert res["check"]["lost"] == 0 and res["check"]["acked_writes"] > 0, res
    assert res["state_restored"] is True
