"""Records of the helper processes a test session starts (its Prometheus, its operators), so a session
killed from outside (SIGKILL, a timeout) leaves nothing running for good: the next start, or `stop`,
reaps what the dead session recorded.

A record is `<run dir>/children/<name>.json`: the child's pid and its start time (field 22 of
/proc/<pid>/stat, so a recycled pid never matches), its argv[0], and the same for the session that
owns it. A record is reaped only when its owner is gone (another live session's children are left alone),
and only the recorded process itself, if it still is that process (same start time and argv[0]): its
process group gets SIGCONT (a SIGSTOPped operator, `paused_operators`, would never act on the TERM),
SIGTERM, then SIGKILL. Where Linux allows it the children also die with the session
(`die_with_parent`, PR_SET_PDEATHSIG); the record covers the rest (a child in its own session that must
outlive a thread, a PDEATHSIG lost to a re-parent).
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import time
from pathlib import Path

PR_SET_PDEATHSIG = 1


def start_time(pid: int) -> int | None:
    """The process's start time in clock ticks since boot, or None if there is no such (live) process."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    if fields[0] == "Z":
        return None
    return int(fields[19])  # field 22 overall; fields[0] is field 3 (state)


def argv0(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode(errors="replace")
    except OSError:
        return ""


def is_same(pid: int, started: int | None, exe: str) -> bool:
    return started is not None and start_time(pid) == started and argv0(pid) == exe


def die_with_parent() -> None:
    """preexec_fn: the child gets SIGKILL when the thread that started it exits (the session dies)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def record(rd: Path, name: str, pid: int) -> Path:
    """Write the record of child `pid` owned by this process; returns its path (remove it on a clean stop)."""
    d = rd / "children"
    d.mkdir(parents=True, exist_ok=True)
    me = os.getpid()
    path = d / f"{name}.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"pid": pid, "start": start_time(pid), "argv0": argv0(pid),
                               "owner": me, "owner_start": start_time(me), "owner_argv0": argv0(me)}))
    tmp.rename(path)
    return path


def forget(path: Path | None) -> None:
    if path is not None:
        path.unlink(missing_ok=True)


def _kill(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)  # the children run in their own session: the group is theirs
    except (ProcessLookupError, PermissionError):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def reap(rd: Path, *, grace: float = 10.0) -> list[str]:
    """Stop every recorded child whose owner is gone and that is still the recorded process; drop the
    records of children already gone. Returns what was stopped ("name pid")."""
    stopped: list[str] = []
    for path in sorted((rd / "children").glob("*.json")):
        try:
            rec = json.loads(path.read_text())
        except (OSError, ValueError):
            path.unlink(missing_ok=True)
            continue
        if is_same(rec["owner"], rec.get("owner_start"), rec.get("owner_argv0", "")):
            continue  # its session is alive: its children are its own business
        pid = int(rec["pid"])
        if is_same(pid, rec.get("start"), rec.get("argv0", "")):
            for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
                _kill(pid, sig)
                _kill(pid, signal.SIGCONT)  # a stopped process acts on TERM only once continued
                deadline = time.monotonic() + wait
                while time.monotonic() < deadline and is_same(pid, rec.get("start"), rec.get("argv0", "")):
                    time.sleep(0.1)
                if not is_same(pid, rec.get("start"), rec.get("argv0", "")):
                    break
            stopped.append(f"{path.stem} {pid}")
        path.unlink(missing_ok=True)
    return stopped
