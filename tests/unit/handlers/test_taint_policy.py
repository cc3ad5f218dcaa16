"""The cluster's taint policy (`--taint-namespace`, chart `operator.taintNamespaces`): which namespaces'
groups may claim breach taints on shared devices."""

from __future__ import annotations

from edgeweave.handlers.main import build_parser
from edgeweave.handlers.state import OperatorState, make_runtime


def runtime(globs: list[str] | None):
    return make_runtime(OperatorState(taint_namespaces=globs), api_client=None)


def test_default_lets_every_namespace_taint() -> None:
    assert runtime(None).may_taint("team-a")


def test_globs_limit_tainting_to_the_platform_namespaces() -> None:
    rt = runtime(["platform-*", "edge-ops"])
    assert rt.may_taint("platform-east") and rt.may_taint("edge-ops")
    assert not rt.may_taint("team-a") and not rt.may_taint("edge-ops-2")


def test_flag_is_repeatable() -> None:
    args = build_parser().parse_args(["--taint-namespace", "platform-*", "--taint-namespace", "edge-ops"])
    assert args.taint_namespace == ["platform-*", "edge-ops"]
    assert build_parser().parse_args([]).taint_namespace is None
