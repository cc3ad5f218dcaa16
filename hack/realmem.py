"""Memory recovery on the real nodes: a workload's region restored on another node after a SIGKILL.

On node A an agent pod (`edgeweave memory serve`, hostNetwork, the page server on the node's IP with
mutual TLS) and a writer pod (`edgeweave memory writer`: registers its region with the agent, publishes
baseline epoch 1, then writes at a steady rate, acknowledging each write in a log after it is stored).
The writer's process is SIGKILLed mid-stream. On node B a pod whose init container is the replacement's
`edgeweave memory-recover` (the command the operator's recovery init container runs) rebuilds the region
in the pod's /dev/shm from the baseline plus the pages dirty since it, pulled from node A's agent; the
pod's main container checks every page against the acknowledgement log.

The baseline store is a directory both nodes mount (hostPath: the nodes are network namespaces of one
host, so it is the same directory — the RWX-volume case of docs/memory.md, not the S3 store).
Used by tests/realnode/test_memory_realnode.py (asserts) and bench/realnode/run.py (reports).
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

PORT = int(os.environ.get("EDGEWEAVE_REALNODE_MEMORY_PORT", "7470"))  # inside node A's own netns
MOUNT = "/mm"
CHECK = r"""
import json, sys
import numpy as np
from edgeweave.memory.loadgen import read_acks
from edgeweave.memory.patterns import check
size = int(sys.argv[1])
n = size // 4096
words = np.fromfile("/dev/shm/state", dtype=np.uint64).reshape(n, 512)
acked = read_acks(sys.argv[2], n)
ahead, wrong = check(words, acked)
out = json.dumps({"checked_pages": n, "acked_writes": int(acked.sum()), "lost": int(len(wrong)),
                  "ahead": int(len(ahead))})
print(out, flush=True)
open(sys.argv[3], "w").write(out + "\n")
"""


def _wait(cond: Callable[[], Any], timeout: float, what: str, detail: Callable[[], str] = str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = cond()
        if v:
            return v
        time.sleep(0.2)
    raise RuntimeError(f"timed out after {timeout:.0f} s waiting for {what}: {detail()}")


def _pod(name: str, node: str, image: str, args: list[str], *, host_network: bool = False,
         init: list[dict] | None = None, shm: bool = False, env: list[dict] | None = None,
         command: list[str] | None = None) -> dict:
    vols = [{"name": "mm", "hostPath": {"path": "", "type": "Directory"}}]
    mounts = [{"name": "mm", "mountPath": MOUNT}]
    if shm:
        vols.append({"name": "shm", "emptyDir": {"medium": "Memory", "sizeLimit": "512Mi"}})
        mounts.append({"name": "shm", "mountPath": "/dev/shm"})
    c = {"name": name.split("-")[0], "image": image, "imagePullPolicy": "Never", "args": args,
         "env": env or [], "volumeMounts": mounts, "securityContext": {"runAsUser": 0}}
    if command:  # otherwise the image's entrypoint, `edgeweave`
        c["command"] = command
    spec: dict = {"nodeName": node, "restartPolicy": "Never", "terminationGracePeriodSeconds": 1,
                  # hostPID: the agent names registered workloads by the pid SO_PEERCRED gives it, and
                  # both sides must see the same pid namespace for that check
                  "hostPID": True, "hostNetwork": host_network, "containers": [c], "volumes": vols}
    if init:
        spec["initContainers"] = [{**i, "image": image, "imagePullPolicy": "Never", "volumeMounts": mounts,
                                   "securityContext": {"runAsUser": 0}} for i in init]
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": {"app": name}}, "spec": spec}


def _out(path: Path) -> str:
    """A container's stdout, which it also writes into the shared directory (no API/kubelet log path)."""
    try:
        return path.read_text()
    except FileNotFoundError:
        return ""


def _tee(out: str, *argv: str) -> list[str]:
    """args for command `sh`: run the image's `edgeweave` with argv, its stdout also kept in `out`, same exit code."""
    return ["-c", f'edgeweave "$@" > {out}; rc=$?; cat {out}; exit $rc', "sh", *argv]


def _pod_state(core, ns: str, name: str) -> str:
    """Phase, conditions and container states of a pod: what a failed wait reports (set-up faults differ)."""
    try:
        st = core.read_namespaced_pod(name, ns).status
    except Exception as exc:  # noqa: BLE001 - a diagnostic, never the failure itself
        return f"unreadable ({exc.__class__.__name__})"
    conds = ",".join(f"{c.type}={c.status}" for c in st.conditions or [])
    states = ";".join(f"{c.name}:{c.state}" for c in st.container_statuses or [])
    return f"phase={st.phase} node={getattr(st, 'host_ip', None)} {conds} {states}"[:800]


def restore_after_sigkill(core, nodes: list[Any], ns: str, image: str, base: Path, *,
                          size: int = 64 << 20, dirty_pages: int = 300, rate: float = 200.0,
                          timeout: float = 240.0) -> dict:
    """Run the scenario; returns what happened (the caller asserts or reports)."""
    from edgeweave.memory.certs import make_pki

    src, dst = nodes[0], nodes[1]
    for d in ("store", "sock"):
        (base / d).mkdir(parents=True, exist_ok=True)
    make_pki(base / "pki", {"src": src.ip, "dst": dst.ip})
    (base / "token").write_text(secrets.token_hex(32))
    ack = base / "state.ack"

    def tls(host: str) -> list[str]:
        return ["--tls-cert", f"{MOUNT}/pki/{host}/tls.crt", "--tls-key", f"{MOUNT}/pki/{host}/tls.key",
                "--tls-ca", f"{MOUNT}/pki/ca.crt"]

    def create(obj: dict) -> None:
        for v in obj["spec"]["volumes"]:
            if v["name"] == "mm":
                v["hostPath"]["path"] = str(base)
        core.create_namespaced_pod(ns, obj)

    create(_pod("agent", src.name, image, _tee(f"{MOUNT}/agent.out", "memory", "serve", "--control",
                                                f"{MOUNT}/sock/agent.sock", "--listen", f"{src.ip}:{PORT}", "--store",
                                                f"{MOUNT}/store", *tls("src"), "-v"), command=["sh"], host_network=True))
    _wait(lambda: (base / "sock" / "agent.sock").exists(), timeout, "the agent's control socket")
    create(_pod("writer", src.name, image, command=["sh"], args=_tee(
        f"{MOUNT}/writer.out", "memory", "writer", "--name", "state", "--size", str(size), "--control", f"{MOUNT}/sock/agent.sock",
        "--token-file", f"{MOUNT}/token", "--store", f"{MOUNT}/store", "--ack", f"{MOUNT}/state.ack",
        "--namespace", ns, "--pod-uid", "$(POD_UID)", "--dirty-pages", str(dirty_pages), "--rate", str(rate)),
        env=[{"name": "POD_UID", "valueFrom": {"fieldRef": {"fieldPath": "metadata.uid"}}}]))
    line = _wait(lambda: next((ln for ln in _out(base / "writer.out").splitlines() if ln.startswith("READY ")),
                              None), timeout, "the writer's READY line", lambda: _out(base / "writer.out")[-800:]
                 + " | agent: " + _out(base / "agent.out")[-800:] + " | writer pod: " + _pod_state(core, ns, "writer"))
    ready = json.loads(line[6:])
    # keep writing at the steady rate for a while: the kill lands mid-stream, not at quiescence
    n0 = ack.stat().st_size
    _wait(lambda: ack.stat().st_size >= n0 + 8 * int(rate), 60, "a second of steady writes")
    pid = int(ready["pid"])
    os.kill(pid, signal.SIGKILL)  # hostPID: the writer's own host pid, which it printed
    _wait(lambda: not Path(f"/proc/{pid}").exists(), 30, "the writer to die")
    acked_records = ack.stat().st_size // 8
    t0 = time.monotonic()
    create(_pod("restored", dst.name, image, ["-c", CHECK, str(size), f"{MOUNT}/state.ack", f"{MOUNT}/check.out"],
                command=["python3.11"], shm=True, init=[{"name": "recover", "command": ["sh"], "args": _tee(
                    f"{MOUNT}/recover.out", "memory-recover", "--store", f"{MOUNT}/store", "--region", ready["region"],
                    "--dest", "/dev/shm/state", "--source", f"{src.ip}:{PORT}", "--token-file", f"{MOUNT}/token",
                    "--require-source", *tls("dst"))}]))
    phase = _wait(lambda: (p := core.read_namespaced_pod("restored", ns).status.phase) in ("Succeeded", "Failed")
                  and p, timeout, "the restored pod to finish")
    pod_s = time.monotonic() - t0
    rec_log = _out(base / "recover.out")
    report = next((json.loads(ln) for ln in reversed(rec_log.splitlines()) if ln.startswith("{")), {})
    check = next((json.loads(ln) for ln in reversed(_out(base / "check.out").splitlines()) if ln.startswith("{")), {})
    base_src = (report.get("sources") or {}).get("source_agent") or {}
    return {
        "state_restored": bool(phase == "Succeeded" and report.get("ok") and report.get("mode") == "baseline+dirty"
                               and check.get("lost") == 0 and check.get("acked_writes", 0) > 0),
        "restore_seconds": report.get("duration_s"),
        "restore_bytes_from_baseline": report.get("baseline_bytes"),
        "restore_bytes_from_source": report.get("bytes"),
        "restore_dirty_pages": report.get("dirty_pages"),
        "restore_mode": report.get("mode"), "restore_epoch": report.get("epoch"),
        "restore_pod_s": round(pod_s, 2),  # pod created -> check done (scheduling, image, both containers)
        "acked_write_records": acked_records, "check": check, "phase": phase,
        "source_agent": base_src, "writer": ready,
        "recover_log_tail": rec_log[-1500:] if not report.get("ok") else "",
    }
