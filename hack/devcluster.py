#!/usr/bin/env python3
"""A real local control plane for edgeweave: etcd, kube-apiserver, controller-manager, scheduler, kwok.

Everything binds to 127.0.0.1. `start` writes a kubeconfig and waits for /readyz; `stop` kills every
process it started (by process group) and leaves nothing behind. Used by `make run` and by the
integration tests' session fixture. Stdlib only, so it runs before the venv exists.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import ssl
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent


@dataclass(frozen=True)
class Ports:
    etcd: int = int(os.environ.get("EDGEWEAVE_ETCD_PORT", "23790"))
    etcd_peer: int = int(os.environ.get("EDGEWEAVE_ETCD_PEER_PORT", "23800"))
    apiserver: int = int(os.environ.get("EDGEWEAVE_APISERVER_PORT", "16443"))
    controller_manager: int = int(os.environ.get("EDGEWEAVE_KCM_PORT", "16257"))
    scheduler: int = int(os.environ.get("EDGEWEAVE_SCHED_PORT", "16259"))
    kwok: int = int(os.environ.get("EDGEWEAVE_KWOK_PORT", "16280"))


def run_dir() -> Path:
    return Path(os.environ.get("EDGEWEAVE_RUN_DIR", REPO / ".run" / "cluster"))


def bin_dir() -> Path:
    out = subprocess.run(["bash", str(HERE / "build-binaries.sh")], check=True, stdout=subprocess.PIPE,
                         text=True)
    return Path(out.stdout.strip().splitlines()[-1])


def log(msg: str) -> None:
    print(f"[devcluster] {msg}", file=sys.stderr, flush=True)


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], check=True, cwd=cwd, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)


def make_pki(pki: Path) -> None:
    """CA, serving cert for 127.0.0.1, an admin client cert (system:masters), service-account keys."""
    # The real nodes (hack/realnodes.py) reach the API server through the host bridge address.
    bridge = os.environ.get("EDGEWEAVE_REALNODE_NET", "10.250.0") + ".1"
    if (pki / "admin.crt").exists():
        ext = pki / "server.ext"
        if ext.exists() and f"IP:{bridge},IP:10.96.0.1," in ext.read_text(errors="replace"):
            return
        shutil.rmtree(pki)  # made before the bridge address was in its SAN
    pki.mkdir(parents=True, exist_ok=True)
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.crt",
             "-days", "3650", "-subj", "/CN=edgeweave-dev-ca", cwd=pki)
    (pki / "server.ext").write_text(
        # 10.96.0.1: the `kubernetes` Service, which pods on the real nodes use (in-cluster config).
        f"subjectAltName=IP:127.0.0.1,IP:{bridge},IP:10.96.0.1,DNS:localhost,DNS:kubernetes,"
        "DNS:kubernetes.default,DNS:kubernetes.default.svc\nextendedKeyUsage=serverAuth\n")
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr",
             "-subj", "/CN=kube-apiserver", cwd=pki)
    _openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
             "-out", "server.crt", "-days", "3650", "-extfile", "server.ext", cwd=pki)
    (pki / "client.ext").write_text("extendedKeyUsage=clientAuth\n")
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "admin.key", "-out", "admin.csr",
             "-subj", "/O=system:masters/CN=edgeweave-admin", cwd=pki)
    _openssl("x509", "-req", "-in", "admin.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
             "-out", "admin.crt", "-days", "3650", "-extfile", "client.ext", cwd=pki)
    _openssl("genrsa", "-out", "sa.key", "2048", cwd=pki)
    _openssl("rsa", "-in", "sa.key", "-pubout", "-out", "sa.pub", cwd=pki)


def write_kubeconfig(path: Path, pki: Path, port: int) -> None:
    path.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "edgeweave-dev",
        "clusters": [{"name": "edgeweave-dev", "cluster": {
            "server": f"https://127.0.0.1:{port}", "certificate-authority": str(pki / "ca.crt")}}],
        "users": [{"name": "admin", "user": {
            "client-certificate": str(pki / "admin.crt"), "client-key": str(pki / "admin.key")}}],
        "contexts": [{"name": "edgeweave-dev", "context": {"cluster": "edgeweave-dev", "user": "admin"}}],
    }, indent=2))


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def _spawn(name: str, argv: list[str], rd: Path, env: dict[str, str] | None = None) -> None:
    logf = open(rd / "logs" / f"{name}.log", "ab")  # noqa: SIM115 - the child owns it
    # A new session per component: stop kills the whole group, so nothing leaks.
    proc = subprocess.Popen(argv, stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            start_new_session=True, env={**os.environ, **env} if env else None)
    (rd / "pids" / f"{name}.pid").write_text(str(proc.pid))


def _get(url: str, pki: Path, timeout: float = 2.0) -> tuple[int, str]:
    ctx = ssl.create_default_context(cafile=str(pki / "ca.crt"))
    ctx.load_cert_chain(str(pki / "admin.crt"), str(pki / "admin.key"))
    try:
        with urllib.request.urlopen(url, context=ctx, timeout=timeout) as r:  # noqa: S310 - loopback
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(errors="replace")
    except OSError as e:
        return 0, str(e)


def _wait(what: str, check, timeout: float, rd: Path, name: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        pid_file = rd / "pids" / f"{name}.pid"
        if pid_file.exists() and not _alive(int(pid_file.read_text())):
            tail = (rd / "logs" / f"{name}.log").read_text(errors="replace")[-3000:]
            raise RuntimeError(f"{name} exited while waiting for {what}:\n{tail}")
        time.sleep(0.3)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what}; see {rd / 'logs' / (name + '.log')}")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
        return state != "Z"
    except OSError:
        return False


def kubeconfig_path() -> Path:
    return run_dir() / "kubeconfig"


def running() -> bool:
    """Whether a control plane from this run dir is up (a test suite may reuse the one another started)."""
    rd = run_dir()
    return (rd / "pids").exists() and any(_alive(int(p.read_text())) for p in (rd / "pids").glob("*.pid"))


# kwok's defaults (4 node leases, 4 node and 4 pod stage transitions in flight) cannot keep 1,000+
# devices' leases renewed on a busy API server: renewals fall behind the node monitor's grace period and
# nodes flap NotReady, so a big fleet never shows all Ready. Fleet scale (bench-scale) raises the
# parallelism and renews each lease every 150 s instead of 10 s (lease 600 s, renewed at a quarter of it;
# kubelet's own default is 40 s / 10 s), with the controller-manager's grace period to match (400 s): 2,000
# devices renewing every 10 s would be 200 lease writes a second before anything else runs. The bench
# never takes a device down, so how soon a dead one would show NotReady does not enter its figures.
#
# The node stages replace kwok's defaults. With leases on, kwok's default heartbeat patches every node's
# status every 20-45 s (at 2,000 devices ~60 node status writes a second, each fanned out to the
# controller-manager's and scheduler's node informers): the bench needs none of it, since the node
# lifecycle controller reads liveness from the lease. The heartbeat here is a kubelet's (status every
# 5 min when nothing changed; kwok's jitter is the delay's upper bound: 5-6 min).
_NODE_CONDITIONS = """\
      {{ $now := Now }}
      {{ $lastTransitionTime := or .metadata.creationTimestamp $now }}
      conditions:
      {{ range NodeConditions }}
      - lastHeartbeatTime: {{ $now | Quote }}
        lastTransitionTime: {{ $lastTransitionTime | Quote }}
        message: {{ .message | Quote }}
        reason: {{ .reason | Quote }}
        status: {{ .status | Quote }}
        type: {{ .type | Quote }}
      {{ end }}
"""
# Capacity, allocatable and nodeInfo are in the node as `sim.fleet` creates it; kwok's own initialise
# stage would only default them.
KWOK_NODE_STAGES = """---
apiVersion: kwok.x-k8s.io/v1alpha1
kind: Stage
metadata:
  name: node-initialize
spec:
  resourceRef: {apiGroup: v1, kind: Node}
  selector:
    matchExpressions:
    - key: '.status.conditions.[] | select( .type == "Ready" ) | .status'
      operator: 'NotIn'
      values: ['True']
  next:
    statusTemplate: |
""" + _NODE_CONDITIONS + """\
      addresses:
      {{ with NodeIP }}
      - address: {{ . | Quote }}
        type: InternalIP
      {{ end }}
      phase: Running
---
apiVersion: kwok.x-k8s.io/v1alpha1
kind: Stage
metadata:
  name: node-heartbeat-kubelet-like
spec:
  resourceRef: {apiGroup: v1, kind: Node}
  selector:
    matchExpressions:
    - key: '.status.phase'
      operator: 'In'
      values: ['Running']
    - key: '.status.conditions.[] | select( .type == "Ready" ) | .status'
      operator: 'In'
      values: ['True']
  delay:
    durationMilliseconds: 300000
    jitterDurationMilliseconds: 360000
  next:
    statusTemplate: |
""" + _NODE_CONDITIONS + """\
  immediateNextStage: true
"""
KWOK_SCALE_CONFIG = """apiVersion: config.kwok.x-k8s.io/v1alpha1
kind: KwokConfiguration
options:
  nodeLeaseDurationSeconds: 600
  nodeLeaseParallelism: 32
  nodePlayStageParallelism: 16
  podPlayStageParallelism: 32
""" + KWOK_NODE_STAGES

# Tuned (opt-in, `start(tuned=True)`; bench-remediation): a cluster set up for fast failover, as a user
# running hundreds of devices would set it. kwok's 4 pod transitions in flight queue a burst of evictions
# and replacements (80 at once: Ready seconds late); the kubelet-like heartbeat spares the API server 500
# status writes a minute (liveness comes from the 40 s lease, renewed every 10 s as a kubelet does).
KWOK_TUNED_OPTIONS = {"nodeLeaseDurationSeconds": 40, "nodeLeaseParallelism": 16, "nodePlayStageParallelism": 16,
                      "podPlayStageParallelism": 32}
KWOK_TUNED_CONFIG = ("apiVersion: config.kwok.x-k8s.io/v1alpha1\nkind: KwokConfiguration\noptions:\n" +
                     "".join(f"  {k}: {v}\n" for k, v in KWOK_TUNED_OPTIONS.items()) + KWOK_NODE_STAGES)
# The controller-manager's side: 20 ReplicaSet and Deployment workers instead of 5 (a burst of evictions is
# one replacement per ReplicaSet), and the NotReady path at its best: the node lifecycle controller taints
# up to 10 unreachable devices a second instead of one every 10 s.
KCM_TUNED_FLAGS = ("--concurrent-replicaset-syncs=20", "--concurrent-deployment-syncs=20", "--node-eviction-rate=10")


# Fleet scale also writes the API server's audit log (metadata only): it names each request's client by
# user agent, so the bench counts the operator's own requests, not a guess by resource. Left out: leases
# and pod and node status, which only kwok writes (the operator never does); at 20,000 pods kwok's status
# patches would be half the log, written while the API server is the build's bottleneck.
AUDIT_POLICY = """apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: ["RequestReceived"]
rules:
- level: None
  resources: [{group: "coordination.k8s.io", resources: ["leases"]}]
- level: None
  resources: [{group: "", resources: ["pods/status", "nodes/status"]}]
- level: Metadata
"""


def audit_log_path() -> Path:
    return run_dir() / "logs" / "audit.log"


def start(*, wait_nodes_controller: bool = True, fleet_scale: bool = False, tuned: bool = False) -> Path:
    rd = run_dir()
    _reap_children(rd)
    if running():
        log(f"already running (state in {rd}); `stop` first")
        return kubeconfig_path()
    bins = bin_dir()
    ports = Ports()
    for sub in ("logs", "pids", "pki", "etcd"):
        (rd / sub).mkdir(parents=True, exist_ok=True)
    shutil.rmtree(rd / "etcd", ignore_errors=True)
    pki = rd / "pki"
    make_pki(pki)
    kubeconfig = kubeconfig_path()
    write_kubeconfig(kubeconfig, pki, ports.apiserver)
    t0 = time.monotonic()

    etcd = shutil.which("etcd") or "/usr/bin/etcd"
    _spawn("etcd", [etcd, "--data-dir", str(rd / "etcd"), "--name", "edgeweave-dev",
                    "--listen-client-urls", f"http://127.0.0.1:{ports.etcd}",
                    "--advertise-client-urls", f"http://127.0.0.1:{ports.etcd}",
                    "--listen-peer-urls", f"http://127.0.0.1:{ports.etcd_peer}",
                    "--initial-advertise-peer-urls", f"http://127.0.0.1:{ports.etcd_peer}",
                    "--initial-cluster", f"edgeweave-dev=http://127.0.0.1:{ports.etcd_peer}",
                    "--unsafe-no-fsync", "--quota-backend-bytes", str(4 * 1024**3)], rd)

    def etcd_ok() -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{ports.etcd}/health", timeout=1) as r:  # noqa: S310
                return b"true" in r.read()
        except OSError:
            return False

    _wait("etcd /health", etcd_ok, 30, rd, "etcd")

    _spawn("kube-apiserver", [
        str(bins / "kube-apiserver"),
        f"--etcd-servers=http://127.0.0.1:{ports.etcd}",
        "--bind-address=127.0.0.1", "--advertise-address=127.0.0.1", f"--secure-port={ports.apiserver}",
        f"--cert-dir={pki}", f"--tls-cert-file={pki / 'server.crt'}",
        f"--tls-private-key-file={pki / 'server.key'}", f"--client-ca-file={pki / 'ca.crt'}",
        "--service-cluster-ip-range=10.96.0.0/24", "--service-account-issuer=https://kubernetes.default.svc",
        f"--service-account-key-file={pki / 'sa.pub'}",
        f"--service-account-signing-key-file={pki / 'sa.key'}",
        "--authorization-mode=Node,RBAC", "--allow-privileged=true",
        # logs/exec/port-forward on the real nodes: reach kubelets by their bridge IP, both sides verified.
        "--kubelet-preferred-address-types=InternalIP,Hostname",
        f"--kubelet-client-certificate={pki / 'admin.crt'}", f"--kubelet-client-key={pki / 'admin.key'}",
        f"--kubelet-certificate-authority={pki / 'ca.crt'}",
        # Service-based webhooks (the chart's) are reached at an endpoint's pod IP, not the ClusterIP: the
        # API server runs on the host, which routes to the real nodes' pod CIDRs but runs no kube-proxy.
        "--enable-aggregator-routing=true",
        "--enable-priority-and-fairness=false", "--endpoint-reconciler-type=none",
        "--profiling=false", "--event-ttl=2h",
        "--max-requests-inflight=1200", "--max-mutating-requests-inflight=600",
        *([f"--audit-policy-file={_write(rd / 'audit-policy.yaml', AUDIT_POLICY)}",
           f"--audit-log-path={audit_log_path()}", "--audit-log-format=json", "--audit-log-mode=batch",
           "--audit-log-batch-max-wait=1s",
           "--audit-log-maxsize=4096", "--audit-log-maxbackup=1"] if fleet_scale else []),
        # Fleet scale: the API server is the build's bottleneck (20,000 pod creates and as many status
        # patches on a shared core), and with Go's default GOGC=100 a good part of its CPU is garbage
        # collection of a 1-2 GB heap; GOGC=300 trades memory for it while the heap is small, and the soft
        # limit caps the trade (GOGC=300 alone let the heap reach 6.8 GB once 20,000 pods were listed).
    ], rd, env={"GOGC": "300", "GOMEMLIMIT": "2500MiB"} if fleet_scale else None)
    readyz = f"https://127.0.0.1:{ports.apiserver}/readyz"
    _wait("kube-apiserver /readyz", lambda: _get(readyz, pki)[0] == 200, 120, rd, "kube-apiserver")

    _spawn("kube-controller-manager", [
        str(bins / "kube-controller-manager"), f"--kubeconfig={kubeconfig}",
        f"--authentication-kubeconfig={kubeconfig}", f"--authorization-kubeconfig={kubeconfig}",
        "--leader-elect=false", "--bind-address=127.0.0.1", f"--secure-port={ports.controller_manager}",
        f"--service-account-private-key-file={pki / 'sa.key'}", f"--root-ca-file={pki / 'ca.crt'}",
        "--use-service-account-credentials=false", "--cluster-name=edgeweave-dev",
        # Fleet scale: no TTL controller. It sets an annotation for real kubelets' object caches, by a GET
        # and a PATCH per node each time the fleet's size crosses one of its steps (2,000 devices: three
        # passes, ~10 requests a second for the first minutes of the build); kwok has no such cache.
        "--controllers=*,-nodeipam,-service-lb-controller,-cloud-node-lifecycle" + (",-ttl" if fleet_scale else ""),
        f"--node-monitor-grace-period={'400s' if fleet_scale else '40s'}", "--kube-api-qps=200",
        "--kube-api-burst=400",
        # kwok initialises a thousand new devices in minutes on a busy machine, not in the default 60 s
        *(["--node-startup-grace-period=600s"] if fleet_scale else []),
        *(KCM_TUNED_FLAGS if tuned else ()),
    ], rd)
    _spawn("kube-scheduler", [
        str(bins / "kube-scheduler"), f"--kubeconfig={kubeconfig}",
        f"--authentication-kubeconfig={kubeconfig}", f"--authorization-kubeconfig={kubeconfig}",
        "--leader-elect=false", "--bind-address=127.0.0.1", f"--secure-port={ports.scheduler}",
        "--kube-api-qps=200", "--kube-api-burst=400",
    ], rd)
    _spawn("kwok", [
        str(bins / "kwok"), f"--kubeconfig={kubeconfig}", "--manage-all-nodes=false",
        "--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake",
        "--disregard-status-with-annotation-selector=kwok.x-k8s.io/status=custom",
        "--cidr=10.244.0.1/16", "--node-ip=10.244.0.1",
        # At fleet scale kwok's one INFO line per lease renewal and status patch is ~100 lines a second.
        *([f"--config={_write(rd / 'kwok.yaml', KWOK_SCALE_CONFIG)}", "--v=WARN"] if fleet_scale else
          [f"--config={_write(rd / 'kwok.yaml', KWOK_TUNED_CONFIG)}"] if tuned else
          ["--node-lease-duration-seconds=40"]),
        f"--server-address=127.0.0.1:{ports.kwok}",
    ], rd)
    default_sa = f"https://127.0.0.1:{ports.apiserver}/api/v1/namespaces/default/serviceaccounts/default"
    if wait_nodes_controller:
        # The controller-manager is serving once it has created the default ServiceAccount.
        _wait("default ServiceAccount (controller-manager up)", lambda: _get(default_sa, pki)[0] == 200,
              120, rd, "kube-controller-manager")
    log(f"control plane ready in {time.monotonic() - t0:.1f}s; KUBECONFIG={kubeconfig}")
    (rd / "bin").unlink(missing_ok=True)
    (rd / "bin").symlink_to(bins)
    return kubeconfig


def _reap_children(rd: Path) -> None:
    """What a killed test session left (its Prometheus, its operators: hack/reaper.py records)."""
    sys.path.insert(0, str(HERE))
    import reaper  # noqa: PLC0415 - hack/ is a script dir

    for what in reaper.reap(rd):
        log(f"reaped {what}, left by a session that is gone")


def _recorded_alive(pid_file: Path) -> bool:
    """The pid in `pid_file` is alive and started before the file was written: a recycled pid (a later
    process) is never killed."""
    pid = int(pid_file.read_text())
    if not _alive(pid):
        return False
    try:
        ticks = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
        boot = next(float(ln.split()[1]) for ln in Path("/proc/stat").read_text().splitlines()
                    if ln.startswith("btime "))
    except (OSError, ValueError, IndexError, StopIteration):
        return True
    return boot + ticks / os.sysconf("SC_CLK_TCK") <= pid_file.stat().st_mtime + 2.0


def stop() -> None:
    rd = run_dir()
    _reap_children(rd)
    if (rd / "realnodes" / "state.json").exists():  # real nodes first: their kubelets talk to the API server
        sys.path.insert(0, str(HERE))
        import realnodes as realnode  # noqa: PLC0415 - only when a run made real nodes

        realnode.stop(rd)
    pids_dir = rd / "pids"
    if not pids_dir.exists():
        return
    order = ["kwok", "kube-scheduler", "kube-controller-manager", "kube-apiserver", "etcd"]
    files = sorted(pids_dir.glob("*.pid"), key=lambda p: order.index(p.stem) if p.stem in order else -1)
    for pid_file in files:
        pid = int(pid_file.read_text())
        if not _recorded_alive(pid_file):
            pid_file.unlink()
            continue
        for sig, grace in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(pid, sig)
            except ProcessLookupError:
                break
            deadline = time.monotonic() + grace
            while time.monotonic() < deadline and _alive(pid):
                time.sleep(0.1)
            if not _alive(pid):
                break
        pid_file.unlink()
    log("stopped")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="devcluster")
    parser.add_argument("action", choices=["start", "stop", "kubeconfig", "bin-dir"])
    args = parser.parse_args(argv)
    if args.action == "start":
        print(start())
    elif args.action == "stop":
        stop()
    elif args.action == "kubeconfig":
        print(kubeconfig_path())
    else:
        print(bin_dir())
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
