"""The uninstall hook's decisions: which finalizer list to write back, which objects are in scope."""

from __future__ import annotations

from edgeweave.uninstall import KOPF_FINALIZER, Obj, finalizers_without, plan_objects


def test_only_kopfs_finalizer_is_removed_and_nothing_is_patched_without_it() -> None:
    assert finalizers_without([KOPF_FINALIZER, "example.com/other"], KOPF_FINALIZER) == ["example.com/other"]
    assert finalizers_without([KOPF_FINALIZER], KOPF_FINALIZER) == []
    assert finalizers_without(["example.com/other"], KOPF_FINALIZER) is None
    assert finalizers_without([], KOPF_FINALIZER) is None


def _o(plural: str, ns: str | None, name: str = "x") -> Obj:
    return Obj(plural=plural, namespace=ns, name=name, finalizers=(KOPF_FINALIZER,), deleting=False)


def test_namespaced_objects_only_in_the_operators_namespaces_edgesites_always() -> None:
    objs = [_o("edgesites", None), _o("workloadgroups", "team-a"), _o("gpujobs", "rh-1"), _o("gpujobs", "other")]
    assert plan_objects(objs, []) == objs  # the operator watched every namespace
    assert [(o.plural, o.namespace) for o in plan_objects(objs, ["rh-*", "team-a"])] == [
        ("edgesites", None), ("workloadgroups", "team-a"), ("gpujobs", "rh-1")]
