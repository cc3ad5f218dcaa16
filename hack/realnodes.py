#!/usr/bin/env python3
"""Real Kubernetes nodes on this machine, beside the kwok fleet: containerd + runc + kubelet + kube-proxy.

Each node is an edge device in its own network namespace (`<prefix>-nN`), with one address on a host
bridge (`<prefix>0`, 10.250.0.0/24 by default) and its own pod CIDR (10.251.N.0/24) behind a CNI bridge
inside that namespace. Containerd, kubelet and kube-proxy are started with `nsenter --net=` (not
`ip netns exec`, whose private mount namespace would hide kubelet's volume mounts from containerd).
Host forwarding stays off and there is no NAT: nothing leaves the machine. The API server keeps binding
loopback; a forwarder on the bridge address lets the nodes (and their pods) reach it.

Everything this creates is written to `<run dir>/realnodes/state.json` BEFORE it is created, so `stop`
(and the next `start`, after a run killed with SIGKILL) removes exactly that: the processes it started
(by PID, and the PIDs inside the cgroups it created), mounts under its node dirs, cgroups, namespaces,
the bridge, host routes, and the host sysctls kubelet rewrites (restored to the saved values).

  realnodes.py start [--nodes N]   (control plane from devcluster.py must be up)
  realnodes.py import ARCHIVE      (an OCI archive into every node's containerd)
  realnodes.py forward PORT        (a loopback port reachable from the nodes at the bridge address)
  realnodes.py stop
Stdlib only.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import devcluster  # noqa: E402 - hack/ is a script dir
import images  # noqa: E402

PREFIX = os.environ.get("EDGEWEAVE_REALNODE_PREFIX", "ewr")
NET = os.environ.get("EDGEWEAVE_REALNODE_NET", "10.250.0")      # host bridge /24
POD_NET = os.environ.get("EDGEWEAVE_REALNODE_PODNET", "10.251")  # node N gets POD_NET.N.0/24
CGROOT = Path("/sys/fs/cgroup")
SERVICE_CIDR = "10.96.0.0/24"  # devcluster's --service-cluster-ip-range
CNI_BIN = "/usr/lib/cni"
# kubelet rewrites these host-wide at start (container_manager_linux setupKernelTunables).
SYSCTLS = ("vm.overcommit_memory", "kernel.panic", "kernel.panic_on_oops")
REAL_LABEL = "edgeweave.io/real-node"
# GpuJob slots on the real nodes: an extended resource in the node status (no device plugin: its socket
# path is host-global, one per machine). GpuJobs that ask for it (spec.vgpu.resource) run their slices on
# the CPU runtime in real containers; kwok's GPU nodes advertise nvidia.com/gpu and never get them.
VGPU_RESOURCE = os.environ.get("EDGEWEAVE_REALNODE_VGPU", "edgeweave.io/vgpu")
VGPU_PER_NODE = 2
SITE_LABEL = "edgeweave.io/site"


def bpffs_dir(rd: Path) -> Path:
    """A bpffs of the real nodes' own (kubelet resolves hostPaths in the host's mount namespace, so every
    node would share the host's /sys/fs/bpf, which is a private mount here: HostToContainer needs a shared
    one). The agent DaemonSet mounts this (agent.bpffsHostPath) and pins per node below it; `stop` unmounts
    it, pins and all."""
    return rd / "realnodes" / "bpffs"


def log(msg: str) -> None:
    print(f"[realnode] {msg}", file=sys.stderr, flush=True)


def bridge_ip() -> str:
    return f"{NET}.1"


# Each real node is an edge device with its own WAN uplinks, as in the flows topology (hack/flows_topo.py):
# uplink i is a veth `up<i>` in the node's namespace whose peer sits in a WAN namespace of its own
# (`<node>w<i>`). Taking the WAN side down drops the uplink's carrier inside the device, as a modem or
# cable failure does; the agent on the node sees it.
UPLINKS = (("inet", 100.0, 20.0), ("lte", 20.0, 45.0))  # name, Mbit/s, nominal latency (ms)


def uplink_ip(node_index: int, i: int, side: int) -> str:
    """Uplink i (1-based) of node N: POD_NET.(200+10N+i).0/24, the device .1, the WAN side (gateway) .2."""
    return f"{POD_NET}.{200 + 10 * node_index + i}.{side}"


@dataclass
class Node:
    name: str
    index: int
    ip: str
    pod_cidr: str
    netns: str
    veth_host: str
    dir: str
    cgroup: str       # kubelet's cgroupRoot: pods live below it
    sys_cgroup: str   # containerd, its shims, kubelet, kube-proxy

    @property
    def path(self) -> Path:
        return Path(self.dir)

    @property
    def sock(self) -> Path:
        return self.path / "containerd" / "containerd.sock"

    def wan_netns(self, i: int) -> str:
        return f"{self.netns}w{i}"

    def uplinks(self) -> list[dict]:
        """The device's uplinks as an EdgeSite lists them."""
        return [{"name": name, "interface": f"up{i}", "bandwidthMbps": mbit, "latencyMs": lat,
                 "gateway": uplink_ip(self.index, i, 2)} for i, (name, mbit, lat) in enumerate(UPLINKS, 1)]

    def set_uplink(self, i: int, up: bool) -> None:
        """Carrier of uplink i as the device sees it: its WAN side goes down (or comes back)."""
        _sh("ip", "link", "set", "wan", "up" if up else "down", netns=self.wan_netns(i))


def node_plan(count: int, rd: Path) -> list[Node]:
    out = []
    for i in range(1, count + 1):
        name = f"{PREFIX}-n{i}"
        out.append(Node(name=name, index=i, ip=f"{NET}.{10 + i}", pod_cidr=f"{POD_NET}.{i}.0/24",
                        netns=name, veth_host=f"{PREFIX}-n{i}h", dir=str(rd / "realnodes" / name),
                        cgroup=f"/{name}", sys_cgroup=f"/{name}-sys"))
    return out


def state_path(rd: Path) -> Path:
    return rd / "realnodes" / "state.json"


def _sh(*argv: str, check: bool = True, netns: str | None = None) -> subprocess.CompletedProcess:
    if netns:
        argv = ("nsenter", f"--net=/run/netns/{netns}", *argv)
    return subprocess.run(list(argv), check=check, capture_output=True, text=True)


def _sysctl_get(name: str) -> str:
    return Path("/proc/sys", *name.split(".")).read_text().strip()


def _sysctl_set(name: str, value: str) -> None:
    Path("/proc/sys", *name.split(".")).write_text(value)


def _hierarchies() -> list[Path]:
    """Mounted cgroup v1 hierarchies (the VM has no unified-only mode)."""
    return [p for p in sorted(CGROOT.iterdir()) if p.is_dir() and p.name != "unified"
            and (p / "cgroup.procs").exists()]


def _make_cgroup(rel: str) -> None:
    for h in _hierarchies():
        d = h / rel.lstrip("/")
        d.mkdir(exist_ok=True)
        if h.name == "cpuset":
            for f in ("cpuset.cpus", "cpuset.mems"):
                if not (d / f).read_text().strip():
                    (d / f).write_text((h / f).read_text().strip())


def _cgroup_pids(rel: str) -> set[int]:
    pids: set[int] = set()
    for h in _hierarchies():
        base = h / rel.lstrip("/")
        if not base.exists():
            continue
        # os.walk, not rglob: cgroups vanish while we walk (kubelet and runc remove them), and walk skips those.
        for d, _, files in os.walk(base):
            if "cgroup.procs" not in files:
                continue
            try:
                pids |= {int(x) for x in (Path(d) / "cgroup.procs").read_text().split()}
            except OSError:
                pass
    return pids


def _remove_cgroup(rel: str) -> None:
    for h in _hierarchies():
        base = h / rel.lstrip("/")
        if not base.exists():
            continue
        dirs = [Path(d) / sub for d, subs, _ in os.walk(base) for sub in subs]
        for d in sorted(dirs, key=lambda p: -len(p.parts)):
            try:
                d.rmdir()
            except OSError:
                pass
        try:
            base.rmdir()
        except OSError as e:
            log(f"could not remove cgroup {base}: {e}")


def _mounts_under(prefix: Path) -> list[str]:
    out = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        mp = line.split()[4].replace("\\040", " ")
        if mp == str(prefix) or mp.startswith(str(prefix) + "/"):
            out.append(mp)
    return out


def _unmount_all(prefix: Path) -> None:
    for _ in range(5):
        mps = _mounts_under(prefix)
        if not mps:
            return
        for mp in sorted(mps, key=lambda m: -m.count("/")):
            subprocess.run(["umount", "-l", mp], capture_output=True)
    left = _mounts_under(prefix)
    if left:
        log(f"mounts left under {prefix}: {left}")


# --- PKI ---------------------------------------------------------------------------------------------
def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], check=True, cwd=cwd, capture_output=True)


def node_pki(pki: Path, node: Node) -> Path:
    """Kubelet client cert (system:node:<name> in system:nodes, for the Node authorizer) and a serving
    cert with the node IP in its SAN, both signed by the cluster CA."""
    d = pki / "nodes" / node.name
    if (d / "serving.crt").exists():
        return d
    d.mkdir(parents=True, exist_ok=True)
    ca, cakey = str(pki / "ca.crt"), str(pki / "ca.key")
    (d / "client.ext").write_text("extendedKeyUsage=clientAuth\n")
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "client.key", "-out", "client.csr",
             "-subj", f"/O=system:nodes/CN=system:node:{node.name}", cwd=d)
    _openssl("x509", "-req", "-in", "client.csr", "-CA", ca, "-CAkey", cakey, "-CAcreateserial",
             "-out", "client.crt", "-days", "3650", "-extfile", "client.ext", cwd=d)
    (d / "serving.ext").write_text(f"subjectAltName=IP:{node.ip},DNS:{node.name}\nextendedKeyUsage=serverAuth\n")
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "serving.key", "-out", "serving.csr",
             "-subj", f"/CN={node.name}", cwd=d)
    _openssl("x509", "-req", "-in", "serving.csr", "-CA", ca, "-CAkey", cakey, "-CAcreateserial",
             "-out", "serving.crt", "-days", "3650", "-extfile", "serving.ext", cwd=d)
    return d


def proxy_pki(pki: Path) -> Path:
    """kube-proxy's client cert: system:kube-proxy is what the default system:node-proxier binding names."""
    d = pki / "nodes" / "kube-proxy"
    if (d / "client.crt").exists():
        return d
    d.mkdir(parents=True, exist_ok=True)
    (d / "client.ext").write_text("extendedKeyUsage=clientAuth\n")
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "client.key", "-out", "client.csr",
             "-subj", "/CN=system:kube-proxy", cwd=d)
    _openssl("x509", "-req", "-in", "client.csr", "-CA", str(pki / "ca.crt"), "-CAkey", str(pki / "ca.key"),
             "-CAcreateserial", "-out", "client.crt", "-days", "3650", "-extfile", "client.ext", cwd=d)
    return d


def node_kubeconfig(path: Path, pki: Path, certs: Path, server: str) -> None:
    path.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "node",
        "clusters": [{"name": "edgeweave-dev", "cluster": {"server": server,
                                                           "certificate-authority": str(pki / "ca.crt")}}],
        "users": [{"name": "node", "user": {"client-certificate": str(certs / "client.crt"),
                                            "client-key": str(certs / "client.key")}}],
        "contexts": [{"name": "node", "context": {"cluster": "edgeweave-dev", "user": "node"}}],
    }, indent=2))


# --- configs -----------------------------------------------------------------------------------------
def containerd_config(node: Node, pause_ref: str) -> str:
    d = node.path
    return f"""version = 2
root = "{d / 'containerd' / 'root'}"
state = "{d / 'containerd' / 'state'}"
oom_score = 0
[grpc]
  address = "{node.sock}"
[ttrpc]
  address = "{node.sock}.ttrpc"
[debug]
  address = ""
[metrics]
  address = ""
[plugins."io.containerd.internal.v1.opt"]
  path = "{d / 'containerd' / 'opt'}"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{pause_ref}"
  # The VM's root lacks CAP_SYS_RESOURCE: runc cannot lower oom_score_adj below containerd's own.
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  disable_apparmor = true
  enable_selinux = false
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        Root = "{d / 'runc'}"
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{CNI_BIN}"
    conf_dir = "{d / 'cni'}"
"""


def cni_config(node: Node) -> dict:
    return {"cniVersion": "0.4.0", "name": f"{PREFIX}-pods", "plugins": [{
        "type": "bridge", "bridge": f"{PREFIX}br0", "isGateway": True, "ipMasq": False, "hairpinMode": True,
        "ipam": {"type": "host-local", "dataDir": str(node.path / "cni-ipam"),
                 "ranges": [[{"subnet": node.pod_cidr}]], "routes": [{"dst": "0.0.0.0/0"}]}}]}


def kubelet_config(node: Node, certs: Path, pki: Path) -> dict:
    return {
        "apiVersion": "kubelet.config.k8s.io/v1beta1", "kind": "KubeletConfiguration",
        "address": node.ip, "port": 10250, "healthzBindAddress": "127.0.0.1", "healthzPort": 10248,
        "readOnlyPort": 0,
        "tlsCertFile": str(certs / "serving.crt"), "tlsPrivateKeyFile": str(certs / "serving.key"),
        "authentication": {"anonymous": {"enabled": False}, "webhook": {"enabled": True},
                           "x509": {"clientCAFile": str(pki / "ca.crt")}},
        "authorization": {"mode": "Webhook"},
        "cgroupDriver": "cgroupfs", "cgroupRoot": node.cgroup, "cgroupsPerQOS": True,
        "enforceNodeAllocatable": ["pods"],
        "containerRuntimeEndpoint": f"unix://{node.sock}",
        "podLogsDir": str(node.path / "pod-logs"),
        "failSwapOn": False, "resolvConf": str(node.path / "resolv.conf"),
        # Imported images cannot be pulled back: never garbage-collect them.
        "imageGCHighThresholdPercent": 100, "imageGCLowThresholdPercent": 99,
        "evictionHard": {"memory.available": "1Mi", "nodefs.available": "1%", "imagefs.available": "1%"},
        "makeIPTablesUtilChains": False, "oomScoreAdj": 0, "serializeImagePulls": False,
        "nodeStatusUpdateFrequency": "5s", "syncFrequency": "10s",
        "fileCheckFrequency": "10s", "maxPods": 40, "registerNode": True,
        "localStorageCapacityIsolation": False, "protectKernelDefaults": False,
        "shutdownGracePeriod": "0s",
    }


def kube_proxy_config(node: Node, kubeconfig: Path) -> dict:
    return {
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1", "kind": "KubeProxyConfiguration",
        "clientConnection": {"kubeconfig": str(kubeconfig)}, "mode": "iptables",
        "hostnameOverride": node.name, "bindAddress": node.ip,
        "healthzBindAddress": "127.0.0.1:10256", "metricsBindAddress": "127.0.0.1:10249",
        # Pod -> Service -> pod on the same node crosses the CNI bridge; without br_netfilter the reply
        # would skip the de-NAT, so every Service connection is masqueraded (inside the node only).
        "iptables": {"masqueradeAll": True, "syncPeriod": "5s", "minSyncPeriod": "0s"},
        # Leave the host's conntrack sysctls alone (not namespaced).
        "conntrack": {"maxPerCore": 0, "min": 0, "tcpEstablishedTimeout": "0s", "tcpCloseWaitTimeout": "0s"},
    }


# --- processes ---------------------------------------------------------------------------------------
def _spawn(name: str, argv: list[str], node: Node, rd: Path) -> int:
    """Start argv in the node's netns, in the node's sys cgroup (pids hierarchy), own session."""
    procs = CGROOT / "pids" / node.sys_cgroup.lstrip("/") / "cgroup.procs"
    logf = open(node.path / "logs" / f"{name}.log", "ab")  # noqa: SIM115 - the child owns it
    # The shell joins the cgroup before exec, so every descendant (containerd's shims too) is in it.
    script = f'echo $$ > {procs} && exec nsenter --net=/run/netns/{node.netns} "$@"'
    proc = subprocess.Popen(["sh", "-c", script, "sh", *argv], stdout=logf, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, start_new_session=True)
    (node.path / "pids" / f"{name}.pid").write_text(str(proc.pid))
    return proc.pid


def _kill_pids(pids: set[int], sig: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def _stop_pidfile(pid_file: Path, grace: float) -> None:
    try:
        pid = int(pid_file.read_text())
    except (OSError, ValueError):
        return
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            break
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline and devcluster._alive(pid):
            time.sleep(0.1)
        if not devcluster._alive(pid):
            break
    pid_file.unlink(missing_ok=True)


def _kill_cgroup(rel: str) -> None:
    for _ in range(50):
        pids = _cgroup_pids(rel)
        if not pids:
            return
        _kill_pids(pids, signal.SIGKILL)
        time.sleep(0.1)
    log(f"processes left in cgroup {rel}: {_cgroup_pids(rel)}")


# --- lifecycle ---------------------------------------------------------------------------------------
def _write_state(rd: Path, state: dict) -> None:
    p = state_path(rd)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=2))
    tmp.replace(p)


def _host_network(nodes: list[Node]) -> None:
    br = f"{PREFIX}0"
    if _sh("ip", "link", "show", br, check=False).returncode != 0:
        _sh("ip", "link", "add", br, "type", "bridge")
    _sh("ip", "addr", "replace", f"{bridge_ip()}/24", "dev", br)
    _sh("ip", "link", "set", br, "up")
    for n in nodes:
        if not Path(f"/run/netns/{n.netns}").exists():
            _sh("ip", "netns", "add", n.netns)
        if _sh("ip", "link", "show", n.veth_host, check=False).returncode != 0:
            _sh("ip", "link", "add", n.veth_host, "type", "veth", "peer", "name", f"{PREFIX}-tmp{n.index}")
            _sh("ip", "link", "set", f"{PREFIX}-tmp{n.index}", "netns", n.netns)
            _sh("ip", "link", "set", f"{PREFIX}-tmp{n.index}", "name", "eth0", netns=n.netns)
        _sh("ip", "link", "set", n.veth_host, "master", br, "up")
        _sh("ip", "addr", "replace", f"{n.ip}/24", "dev", "eth0", netns=n.netns)
        _sh("ip", "link", "set", "eth0", "up", netns=n.netns)
        _sh("ip", "link", "set", "lo", "up", netns=n.netns)
        for i in range(1, len(UPLINKS) + 1):
            wan = n.wan_netns(i)
            if not Path(f"/run/netns/{wan}").exists():
                _sh("ip", "netns", "add", wan)
            if _sh("ip", "link", "show", f"up{i}", check=False, netns=n.netns).returncode != 0:
                _sh("ip", "link", "add", f"up{i}", "type", "veth", "peer", "name", "wan", "netns", wan, netns=n.netns)
            _sh("ip", "addr", "replace", f"{uplink_ip(n.index, i, 1)}/24", "dev", f"up{i}", netns=n.netns)
            _sh("ip", "addr", "replace", f"{uplink_ip(n.index, i, 2)}/24", "dev", "wan", netns=wan)
            for ns_, dev in ((wan, "lo"), (wan, "wan"), (n.netns, f"up{i}")):
                _sh("ip", "link", "set", dev, "up", netns=ns_)
        # The node routes for its pods (inside its own namespace only; the host keeps forwarding off).
        _sh("sysctl", "-qw", "net.ipv4.ip_forward=1", netns=n.netns)
        # The host reaches pods directly (Prometheus scrapes them, the API server proxies to them).
        _sh("ip", "route", "replace", n.pod_cidr, "via", n.ip, "dev", br)
    for n in nodes:
        for m in nodes:
            if m is not n:
                _sh("ip", "route", "replace", m.pod_cidr, "via", m.ip, "dev", "eth0", netns=n.netns)
        # hostNetwork pods (the agent) and the node itself reach ClusterIPs: a local packet needs a route
        # before kube-proxy's OUTPUT DNAT rewrites it to an endpoint.
        _sh("ip", "route", "replace", SERVICE_CIDR, "via", bridge_ip(), "dev", "eth0", netns=n.netns)


def forward(port: int, name: str, *, rd: Path | None = None, target_port: int | None = None) -> str:
    """Let the nodes' pods reach a host service that binds loopback (Prometheus, the API server): a
    forwarder on the bridge address only (the host and the node namespaces), ended by `stop`."""
    rd = rd or devcluster.run_dir()
    d = rd / "realnodes"
    (d / "logs").mkdir(parents=True, exist_ok=True)
    pid_file = d / f"fwd-{name}.pid"
    _stop_pidfile(pid_file, 5.0)
    proc = subprocess.Popen([sys.executable, str(HERE / "tcpfwd.py"), bridge_ip(), str(port), "127.0.0.1",
                             str(target_port or port)],
                            stdout=open(d / "logs" / f"fwd-{name}.log", "ab"),  # noqa: SIM115 - the child owns it
                            stderr=subprocess.STDOUT, start_new_session=True)
    pid_file.write_text(str(proc.pid))
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection((bridge_ip(), port), timeout=1).close()
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"forwarder {name} on {bridge_ip()}:{port} did not start") from None
            time.sleep(0.1)
    return f"{bridge_ip()}:{port}"


def import_image(nodes: list[Node], archive: Path) -> None:
    """Import an OCI archive into every node's containerd (the kubelet's k8s.io namespace)."""
    for n in nodes:
        _sh("ctr", "--address", str(n.sock), "-n", "k8s.io", "images", "import", "--all-platforms", str(archive))


def _advertise(kubectl: str, env: dict[str, str], nodes: list[Node]) -> None:
    key = VGPU_RESOURCE.replace("/", "~1")
    patch = json.dumps([{"op": "add", "path": f"/status/capacity/{key}", "value": str(VGPU_PER_NODE)}])
    for n in nodes:
        subprocess.run([kubectl, "patch", "node", n.name, "--subresource=status", "--type=json", "-p", patch],
                       env=env, capture_output=True, check=True)


def _kubernetes_endpoints(kubectl: str, env: dict[str, str], port: int) -> None:
    """Pods reach the API server as in any cluster: the `kubernetes` Service (kube-proxy) -> the bridge
    forwarder. The API server's own endpoint reconciler is off (it advertises loopback), so this slice is ours."""
    slice_ = {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
              "metadata": {"name": "kubernetes-realnodes", "namespace": "default",
                           "labels": {"kubernetes.io/service-name": "kubernetes",
                                      "endpointslice.kubernetes.io/managed-by": "edgeweave-realnodes"}},
              "addressType": "IPv4", "endpoints": [{"addresses": [bridge_ip()], "conditions": {"ready": True}}],
              "ports": [{"name": "https", "port": port, "protocol": "TCP"}]}
    subprocess.run([kubectl, "apply", "-f", "-"], input=json.dumps(slice_), text=True, env=env,
                   capture_output=True, check=True)


def start(count: int = 2, *, rd: Path | None = None, timeout: float = 120.0) -> list[Node]:
    rd = rd or devcluster.run_dir()
    stop(rd)  # reap whatever a killed run left, from its record
    bins = devcluster.bin_dir()
    for b in ("kubelet", "kube-proxy"):
        if not (bins / b).exists():
            raise RuntimeError(f"{bins / b} missing: run `bash hack/build-binaries.sh`")
    for tool in ("containerd", "runc", "ctr", "nsenter"):
        if shutil.which(tool) is None:
            raise RuntimeError(f"{tool} not found: run `bash hack/install-deps.sh`")
    pki = rd / "pki"
    ports = devcluster.Ports()
    nodes = node_plan(count, rd)
    t0 = time.monotonic()
    imgs = images.build_all()
    pause = next(i for i in imgs if i.name == "pause")
    state = {"prefix": PREFIX, "bridge": f"{PREFIX}0", "nodes": [asdict(n) for n in nodes],
             "sysctls": {s: _sysctl_get(s) for s in SYSCTLS}, "started": time.time()}
    _write_state(rd, state)  # before anything exists: a SIGKILL from here on is reaped from this

    fwd_dir = rd / "realnodes"
    (fwd_dir / "logs").mkdir(parents=True, exist_ok=True)
    for n in nodes:
        for sub in ("logs", "pids", "containerd", "cni", "cni-ipam", "pod-logs", "kubelet", "runc"):
            (n.path / sub).mkdir(parents=True, exist_ok=True)
        _make_cgroup(n.cgroup)
        _make_cgroup(n.sys_cgroup)
    _host_network(nodes)
    bpffs = bpffs_dir(rd)
    bpffs.mkdir(parents=True, exist_ok=True)
    if not _mounts_under(bpffs):
        _sh("mount", "-t", "bpf", "bpf", str(bpffs))
        _sh("mount", "--make-shared", str(bpffs))

    # The API server binds loopback; the bridge address forwards to it (host + node namespaces only).
    fwd = subprocess.Popen([sys.executable, str(HERE / "tcpfwd.py"), bridge_ip(), str(ports.apiserver),
                            "127.0.0.1", str(ports.apiserver)],
                           stdout=open(fwd_dir / "logs" / "tcpfwd.log", "ab"),  # noqa: SIM115
                           stderr=subprocess.STDOUT, start_new_session=True)
    (fwd_dir / "tcpfwd.pid").write_text(str(fwd.pid))
    server = f"https://{bridge_ip()}:{ports.apiserver}"

    for n in nodes:
        (n.path / "containerd" / "config.toml").write_text(containerd_config(n, pause.ref))
        (n.path / "cni" / "10-pods.conflist").write_text(json.dumps(cni_config(n), indent=2))
        (n.path / "resolv.conf").write_text("nameserver 127.0.0.1\n")
        _spawn("containerd", ["containerd", "--config", str(n.path / "containerd" / "config.toml")], n, rd)
    for n in nodes:
        devcluster._wait(f"{n.name} containerd socket", n.sock.exists, 30, n.path, "containerd")
    for img in imgs:
        import_image(nodes, img.archive)
    kubectl = str(bins / "kubectl")
    env = {**os.environ, "KUBECONFIG": str(devcluster.kubeconfig_path())}
    # A Node object left from an earlier run would read Ready at once (stale status): register anew.
    subprocess.run([kubectl, "delete", "node", "--ignore-not-found", "--wait=false", *(n.name for n in nodes)],
                   env=env, capture_output=True, check=True)
    for n in nodes:
        certs = node_pki(pki, n)
        kc = n.path / "kubeconfig"
        node_kubeconfig(kc, pki, certs, server)
        (n.path / "kubelet-config.json").write_text(json.dumps(kubelet_config(n, certs, pki), indent=2))
        pkc = n.path / "kube-proxy.kubeconfig"
        node_kubeconfig(pkc, pki, proxy_pki(pki), server)
        (n.path / "kube-proxy-config.json").write_text(json.dumps(kube_proxy_config(n, pkc), indent=2))
        labels = f"{REAL_LABEL}=true,{SITE_LABEL}={PREFIX}-site-{n.index},edgeweave.io/fleet=dev"
        _spawn("kubelet", [str(bins / "kubelet"), f"--config={n.path / 'kubelet-config.json'}",
                           f"--kubeconfig={kc}", f"--root-dir={n.path / 'kubelet'}", f"--node-ip={n.ip}",
                           f"--hostname-override={n.name}", f"--node-labels={labels}", "--v=1"], n, rd)
        _spawn("kube-proxy", [str(bins / "kube-proxy"), f"--config={n.path / 'kube-proxy-config.json'}"], n, rd)


    def all_ready() -> bool:
        out = subprocess.run([kubectl, "get", "nodes", "-l", f"{REAL_LABEL}=true", "-o", "json"],
                             capture_output=True, text=True, env=env)
        if out.returncode != 0:
            return False
        items = json.loads(out.stdout)["items"]
        ready = {i["metadata"]["name"] for i in items
                 if any(c["type"] == "Ready" and c["status"] == "True" for c in i["status"].get("conditions", []))}
        return ready >= {n.name for n in nodes}

    deadline = time.monotonic() + timeout
    while not all_ready():
        for n in nodes:
            for comp in ("containerd", "kubelet", "kube-proxy"):
                pid = int((n.path / "pids" / f"{comp}.pid").read_text())
                if not devcluster._alive(pid):
                    tail = (n.path / "logs" / f"{comp}.log").read_text(errors="replace")[-3000:]
                    raise RuntimeError(f"{n.name} {comp} exited:\n{tail}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"real nodes not Ready after {timeout}s; logs in {nodes[0].path / 'logs'}")
        time.sleep(0.2)
    ready_s = time.monotonic() - t0
    _advertise(kubectl, env, nodes)
    _kubernetes_endpoints(kubectl, env, ports.apiserver)
    state["ready_s"] = ready_s
    _write_state(rd, state)
    log(f"{count} real nodes Ready in {ready_s:.1f}s: " + ", ".join(f"{n.name}={n.ip}" for n in nodes))
    return nodes


def stop(rd: Path | None = None) -> None:
    rd = rd or devcluster.run_dir()
    sp = state_path(rd)
    if not sp.exists():
        return
    state = json.loads(sp.read_text())
    nodes = [Node(**n) for n in state["nodes"]]
    for n in nodes:  # kubelet first: it would restart what we kill next
        for comp in ("kubelet", "kube-proxy"):
            _stop_pidfile(n.path / "pids" / f"{comp}.pid", 10.0)
    for n in nodes:
        _kill_cgroup(n.cgroup)        # every container process of the node's pods
    for n in nodes:
        _stop_pidfile(n.path / "pids" / "containerd.pid", 10.0)
        _kill_cgroup(n.sys_cgroup)    # shims (and anything else started under the node)
    for pid_file in (rd / "realnodes").glob("*.pid"):  # the API server forwarder and any `forward`
        _stop_pidfile(pid_file, 5.0)
    for n in nodes:
        _unmount_all(n.path)
        _remove_cgroup(n.cgroup)
        _remove_cgroup(n.sys_cgroup)
        # The node's pod netns mounts live under its state dir (unmounted above); the node netns last.
        if Path(f"/run/netns/{n.netns}").exists():
            _sh("ip", "netns", "del", n.netns, check=False)
        for i in range(1, len(UPLINKS) + 1):
            if Path(f"/run/netns/{n.wan_netns(i)}").exists():
                _sh("ip", "netns", "del", n.wan_netns(i), check=False)
        _sh("ip", "link", "del", n.veth_host, check=False)
        _sh("ip", "route", "del", n.pod_cidr, check=False)
        shutil.rmtree(n.path, ignore_errors=True)
    _sh("ip", "link", "del", state["bridge"], check=False)
    _unmount_all(bpffs_dir(rd))  # with the pins the agents left (a pinned map outlives its agent by design)
    for name, value in state.get("sysctls", {}).items():
        try:
            if _sysctl_get(name) != value:
                _sysctl_set(name, value)
        except OSError as e:
            log(f"could not restore {name}={value}: {e}")
    sp.unlink()
    log("real nodes stopped")


def leftovers(rd: Path | None = None, count: int = 3) -> list[str]:
    """What of a real-node run is still on the host (for tests of stop and reaping)."""
    rd = rd or devcluster.run_dir()
    found = []
    for n in node_plan(count, rd):
        for netns in (n.netns, *(n.wan_netns(i) for i in range(1, len(UPLINKS) + 1))):
            if Path(f"/run/netns/{netns}").exists():
                found.append(f"netns {netns}")
        for h in _hierarchies():
            for rel in (n.cgroup, n.sys_cgroup):
                if (h / rel.lstrip("/")).exists():
                    found.append(f"cgroup {h.name}:{rel}")
        if _mounts_under(n.path):
            found.append(f"mounts under {n.path}")
        if _sh("ip", "link", "show", n.veth_host, check=False).returncode == 0:
            found.append(f"link {n.veth_host}")
    if _sh("ip", "link", "show", f"{PREFIX}0", check=False).returncode == 0:
        found.append(f"bridge {PREFIX}0")
    if _mounts_under(bpffs_dir(rd)):
        found.append(f"bpffs {bpffs_dir(rd)}")
    return found


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="realnode")
    parser.add_argument("action", choices=["start", "stop", "leftovers", "import", "forward"])
    parser.add_argument("--nodes", type=int, default=int(os.environ.get("REAL_NODES", "2")))
    parser.add_argument("archive", nargs="?", help="import: an OCI archive to import into every real node; "
                        "forward: a loopback port to open on the bridge address (e.g. Prometheus's)")
    args = parser.parse_args(argv)
    if args.action == "start":
        start(args.nodes)
    elif args.action == "import":
        state = json.loads(state_path(devcluster.run_dir()).read_text())
        import_image([Node(**n) for n in state["nodes"]], Path(args.archive))
    elif args.action == "forward":
        print(forward(int(args.archive), f"port-{args.archive}"))
    elif args.action == "stop":
        stop()
    else:
        print("\n".join(leftovers()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
