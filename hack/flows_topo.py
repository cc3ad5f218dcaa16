"""Network-namespace testbed for the flows agent (tests and bench).

  client(ewf<ID>c) --lan-- edge(ewf<ID>e) --up<i>-- wan<i>(ewf<ID>w<i>) --- server(ewf<ID>s)
                                 \\---------------- ret (unshaped return path) ------/
Each edge up<i> egress is shaped with tbf (rate + a ~200 ms queue), so the
upload direction the agent steers is the bottleneck. Server replies come back over
`ret`, so taking an uplink down never cuts the return path of flows moved elsewhere.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass, field

import yaml

SERVER = "10.231.100.1"
CLIENT = "10.231.0.2"


@dataclass(frozen=True)
class UplinkSpec:
    name: str
    mbit: float
    delay_ms: float
    queue_ms: float = 200.0


@dataclass
class Topology:
    tag: str
    uplinks: list[UplinkSpec]
    created: list[str] = field(default_factory=list)

    @property
    def client(self) -> str:
        return f"ewf{self.tag}c"

    @property
    def edge(self) -> str:
        return f"ewf{self.tag}e"

    @property
    def server(self) -> str:
        return f"ewf{self.tag}s"

    def wan(self, i: int) -> str:
        return f"ewf{self.tag}w{i}"

    def ip(self, ns: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["ip", "-n", ns, *args], check=check, capture_output=True, text=True)

    def sh(self, ns: str, cmd: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["ip", "netns", "exec", ns, "sh", "-ec", cmd], check=check,
                              capture_output=True, text=True)

    def _ns(self, name: str) -> None:
        subprocess.run(["ip", "netns", "add", name], check=True, capture_output=True)
        self.created.append(name)
        self.ip(name, "link", "set", "lo", "up")
        self.sh(name, "sysctl -qw net.ipv4.ip_forward=1 net.ipv4.conf.all.rp_filter=0 "
                      "net.ipv4.conf.default.rp_filter=0")

    def _veth(self, a: str, an: str, b: str, bn: str) -> None:
        self.ip(a, "link", "add", an, "type", "veth", "peer", "name", bn, "netns", b)
        self.ip(a, "link", "set", an, "up")
        self.ip(b, "link", "set", bn, "up")

    def build(self) -> Topology:
        try:
            self._build()
        except BaseException:
            self.destroy()
            raise
        return self

    def _build(self) -> None:
        for ns in [self.client, self.edge, self.server] + [self.wan(i) for i in range(len(self.uplinks))]:
            self._ns(ns)
        self._veth(self.client, "lan", self.edge, "lan0")
        self.ip(self.client, "addr", "add", f"{CLIENT}/24", "dev", "lan")
        self.ip(self.edge, "addr", "add", "10.231.0.1/24", "dev", "lan0")
        self.ip(self.client, "route", "add", "default", "via", "10.231.0.1")
        # per-packet view on the LAN hook, as a real LAN without GRO would give
        self.sh(self.client, "ethtool -K lan tso off gso off >/dev/null")
        self.sh(self.edge, "ethtool -K lan0 gro off >/dev/null")
        self._veth(self.edge, "ret", self.server, "ret")
        self.ip(self.edge, "addr", "add", "10.231.30.1/24", "dev", "ret")
        self.ip(self.server, "addr", "add", "10.231.30.2/24", "dev", "ret")
        self.ip(self.server, "addr", "add", f"{SERVER}/32", "dev", "lo")
        self.ip(self.server, "route", "add", "10.231.0.0/24", "via", "10.231.30.1")
        for i in range(len(self.uplinks)):
            w = self.wan(i)
            self._veth(self.edge, f"up{i}", w, "in")
            self._veth(w, "out", self.server, f"w{i}")
            self.ip(self.edge, "addr", "add", f"10.231.{10 + i}.1/24", "dev", f"up{i}")
            self.ip(w, "addr", "add", f"10.231.{10 + i}.2/24", "dev", "in")
            self.ip(w, "addr", "add", f"10.231.{20 + i}.1/24", "dev", "out")
            self.ip(self.server, "addr", "add", f"10.231.{20 + i}.2/24", "dev", f"w{i}")
            self.ip(w, "route", "add", f"{SERVER}/32", "via", f"10.231.{20 + i}.2")
            self.ip(w, "route", "add", "10.231.0.0/24", "via", f"10.231.{10 + i}.1")
            self.shape(i)
        self.sh(self.edge, "for f in /proc/sys/net/ipv4/conf/*/rp_filter; do echo 0 > $f; done")
        self.sh(self.server, "for f in /proc/sys/net/ipv4/conf/*/rp_filter; do echo 0 > $f; done")
        self.single_default(0)

    def shape(self, i: int) -> None:
        # tbf, not netem: this kernel (and many CI kernels) has no sch_netem, so the rate
        # and a ~queue_ms deep buffer are emulated but propagation delay is not; the
        # uplinks' latency stays the nominal figure in the EdgeSite.
        u = self.uplinks[i]
        self.sh(self.edge, f"tc qdisc replace dev up{i} root tbf rate {u.mbit}mbit burst 32k "
                           f"latency {u.queue_ms}ms")

    def single_default(self, i: int) -> None:
        self.ip(self.edge, "route", "replace", "default", "via", f"10.231.{10 + i}.2")

    def multipath_default(self, weights: list[int] | None = None) -> None:
        """The baseline: hash-based multipath (L4 hash) over all uplinks."""
        self.sh(self.edge, "sysctl -qw net.ipv4.fib_multipath_hash_policy=1")
        hops: list[str] = []
        for i in range(len(self.uplinks)):
            hops += ["nexthop", "via", f"10.231.{10 + i}.2", "weight", str(weights[i] if weights else 1)]
        self.ip(self.edge, "route", "replace", "default", *hops)

    def edgesite_yaml(self, **policy: object) -> str:
        ups = [{"name": u.name, "interface": f"up{i}", "bandwidthMbps": u.mbit, "latencyMs": u.delay_ms,
                "gateway": f"10.231.{10 + i}.2"} for i, u in enumerate(self.uplinks)]
        doc = {"apiVersion": "edgeweave.io/v1alpha1", "kind": "EdgeSite", "metadata": {"name": f"ewf{self.tag}"},
               "spec": {"nodeNames": ["edge"], "uplinks": ups, "flowPolicy": dict(policy)}}
        return yaml.safe_dump(doc, sort_keys=False)

    def tx_bytes(self) -> dict[str, int]:
        out = {}
        for i, u in enumerate(self.uplinks):
            r = self.sh(self.edge, f"cat /sys/class/net/up{i}/statistics/tx_bytes", check=False)
            out[u.name] = int(r.stdout.strip() or 0)
        return out

    def drops(self, ns: str, dev: str) -> int:
        r = self.sh(ns, f"cat /sys/class/net/{dev}/statistics/rx_dropped "
                        f"/sys/class/net/{dev}/statistics/tx_dropped")
        return sum(int(x) for x in r.stdout.split())

    def destroy(self) -> None:
        for ns in reversed(self.created):
            subprocess.run(["ip", "netns", "pids", ns], capture_output=True)
            pids = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True).stdout.split()
            for p in pids:
                subprocess.run(["kill", "-9", p], capture_output=True)
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        self.created.clear()
