"""Stop leaves nothing; a run killed with SIGKILL is reaped by the next start from its run dir's record.

Runs last in the real-node suite (it replaces the session's nodes and ends with none)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import REPO, RealCluster, realnode, wait_for

pytestmark = pytest.mark.realnode


def recorded_pids(rd: Path) -> set[int]:
    """Every PID the record leads to: pid files, and every process in the nodes' cgroups."""
    state = json.loads(realnode.state_path(rd).read_text())
    pids: set[int] = set()
    for n in state["nodes"]:
        for f in Path(n["dir"], "pids").glob("*.pid"):
            pids.add(int(f.read_text()))
        pids |= realnode._cgroup_pids(n["cgroup"]) | realnode._cgroup_pids(n["sys_cgroup"])
    return pids


def alive(pids: set[int]) -> set[int]:
    return {p for p in pids if realnode.devcluster._alive(p)}


def test_killed_run_is_reaped_by_the_next_start_and_stop_leaves_nothing(real: RealCluster) -> None:
    rd = real.run_dir
    session_pids = recorded_pids(rd)
    assert len(alive(session_pids)) >= 3 * len(real.nodes), "the session's nodes should be running"

    # A second start, killed with SIGKILL once its nodes' daemons run (mid-start, before Ready).
    started_before = json.loads(realnode.state_path(rd).read_text())["started"]
    proc = subprocess.Popen([sys.executable, str(REPO / "hack" / "realnodes.py"), "start", "--nodes",
                             str(len(real.nodes))], env={**os.environ, "EDGEWEAVE_RUN_DIR": str(rd)},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)

    def daemons_up() -> bool:
        try:
            state = json.loads(realnode.state_path(rd).read_text())
        except (OSError, ValueError):
            return False
        return state["started"] > started_before and all(
            Path(n["dir"], "pids", "kubelet.pid").exists() for n in state["nodes"])

    try:
        wait_for(daemons_up, 90, "the second start to run containerd and kubelet")
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
    # It reaped the session's nodes from the record before making its own.
    assert not alive(session_pids), f"left from the first run: {alive(session_pids)}"
    orphans = alive(recorded_pids(rd))
    assert orphans, "the killed start left nothing running: the test proves nothing"

    # The next start (its first step) reaps the killed run's orphans from the record.
    realnode.stop(rd)
    assert not alive(orphans), f"orphans left: {alive(orphans)}"
    assert realnode.leftovers(rd) == []
    assert not realnode.state_path(rd).exists()
    assert not [p for p in Path("/run/netns").glob(f"{realnode.PREFIX}-*")] if Path("/run/netns").exists() else True
    assert {s: realnode._sysctl_get(s) for s in realnode.SYSCTLS} == real.sysctls_before
    mounts = Path("/proc/self/mountinfo").read_text()
    assert str(rd / "realnodes") not in mounts
