"""The standing failover registration: a killed member's replacement (made by its controller, faster than
any round) recovers the region of the member it replaces, once; a scale-up gets nothing; a move or a
device failover takes precedence."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

from edgeweave.actuate import moves
from edgeweave.actuate.moves import Member, MoveContext, lost_member, register_failover, register_standing
from edgeweave.actuate.steering import SteeringTable
from edgeweave.api.workloadgroup import MemoryRecovery
from edgeweave.memory.initcontainer import recover_command
from edgeweave.memory.podpatch import INIT_NAME, recovery_patch

U1, U2 = "11111111-1111-4111-8111-111111111111", "22222222-2222-4222-8222-222222222222"
SETTINGS = MemoryRecovery(enabled=True, store_claim="baselines", token_secret="tok")


class _Core:
    def read_node(self, name: str) -> SimpleNamespace:
        ip = {"n1": "10.0.0.1", "n2": "10.0.0.2"}[name]
        return SimpleNamespace(status=SimpleNamespace(addresses=[SimpleNamespace(type="InternalIP", address=ip)]))


def _ctx(table: SteeringTable) -> MoveContext:
    return MoveContext(actuator=None, core=_Core(), group="shop/kvg", steering=table, memory=SETTINGS,  # type: ignore[arg-type]
                       image="img:1")


def _script(patch: dict) -> str:
    (init,) = [c for c in patch["initContainers"] if c["name"] == INIT_NAME]
    return init["command"][-1]


def test_lost_member_is_one_no_longer_live_and_not_taken() -> None:
    ms = [Member(U1, "n1", "kv"), Member(U2, "n2", "kv")]
    assert lost_member(ms, {U1, U2}, set()) is None  # nobody lost: a scale-up
    assert lost_member(ms, {U2}, set()) == ms[0]
    assert lost_member(ms, {U2}, {U1}) is None  # its region already went to a replacement


def test_the_replacement_of_a_killed_member_recovers_its_region_from_its_device_once() -> None:
    moves._CLAIMED.clear()
    table = SteeringTable()
    live = {U1}
    assert register_standing("shop", "ReplicaSet/kv-1", [Member(U1, "n1", "kv")], _ctx(table), lambda: set(live))
    entry = table.lookup("shop", "ReplicaSet/kv-1")
    assert entry is not None and entry.to_node is None and entry.pending_s > 0
    spec = {"containers": [{"name": "kv"}]}
    assert entry.spec_patch(spec) is None  # u1 still live: a scale-up pod is left as it is
    live.clear()  # u1 killed and deleted
    script = _script(entry.spec_patch(spec))
    assert f"--region shop/{U1}/kv" in script and "--source 10.0.0.1:7470" in script
    assert entry.spec_patch(spec) is None  # a second new pod does not recover u1's region again
    # the next round with the same members keeps the patch (and what it has given away)
    assert not register_standing("shop", "ReplicaSet/kv-1", [Member(U1, "n1", "kv")], _ctx(table), set)
    assert table.lookup("shop", "ReplicaSet/kv-1").spec_patch(spec) is None


def test_a_move_and_a_device_failover_take_precedence_over_the_standing_entry() -> None:
    moves._CLAIMED.clear()
    table = SteeringTable()
    table.register("shop", "ReplicaSet/kv-1", "n2", "move-1")
    assert not register_standing("shop", "ReplicaSet/kv-1", [Member(U1, "n1", "kv")], _ctx(table), set)
    assert table.lookup("shop", "ReplicaSet/kv-1").move_id == "move-1"
    table.release("shop", "ReplicaSet/kv-1", "move-1")
    assert register_standing("shop", "ReplicaSet/kv-1", [Member(U1, "n1", "kv")], _ctx(table), set)
    assert register_failover("shop", "ReplicaSet/kv-1", "kv", "n1", _ctx(table), failed_uid=U1)
    assert table.lookup("shop", "ReplicaSet/kv-1").move_id == "failover-n1"
    # the failover took u1's region: a standing entry made later never hands it out again
    table.release("shop", "ReplicaSet/kv-1", "failover-n1")
    register_standing("shop", "ReplicaSet/kv-1", [Member(U1, "n1", "kv")], _ctx(table), set)
    assert table.lookup("shop", "ReplicaSet/kv-1").spec_patch({"containers": []}) is None


def test_a_moved_pods_region_is_not_given_to_a_later_pod() -> None:
    from edgeweave.api.workloadgroup import MoveStatus

    moves._CLAIMED.clear()
    table = SteeringTable()
    mv = MoveStatus(id="m1", pod="shop/kv-a", pod_uid=U1, workload="kv", from_node="n1", to_node="n2",
                    owner="ReplicaSet/kv-1", reason="test")
    moves.steer(mv, _ctx(table))
    table.release("shop", "ReplicaSet/kv-1", "m1")
    # u1 is still terminating (a member, not live) when the next round registers the standing entry
    register_standing("shop", "ReplicaSet/kv-1", [Member(U1, "n1", "kv"), Member(U2, "n2", "kv")], _ctx(table),
                      lambda: {U2})
    assert table.lookup("shop", "ReplicaSet/kv-1").spec_patch({"containers": []}) is None


def test_the_webhook_waits_for_the_pod_index_and_leaves_a_scale_up_alone() -> None:
    from edgeweave.handlers import webhook

    moves._CLAIMED.clear()
    table = webhook.STEERING
    owner = "ReplicaSet/kv-wh"
    live = {U1}
    register_standing("shop", owner, [Member(U1, "n1", "kv")], _ctx(table), lambda: set(live))
    body = {"metadata": {"ownerReferences": [{"kind": "ReplicaSet", "name": "kv-wh", "controller": True}]},
            "spec": {"containers": [{"name": "kv"}]}}

    async def admit(after: float | None) -> SimpleNamespace:
        patch = SimpleNamespace(spec={}, metadata={})
        if after is not None:  # the index sees the loss a moment after admission began
            asyncio.get_running_loop().call_later(after, live.clear)
        await webhook.steer(body=body, patch=patch, namespace="shop",
                            logger=SimpleNamespace(info=lambda *a: None, debug=lambda *a: None))
        return patch

    try:
        scale_up = asyncio.run(admit(None))
        assert scale_up.spec == {} and scale_up.metadata == {}  # nobody lost: no init container, no stamp
        replaced = asyncio.run(admit(0.3))
        assert replaced.spec["initContainers"][0]["name"] == INIT_NAME
        assert replaced.metadata["annotations"]["edgeweave.io/steered-by-move"].startswith("standing-")
        assert "affinity" not in replaced.spec  # a failover forces no placement
    finally:
        table.release("shop", owner, table.lookup("shop", owner).move_id)


def test_the_recovery_waits_for_the_old_workload_only_with_a_source() -> None:
    argv = recover_command(SETTINGS, f"shop/{U1}/kv", "10.0.0.1", wait_owner_exit=7)
    assert argv[argv.index("--wait-owner-exit") + 1] == "7"
    assert "--wait-owner-exit" not in recover_command(SETTINGS, f"shop/{U1}/kv", None, wait_owner_exit=7)
    # the wait is the pod's own grace period and a margin: kubelet has SIGKILLed the old one by then
    patch = recovery_patch({"containers": [{"name": "kv"}], "terminationGracePeriodSeconds": 2}, SETTINGS,
                           f"shop/{U1}/kv", "10.0.0.1", "img:1")
    assert "--wait-owner-exit 7" in _script(patch)
