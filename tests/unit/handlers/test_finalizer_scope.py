"""An operator never takes kopf's finalizer off an object outside its --namespace scope (module
finalizer_scope); inside its scope, and on cluster-scoped objects, kopf's own removal runs."""

from __future__ import annotations

import copy

from kopf._cogs.structs import finalizers

from edgeweave.handlers import finalizer_scope

F = "kopf.zalando.org/KopfFinalizerMarker"


def body(namespace: str | None) -> dict:
    meta: dict = {"name": "pay", "finalizers": [F, "other.example/keep"]}
    if namespace:
        meta["namespace"] = namespace
    return {"metadata": meta}


def test_out_of_scope_objects_keep_the_finalizer_and_the_rest_lose_it() -> None:
    allow = finalizer_scope.scoped_allow_deletion(lambda ns: ns is not None and ns.startswith("t-"))
    theirs = body("rb-1")
    allow(theirs, F)
    assert theirs["metadata"]["finalizers"] == [F, "other.example/keep"]
    ours = body("t-1")
    allow(ours, F)
    assert ours["metadata"]["finalizers"] == ["other.example/keep"]
    site = body(None)  # an EdgeSite: cluster-scoped, every operator's
    allow(site, F)
    assert site["metadata"]["finalizers"] == ["other.example/keep"]


def test_the_fix_behaves_as_kopf_in_scope() -> None:
    allow = finalizer_scope.scoped_allow_deletion(lambda ns: True)
    a, b = body("x"), body("x")
    allow(a, F)
    finalizer_scope.ORIGINAL(b, F)
    assert a == b


def test_install_replaces_what_kopfs_processing_calls(monkeypatch) -> None:
    monkeypatch.setattr(finalizer_scope, "_INSTALLED", False)
    monkeypatch.setattr(finalizers, "allow_deletion", finalizer_scope.ORIGINAL)
    from edgeweave.handlers.state import STATE

    monkeypatch.setattr(STATE, "namespaces", ["t-*"])
    finalizer_scope.install()
    assert finalizers.allow_deletion is not finalizer_scope.ORIGINAL
    theirs = body("rb-1")
    before = copy.deepcopy(theirs)
    finalizers.allow_deletion(theirs, F)  # how kopf's processing calls it
    assert theirs == before
