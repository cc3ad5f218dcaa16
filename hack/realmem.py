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


def remove_pods(core, ns: str, names: list[str], timeout: float = 60.0) -> None:
    """Delete the pods at once (grace 0) and wait until the API server has them gone: the kubelet has
    killed their containers by then, so no process of this run outlives it (ports, regions)."""
    for n in names:
        try:
            core.delete_namespaced_pod(n, ns, grace_period_seconds=0)
        except Exception:  # noqa: BLE001 - already gone (or never made)
            pass

    def gone() -> bool:
        return not {p.metadata.name for p in core.list_namespaced_pod(ns).items} & set(names)

    _wait(gone, timeout, f"pods {names} in {ns} to be gone")


def wait_listening(core, ns: str, pod: str, out: Path, timeout: float) -> None:
    """Until the agent printed LISTENING (control socket and page server both bound). Its control socket
    file alone proves nothing: it is bound first, and an agent whose page-server bind failed leaves it."""
    def up() -> bool:
        if any(ln.startswith("LISTENING ") for ln in _out(out).splitlines()):
            return True
        if core.read_namespaced_pod(pod, ns).status.phase in ("Failed", "Succeeded"):
            raise RuntimeError(f"the memory agent {ns}/{pod} exited before it listened: {_pod_state(core, ns, pod)}")
        return False

    _wait(up, timeout, f"the memory agent {ns}/{pod} to listen", lambda: _pod_state(core, ns, pod))


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

    # The agent is hostNetwork: until its pod is gone it holds the page-server port on node A, and the
    # next run's agent could not bind it (EADDRINUSE: what the bench saw as "the writer printed no READY
    # line" when a run began while the previous run's namespace was still being deleted).
    try:
        res = _restore_after_sigkill(core, src, dst, ns, image, base, ack, tls, create, size=size,
                                     dirty_pages=dirty_pages, rate=rate, timeout=timeout)
    except BaseException:
        try:
            remove_pods(core, ns, ["restored", "writer", "agent"])
        except Exception:  # noqa: BLE001 - the first failure is the one to report
            pass
        raise
    remove_pods(core, ns, ["restored", "writer", "agent"])
    return res


def _restore_after_sigkill(core, src: Any, dst: Any, ns: str, image: str, base: Path, ack: Path,
                           tls: Callable[[str], list[str]], create: Callable[[dict], None], *, size: int,
                           dirty_pages: int, rate: float, timeout: float) -> dict:
    create(_pod("agent", src.name, image, _tee(f"{MOUNT}/agent.out", "memory", "serve", "--control",
                                                f"{MOUNT}/sock/agent.sock", "--listen", f"{src.ip}:{PORT}", "--store",
                                                f"{MOUNT}/store", *tls("src"), "-v"), command=["sh"], host_network=True))
    wait_listening(core, ns, "agent", base / "agent.out", timeout)
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


# -- memory recovery driven by the operator ---------------------------------------------------------------
# What a user deploys: a stateful Deployment whose workload keeps its state in a registered region (here the
# `edgeweave memory writer`, beside the demo's TCP server in the same pod), a WorkloadGroup with
# memoryRecovery (a ReadWriteMany claim for the baselines, a token Secret, the recovery's TLS Secret), and
# the memory agent on every node. The operator moves the pod (aggregation: the demo client, pinned to the
# other node, talks to it) and its webhook gives the replacement the recovery init container; a pod
# SIGKILLed and force-deleted is replaced by its ReplicaSet, and the operator's standing registration gives
# that replacement the same. The app container checks the recovered region against the acknowledgement log
# of the pod it replaces, then carries on writing (a new region, registered under its own pod UID).
APP = "kv"
STORE_CLAIM = "baselines"
TOKEN_SECRET = "region-token"
CHECK_FILE = r"""
import json, sys
import numpy as np
from edgeweave.memory.loadgen import read_acks
from edgeweave.memory.patterns import check
path, size, ack, out = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
n = size // 4096
words = np.fromfile(path, dtype=np.uint64).reshape(n, 512)
acked = read_acks(ack, n)
ahead, wrong = check(words, acked)
res = {"region_file": path, "checked_pages": n, "acked_writes": int(acked.sum()), "lost": int(len(wrong)),
       "ahead": int(len(ahead))}
open(out, "w").write(json.dumps(res) + "\n")
print(json.dumps(res), flush=True)
"""
# The app: a recovered region (the init container's /dev/shm/edgeweave-<ns>_<old uid>_<app>) is checked
# against the replaced pod's acknowledgements first; then the writer runs, its output kept per pod UID.
APP_SCRIPT = (
    'for f in /dev/shm/edgeweave-*; do [ -e "$f" ] || continue; '
    'old=$(echo "$f" | sed -E "s#.*/edgeweave-[^_]+_([^_]+)_.*#\\1#"); '
    'python3.11 -c "$CHECK" "$f" "$SIZE" "/mm/acks/$old.ack" "/mm/check/$POD_UID.json" || exit 3; done; '
    'exec edgeweave memory writer --name "$APP" --size "$SIZE" --control "/mm/sock/$NODE_NAME/agent.sock" '
    '--token-file /mm/token --store /var/lib/edgeweave/baselines --ack "/mm/acks/$POD_UID.ack" '
    '--namespace "$POD_NAMESPACE" --pod-uid "$POD_UID" --dirty-pages 300 --rate 200 > "/mm/out/$POD_UID.txt"'
)


def _field(name: str, path: str) -> dict:
    return {"name": name, "valueFrom": {"fieldRef": {"fieldPath": path}}}


def stateful_app(base: Path, image: str, prefer: str, *, size: int = 64 << 20, group: str = "kvg") -> dict:
    """The stateful workload's Deployment: the demo TCP server and the region-keeping writer in one pod,
    preferring node `prefer` (soft: the operator may move it). hostPID: the agent takes the registering
    process's pid from SO_PEERCRED, so both must see one pid namespace (as the chart's agent does)."""
    labels = {"app": APP, "edgeweave.io/group": group}
    mounts = [{"name": "mm", "mountPath": MOUNT}, {"name": "edgeweave-shm", "mountPath": "/dev/shm"},
              {"name": "edgeweave-baselines", "mountPath": "/var/lib/edgeweave/baselines"}]
    spec = {
        "nodeSelector": {"edgeweave.io/real-node": "true"}, "hostPID": True, "terminationGracePeriodSeconds": 2,
        "enableServiceLinks": False,
        "affinity": {"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
            {"weight": 100, "preference": {"matchExpressions": [
                {"key": "kubernetes.io/hostname", "operator": "In", "values": [prefer]}]}}]}},
        "containers": [
            {"name": "server", "image": "edgeweave.local/demo:dev", "imagePullPolicy": "Never", "args": ["server"],
             "ports": [{"name": "demo", "containerPort": 7000}]},
            {"name": APP, "image": image, "imagePullPolicy": "Never", "command": ["sh", "-c", APP_SCRIPT],
             "securityContext": {"runAsUser": 0}, "volumeMounts": mounts,
             "env": [_field("POD_UID", "metadata.uid"), _field("POD_NAMESPACE", "metadata.namespace"),
                     _field("NODE_NAME", "spec.nodeName"), {"name": "APP", "value": APP},
                     {"name": "SIZE", "value": str(size)}, {"name": "CHECK", "value": CHECK_FILE}]}],
        "volumes": [{"name": "mm", "hostPath": {"path": str(base), "type": "Directory"}},
                    {"name": "edgeweave-shm", "emptyDir": {"medium": "Memory", "sizeLimit": "512Mi"}},
                    {"name": "edgeweave-baselines", "persistentVolumeClaim": {"claimName": STORE_CLAIM}}],
    }
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": APP, "labels": labels},
            "spec": {"replicas": 1, "selector": {"matchLabels": labels},
                     "template": {"metadata": {"labels": labels}, "spec": spec}}}


def memory_group(name: str = "kvg", size: int = 64 << 20) -> dict:
    """The demo's WorkloadGroup (aggregation from the client's real traffic) with memory recovery on."""
    from demo import workload_group  # hack/ is on the path of whoever loaded this module

    wg = workload_group(name)
    wg["spec"]["memoryRecovery"] = {"enabled": True, "storeClaim": STORE_CLAIM, "tokenSecret": TOKEN_SECRET,
                                    "regionSizeBytes": size}
    return wg


def start_agents(core, nodes: list[Any], ns: str, image: str, base: Path, timeout: float) -> None:
    """The memory agent on every node (what the chart's agent DaemonSet runs with agent.memory.enabled): its
    control socket under /mm/sock/<node>/ (the nodes share one host's filesystem), page server on the
    node's address, mutual TLS."""
    for n in nodes:
        (base / "sock" / n.name).mkdir(parents=True, exist_ok=True)
        pod = _pod(f"agent-{n.name}", n.name, image, _tee(
            f"{MOUNT}/agent-{n.name}.out", "memory", "serve", "--control", f"{MOUNT}/sock/{n.name}/agent.sock",
            "--listen", f"{n.ip}:{PORT}", "--store", f"{MOUNT}/store", "--tls-cert", f"{MOUNT}/pki/{n.name}/tls.crt",
            "--tls-key", f"{MOUNT}/pki/{n.name}/tls.key", "--tls-ca", f"{MOUNT}/pki/ca.crt", "-v"),
            command=["sh"], host_network=True)
        pod["spec"]["volumes"][0]["hostPath"]["path"] = str(base)
        pod["metadata"]["labels"] = {"app": "memory-agent"}
        core.create_namespaced_pod(ns, pod)
    for n in nodes:
        wait_listening(core, ns, f"agent-{n.name}", base / f"agent-{n.name}.out", timeout)


def prepare_store(core, ns: str, base: Path, nodes: list[Any]) -> str:
    """Baseline store (a hostPath PV bound to the group's ReadWriteMany claim: both nodes see the one
    host's directory), the region token Secret, and the recovery's client certificate Secret. Returns the
    token."""
    from edgeweave.memory.certs import make_pki

    for d in ("store", "sock", "acks", "out", "check"):
        (base / d).mkdir(parents=True, exist_ok=True)
    make_pki(base / "pki", {**{n.name: n.ip for n in nodes}, "recovery": nodes[0].ip})
    token = secrets.token_hex(32)
    (base / "token").write_text(token)
    pv = f"{ns}-{STORE_CLAIM}"
    core.create_persistent_volume({
        "apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": pv},
        "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteMany"], "storageClassName": "",
                 "hostPath": {"path": str(base / "store"), "type": "Directory"},
                 "persistentVolumeReclaimPolicy": "Retain", "claimRef": {"namespace": ns, "name": STORE_CLAIM}}})
    core.create_namespaced_persistent_volume_claim(ns, {
        "apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": STORE_CLAIM},
        "spec": {"accessModes": ["ReadWriteMany"], "storageClassName": "", "volumeName": pv,
                 "resources": {"requests": {"storage": "1Gi"}}}})
    core.create_namespaced_secret(ns, {"metadata": {"name": TOKEN_SECRET}, "stringData": {"token": token}})
    pki = base / "pki"
    core.create_namespaced_secret(ns, {"metadata": {"name": "edgeweave-memory-tls"}, "stringData": {
        "ca.crt": (pki / "ca.crt").read_text(), "tls.crt": (pki / "recovery" / "tls.crt").read_text(),
        "tls.key": (pki / "recovery" / "tls.key").read_text()}})
    _wait(lambda: core.read_namespaced_persistent_volume_claim(STORE_CLAIM, ns).status.phase == "Bound", 60,
          "the baseline claim to bind")
    return token


def app_pods(core, ns: str) -> list[Any]:
    return [p for p in core.list_namespaced_pod(ns, label_selector=f"app={APP}").items
            if not p.metadata.deletion_timestamp]


def writer_ready(core, ns: str, base: Path, timeout: float, not_uid: set[str] = frozenset()) -> tuple[Any, dict]:
    """The app pod (not one of `not_uid`) whose writer printed READY, and that line's JSON."""
    def ready() -> tuple[Any, dict] | None:
        for p in app_pods(core, ns):
            if p.metadata.uid in not_uid or p.status.phase != "Running":
                continue
            line = next((ln for ln in _out(base / "out" / f"{p.metadata.uid}.txt").splitlines()
                         if ln.startswith("READY ")), None)
            if line:
                return p, json.loads(line[6:])
        return None

    def detail() -> str:
        return "; ".join(f"{p.metadata.name}: {_pod_state(core, ns, p.metadata.name)}" for p in app_pods(core, ns))

    return _wait(ready, timeout, f"a new {APP} pod's writer READY line", detail)


def steady_writes(base: Path, uid: str, rate: float = 200.0, seconds: float = 2.0) -> None:
    ack = base / "acks" / f"{uid}.ack"
    n0 = ack.stat().st_size
    _wait(lambda: ack.stat().st_size >= n0 + 8 * int(rate * seconds), 60, "steady acknowledged writes")


def replacement_result(core, ns: str, base: Path, old_uid: str, timeout: float) -> dict:
    """The pod that replaced `old_uid`: its init container's recovery report and its app's check."""
    from edgeweave.memory.podpatch import INIT_NAME, recovery_report

    def done() -> dict | None:
        for p in app_pods(core, ns):
            chk = base / "check" / f"{p.metadata.uid}.json"
            if p.metadata.uid != old_uid and chk.exists() and chk.read_text().strip():
                return {"pod": p, "check": json.loads(chk.read_text())}
        return None

    def detail() -> str:
        return "; ".join(f"{p.metadata.name}: {_pod_state(core, ns, p.metadata.name)} init="
                         f"{[(c.name, c.state) for c in p.status.init_container_statuses or []]}"[:1200]
                         for p in app_pods(core, ns))

    got = _wait(done, timeout, f"the replacement of {old_uid} to check its recovered region", detail)
    pod = got["pod"]
    raw = core.api_client.sanitize_for_serialization(core.read_namespaced_pod(pod.metadata.name, ns))
    report = recovery_report(raw.get("status")) or {}
    init = next((c for c in raw["spec"].get("initContainers") or [] if c["name"] == INIT_NAME), None)
    check = got["check"]
    return {
        "state_restored": bool(report.get("ok") and report.get("mode") == "baseline+dirty" and check.get("lost") == 0
                               and check.get("acked_writes", 0) > 0 and f"_{old_uid}_" in check.get("region_file", "")),
        "pod": pod.metadata.name, "uid": pod.metadata.uid, "node": pod.spec.node_name, "check": check,
        "init_container": init is not None, "init_script": (init or {}).get("command", [""])[-1],
        "restore_seconds": report.get("duration_s"), "restore_mode": report.get("mode"),
        "restore_epoch": report.get("epoch"), "restore_bytes_from_baseline": report.get("baseline_bytes"),
        "restore_bytes_from_source": report.get("bytes"), "restore_dirty_pages": report.get("dirty_pages"),
        "wait_owner_exit_s": (report.get("phases") or {}).get("wait_owner_exit_s"),
        "source_agent": (report.get("sources") or {}).get("source_agent"),
        "steered_by": (pod.metadata.annotations or {}).get("edgeweave.io/steered-by-move"),
    }


def sigkill_and_replace(core, ns: str, pod: Any, writer_pid: int) -> None:
    """SIGKILL the workload and have its controller replace the pod: the pod is force-deleted (as a node's
    eviction of a dead pod does) and its writer SIGKILLed at once, by its host pid (hostPID)."""
    core.delete_namespaced_pod(pod.metadata.name, ns, grace_period_seconds=0)
    try:
        os.kill(writer_pid, signal.SIGKILL)
    except ProcessLookupError:  # the kubelet was first
        pass
    _wait(lambda: not Path(f"/proc/{writer_pid}").exists(), 30, "the writer to die")


def operator_driven(core, apps, custom, prom, nodes: list[Any], ns: str, image: str, base: Path,
                    operator_log: Callable[[], str], timeout: float = 240.0) -> dict:
    """The whole operator-driven scenario in namespace `ns` (the operator watches it, its webhook is live):
    the stateful pod on nodes[0], the client pinned to nodes[1]; the operator moves the pod (aggregation),
    then the moved pod is SIGKILLed and force-deleted. Returns what happened (the caller asserts or
    reports): `move` and `kill` (replacement_result of each), `move_status`, `deployment_unchanged`.
    Removes its pods and PV before it returns."""
    from demo import deployment, service

    src, dst = nodes[0], nodes[1]
    base.chmod(0o755)
    try:
        prepare_store(core, ns, base, nodes)
        start_agents(core, nodes, ns, image, base, timeout)
        core.create_namespaced_service(ns, service("demo-server", APP))
        apps.create_namespaced_deployment(ns, stateful_app(base, image, prefer=src.name))
        pod1, _ = writer_ready(core, ns, base, timeout)
        uid1 = pod1.metadata.uid
        if pod1.spec.node_name != src.name:
            raise RuntimeError(f"the stateful pod started on {pod1.spec.node_name}, not on {src.name}")
        cl = deployment("demo-client", "client", "kvg", env={
            "SOURCE_WORKLOAD": "demo-client", "DESTINATION_WORKLOAD": APP, "INTERVAL_MS": "20",
            "REQUEST_BYTES": "32768"})
        cl["spec"]["template"]["spec"]["nodeSelector"]["kubernetes.io/hostname"] = dst.name  # only kv can move
        apps.create_namespaced_deployment(ns, cl)
        query = f'sum(rate(edgeweave_flow_bytes_total{{namespace="{ns}"}}[15s]))'
        _wait(lambda: (r := prom.query(query)) and float(r[0]["value"][1]) > 1e5, 120,
              "Prometheus to see the client's bytes to the stateful server")
        steady_writes(base, uid1)
        dep = apps.read_namespaced_deployment(APP, ns)
        before = (dep.metadata.generation, dep.spec.template.to_dict())

        t0 = time.monotonic()
        custom.create_namespaced_custom_object("edgeweave.io", "v1alpha1", ns, "workloadgroups", memory_group("kvg"))
        moved = replacement_result(core, ns, base, uid1, timeout)
        moved["group_to_recovered_s"] = round(time.monotonic() - t0, 2)

        def done() -> dict | None:
            st = custom.get_namespaced_custom_object("edgeweave.io", "v1alpha1", ns, "workloadgroups",
                                                     "kvg").get("status") or {}
            ms = (st.get("plan") or {}).get("moves") or []
            return ms[0] if st.get("movesTotal") == 1 and ms and ms[0]["phase"] == "Done" else None

        move = _wait(done, 60, "the move Done in the group's status")
        dep = apps.read_namespaced_deployment(APP, ns)
        unchanged = (dep.metadata.generation, dep.spec.template.to_dict()) == before \
            and not dep.spec.template.spec.init_containers

        pod2, ready2 = writer_ready(core, ns, base, timeout, not_uid={uid1})
        uid2 = pod2.metadata.uid
        _wait(lambda: f"{uid2} on {pod2.spec.node_name}" in operator_log(), 60,
              "the operator's standing registration for the moved pod")
        steady_writes(base, uid2)
        t1 = time.monotonic()
        sigkill_and_replace(core, ns, pod2, int(ready2["pid"]))
        killed = replacement_result(core, ns, base, uid2, timeout)
        killed["kill_to_recovered_s"] = round(time.monotonic() - t1, 2)
        return {"move": moved, "kill": killed, "move_status": move, "deployment_unchanged": unchanged,
                "uids": [uid1, uid2], "moved_pod": pod2.metadata.name, "nodes": [src.name, dst.name],
                "ips": [src.ip, dst.ip]}
    finally:
        for d in ("demo-client", APP):
            try:
                apps.delete_namespaced_deployment(d, ns)
            except Exception:  # noqa: BLE001 - never made
                pass
        try:
            _wait(lambda: not app_pods(core, ns), 60, "the app pods to go")
            remove_pods(core, ns, [f"agent-{n.name}" for n in nodes])
        except RuntimeError:
            pass
        try:
            core.delete_persistent_volume(f"{ns}-{STORE_CLAIM}")
        except Exception:  # noqa: BLE001 - never made
            pass
