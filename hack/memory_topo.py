"""Three network-namespace hosts for the memory tests and benchmark: source, destination, store.

    src  10.231.7.1 ---- link C (source link) ---- 10.231.7.2  dst
    src  10.231.6.2 ---- link B ---- 10.231.6.1  store  10.231.8.1 ---- link A ---- 10.231.8.2  dst
                                     store service address 10.231.99.1 (on its lo, routed via A/B)

Every link is a veth pair, optionally shaped with tc tbf at the same rate both ways, so the
full copy (over C) and the baseline read from the store (over A) cross links of one class.
The store is `rclone serve s3` (built by hack/build-rclone.sh) bound to the service address
only, with TLS and an access key, serving a directory of this machine.
Names: every netns/veth starts with $EDGEWEAVE_MEMORY_PREFIX (default `ewm`) plus a random suffix;
the store port is $EDGEWEAVE_MEMORY_S3_PORT (default 9000, inside the store's own netns).
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
STORE_IP = "10.231.99.1"
S3_PORT = int(os.environ.get("EDGEWEAVE_MEMORY_S3_PORT", "9000"))
PREFIX = os.environ.get("EDGEWEAVE_MEMORY_PREFIX", "ewm")[:4]
BUCKET = "baselines"
LINKS = {  # name: (ns a, ip a, ns b, ip b)
    "C": ("src", "10.231.7.1", "dst", "10.231.7.2"),
    "B": ("store", "10.231.6.1", "src", "10.231.6.2"),
    "A": ("store", "10.231.8.1", "dst", "10.231.8.2"),
}


def sh(*cmd: str) -> str:
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode:
        raise RuntimeError(f"{' '.join(cmd)}: {r.stderr.strip()}")
    return r.stdout


def rclone_bin() -> str:
    out = subprocess.run(["bash", str(REPO / "hack" / "build-rclone.sh")], capture_output=True, text=True)
    if out.returncode:
        raise RuntimeError(f"hack/build-rclone.sh failed: {out.stderr[-2000:]}")
    return str(Path(out.stdout.strip().splitlines()[-1]) / "rclone")


@dataclass
class MemTopo:
    rate: str | None = None  # e.g. "1gbit": tbf on every link end
    sfx: str = field(default_factory=lambda: secrets.token_hex(3))
    made: list[str] = field(default_factory=list)
    procs: list[subprocess.Popen] = field(default_factory=list)

    def ns(self, role: str) -> str:
        return f"{PREFIX}{role[:2]}-{self.sfx}"

    @property
    def src_ip(self) -> str:
        return LINKS["C"][1]

    @property
    def dst_ip(self) -> str:
        return LINKS["C"][3]

    def up(self) -> MemTopo:
        if os.geteuid() != 0 or not shutil.which("ip"):
            raise RuntimeError("the memory topology needs root and iproute2")
        try:
            for role in ("src", "dst", "store"):
                sh("ip", "netns", "add", self.ns(role))
                self.made.append(self.ns(role))
                sh("ip", "-n", self.ns(role), "link", "set", "lo", "up")
            for name, (na, ipa, nb, ipb) in LINKS.items():
                a, b = f"{PREFIX}{name}a{self.sfx}", f"{PREFIX}{name}b{self.sfx}"
                sh("ip", "link", "add", a, "type", "veth", "peer", "name", b)
                for dev, role, ip in ((a, na, ipa), (b, nb, ipb)):
                    sh("ip", "link", "set", dev, "netns", self.ns(role))
                    sh("ip", "-n", self.ns(role), "addr", "add", f"{ip}/30", "dev", dev)
                    sh("ip", "-n", self.ns(role), "link", "set", dev, "up")
                    if self.rate:
                        sh("ip", "netns", "exec", self.ns(role), "tc", "qdisc", "add", "dev", dev, "root", "tbf",
                           "rate", self.rate, "burst", "1mb", "latency", "50ms")
            sh("ip", "-n", self.ns("store"), "addr", "add", f"{STORE_IP}/32", "dev", "lo")
            sh("ip", "-n", self.ns("src"), "route", "add", f"{STORE_IP}/32", "via", LINKS["B"][1])
            sh("ip", "-n", self.ns("dst"), "route", "add", f"{STORE_IP}/32", "via", LINKS["A"][1])
        except BaseException:
            self.down()
            raise
        return self

    def shape(self, link: str, rate: str | None) -> None:
        """Set (or with None, remove) a tbf rate on both ends of one link."""
        na, _, nb, _ = LINKS[link]
        for dev, role in ((f"{PREFIX}{link}a{self.sfx}", na), (f"{PREFIX}{link}b{self.sfx}", nb)):
            base = ["ip", "netns", "exec", self.ns(role), "tc", "qdisc"]
            subprocess.run([*base, "del", "dev", dev, "root"], capture_output=True)
            if rate:
                sh(*base, "add", "dev", dev, "root", "tbf", "rate", rate, "burst", "256kb", "latency", "50ms")

    def down(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.kill()
            p.wait(timeout=10)
        self.procs.clear()
        for n in self.made:
            subprocess.run(["ip", "netns", "del", n], capture_output=True)
        self.made.clear()

    def exec(self, role: str) -> list[str]:
        """argv prefix that runs a command in a host's network namespace (and the host's mounts)."""
        return ["nsenter", f"--net=/run/netns/{self.ns(role)}", "--"]

    def py(self, role: str, *args: str) -> list[str]:
        return [*self.exec(role), sys.executable, "-m", "edgeweave.cli", *args]

    # --- the store ------------------------------------------------------------------------------
    def start_store(self, root: Path, cert: Path, key: Path) -> dict[str, str]:
        """rclone serve s3 on the store host; returns the client environment (a Secret's content)."""
        (root / BUCKET).mkdir(parents=True, exist_ok=True)
        ak, sk = f"ewm{secrets.token_hex(6)}", secrets.token_hex(20)
        log = open(root.parent / f"rclone-{self.sfx}.log", "w")
        p = subprocess.Popen([*self.exec("store"), rclone_bin(), "serve", "s3", "--addr", f"{STORE_IP}:{S3_PORT}",
                              "--auth-key", f"{ak},{sk}", "--cert", str(cert), "--key", str(key),
                              "--config", "/dev/null", "--log-level", "NOTICE", str(root)],
                             stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "RCLONE_CONFIG": "/dev/null"})
        self.procs.append(p)
        self.store_proc = p
        env = {"AWS_ENDPOINT_URL": f"https://{STORE_IP}:{S3_PORT}", "AWS_ACCESS_KEY_ID": ak,
               "AWS_SECRET_ACCESS_KEY": sk, "AWS_DEFAULT_REGION": "us-east-1", "AWS_CA_BUNDLE": str(cert.parent.parent / "ca.crt")}
        deadline = time.monotonic() + 30
        while True:
            r = subprocess.run([*self.exec("dst"), sys.executable, "-c",
                                f"import socket; socket.create_connection(('{STORE_IP}', {S3_PORT}), 1).close()"],
                               capture_output=True)
            if r.returncode == 0:
                return env
            if p.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"rclone serve s3 did not come up: {(root.parent / f'rclone-{self.sfx}.log').read_text()}")
            time.sleep(0.2)

    @staticmethod
    def store_url(prefix: str = "") -> str:
        return f"s3://{BUCKET}/{prefix}".rstrip("/")
