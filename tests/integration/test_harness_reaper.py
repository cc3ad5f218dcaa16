"""A test session killed from outside leaves nothing running (issue 10, item 1): its Prometheus and its
operators die with it (PR_SET_PDEATHSIG) or, failing that, the next start reaps them from the records in
the run dir (hack/reaper.py) — even a SIGSTOPped one (`paused_operators`) — and only them: a live
session's children and a process that merely has a recorded pid are left alone. Real processes, real
SIGKILLs; no cluster needed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from .conftest import REPO, clusterkit, free_port, wait_for

reaper = clusterkit.load_hack("reaper")

# A stand-in for a pytest session: starts its children the way the fixtures do, prints their pids, and
# waits to be killed.
SESSION = textwrap.dedent("""
    import json, signal, subprocess, sys, time
    sys.path.insert(0, {hack!r})
    import reaper
    from promstack import PromStack
    from pathlib import Path
    rd = Path({rd!r})
    prom = PromStack(prom_port={prom_port}, exporter_port={exp_port}, record_dir=rd)
    prom.start()
    # an operator-like child without PDEATHSIG (as if it had outlived the thread that made it), paused
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"], start_new_session=True)
    reaper.record(rd, "operator-test", child.pid)
    import os
    os.killpg(child.pid, signal.SIGSTOP)
    print(json.dumps({{"prometheus": prom.proc.pid, "operator": child.pid}}), flush=True)
    time.sleep(600)
""")


def _state(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return None


def test_a_killed_sessions_prometheus_and_paused_operator_are_reaped(tmp_path: Path) -> None:
    rd = tmp_path / "run"
    rd.mkdir()
    code = SESSION.format(hack=str(REPO / "hack"), rd=str(rd), prom_port=free_port(), exp_port=free_port())
    session = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                               start_new_session=True)
    try:
        pids = json.loads(session.stdout.readline())
        prom, op = pids["prometheus"], pids["operator"]
        assert _state(op) == "T"  # stopped, as paused_operators leaves them
        assert {p.stem for p in (rd / "children").glob("*.json")} >= {"operator-test"}
        # a live owner: nothing of its is touched
        assert reaper.reap(rd) == []
        assert _state(prom) not in (None, "Z") and _state(op) == "T"
        os.killpg(session.pid, signal.SIGKILL)
        session.wait(10)
        # Prometheus dies with its session (PDEATHSIG); the paused one only through its record
        wait_for(lambda: _state(prom) in (None, "Z"), 30, "the session's Prometheus to die with it")
        time.sleep(0.5)
        assert _state(op) == "T", "the paused child was expected to survive its session"
        stopped = reaper.reap(rd, grace=5)
        assert any(s.startswith("operator-test ") for s in stopped), stopped
        wait_for(lambda: _state(op) in (None, "Z"), 10, "the paused operator reaped")
        assert not list((rd / "children").glob("*.json"))
    finally:
        for pid in (session.pid,):
            try:
                os.killpg(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def test_a_recorded_pid_that_is_another_process_now_is_left_alone(tmp_path: Path) -> None:
    """A recycled pid: the record's start time (or argv[0]) no longer matches, so nothing is killed."""
    rd = tmp_path / "run"
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True)
    try:
        path = reaper.record(rd, "stale", live.pid)
        rec = json.loads(path.read_text())
        rec.update(start=rec["start"] - 1, owner=2 ** 22 + 7, owner_start=1)  # an owner long gone
        path.write_text(json.dumps(rec))
        assert reaper.reap(rd) == []
        assert live.poll() is None
        assert not path.exists()  # the stale record itself is dropped
    finally:
        live.kill()
        live.wait(5)
