#!/usr/bin/env python3
"""A real Prometheus (Debian's package) that finds the pods to scrape through the API server.

Debian's Prometheus is built without Kubernetes service discovery, so a small discoverer (this file,
`sd` mode) lists pods from the API server every second and writes a file_sd target file; pods annotated
`prometheus.io/scrape: "true"` are scraped at podIP:`prometheus.io/port` (the host routes to every real
node's pod CIDR). `honor_labels` keeps the labels a workload exports (`namespace` in
edgeweave_flow_bytes_total is the exporter's, not the target's). Its PID goes to <run dir>/pids/, so
`devcluster.py stop` (and the next start after a SIGKILL) ends it with the rest. Stdlib only.

Pods annotated `edgeweave.io/scrape-auth: bearer` (the chart's agents, whose exporters require a token)
are scraped by a second job that sends `Authorization: Bearer <token>` from <dir>/bearer-token
(`set_bearer_token`; Prometheus reads the file at each scrape), as a user's scrape config would.
"""

from __future__ import annotations

import json
import shutil
import signal
import ssl
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path


class RealProm:
    def __init__(self, rd: Path, kubeconfig: Path, port: int, scrape_interval: str = "1s") -> None:
        self.rd, self.kubeconfig, self.port = rd, kubeconfig, port
        self.dir = rd / "prometheus"
        self.scrape_interval = scrape_interval
        self.proc: subprocess.Popen | None = None
        self.sd: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def config(self) -> str:
        return json.dumps({
            "global": {"scrape_interval": self.scrape_interval, "evaluation_interval": self.scrape_interval},
            "scrape_configs": [{
                "job_name": "pods", "honor_labels": True, "scrape_timeout": "1s",
                "file_sd_configs": [{"files": [str(self.dir / "pods.json")], "refresh_interval": "1s"}],
            }, {
                "job_name": "pods-bearer", "honor_labels": True, "scrape_timeout": "1s",
                "authorization": {"type": "Bearer", "credentials_file": str(self.dir / "bearer-token")},
                "file_sd_configs": [{"files": [str(self.dir / "pods-bearer.json"), str(self.dir / "static-bearer.json")],
                                     "refresh_interval": "1s"}],
            }],
        }, indent=2)

    def start(self, timeout: float = 60.0) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.rd / "pids").mkdir(parents=True, exist_ok=True)
        (self.dir / "prometheus.yml").write_text(self.config())  # JSON is YAML
        shutil.rmtree(self.dir / "data", ignore_errors=True)
        (self.dir / "pods.json").write_text("[]")
        (self.dir / "pods-bearer.json").write_text("[]")
        (self.dir / "static-bearer.json").write_text("[]")
        self.set_bearer_token("")
        sd_log = open(self.dir / "sd.log", "ab")  # noqa: SIM115 - owned by the child
        self.sd = subprocess.Popen([sys.executable, __file__, "sd", str(self.kubeconfig), str(self.dir / "pods.json")],
                                   stdout=sd_log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   start_new_session=True)
        (self.rd / "pids" / "prometheus-sd.pid").write_text(str(self.sd.pid))
        binary = shutil.which("prometheus") or "/usr/bin/prometheus"
        logf = open(self.dir / "prometheus.log", "ab")  # noqa: SIM115 - owned by the child
        self.proc = subprocess.Popen(
            [binary, f"--config.file={self.dir / 'prometheus.yml'}", f"--storage.tsdb.path={self.dir / 'data'}",
             f"--web.listen-address=127.0.0.1:{self.port}", "--storage.tsdb.retention.time=1h",
             "--query.lookback-delta=30s"],
            stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        (self.rd / "pids" / "prometheus-realnode.pid").write_text(str(self.proc.pid))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=1) as r:  # noqa: S310 - loopback
                    if r.status == 200:
                        return
            except OSError:
                time.sleep(0.3)
        raise RuntimeError(f"prometheus did not become ready: {(self.dir / 'prometheus.log').read_text()[-2000:]}")

    def set_bearer_token(self, token: str) -> None:
        """The token the pods-bearer job sends (e.g. the chart's agent-metrics Secret)."""
        path = self.dir / "bearer-token"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(token)
        tmp.chmod(0o600)
        tmp.replace(path)

    def set_bearer_targets(self, targets: dict[str, dict[str, str]]) -> None:
        """Fixed targets (address -> labels) of the pods-bearer job: processes that are not pods, such as
        agents run on the host inside a node's network namespace."""
        path = self.dir / "static-bearer.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps([{"targets": [a], "labels": labels} for a, labels in sorted(targets.items())]))
        tmp.replace(path)

    def query(self, promql: str) -> list[dict]:
        url = f"{self.url}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
        with urllib.request.urlopen(url, timeout=5) as r:  # noqa: S310 - loopback
            return json.loads(r.read())["data"]["result"]

    def stop(self) -> None:
        if self.sd is not None and self.sd.poll() is None:
            self.sd.terminate()
            self.sd.wait(10)
        (self.rd / "pids" / "prometheus-sd.pid").unlink(missing_ok=True)
        self.sd = None
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        (self.rd / "pids" / "prometheus-realnode.pid").unlink(missing_ok=True)
        self.proc = None


AUTH_ANNOTATION = "edgeweave.io/scrape-auth"


def pod_targets(pods: list[dict], auth: str = "") -> list[dict]:
    """file_sd entries for running pods that ask to be scraped with this auth ("" or "bearer")."""
    out = []
    for p in pods:
        meta, status = p.get("metadata", {}), p.get("status", {})
        ann = meta.get("annotations") or {}
        if ann.get("prometheus.io/scrape") != "true" or not status.get("podIP") or status.get("phase") != "Running":
            continue
        if ann.get(AUTH_ANNOTATION, "") != auth:
            continue
        out.append({"targets": [f"{status['podIP']}:{ann.get('prometheus.io/port', '9100')}"],
                    "labels": {"pod": meta.get("name", ""), "kubernetes_namespace": meta.get("namespace", ""),
                               "node": p.get("spec", {}).get("nodeName", "")}})
    return sorted(out, key=lambda t: t["targets"][0])


def discover(kubeconfig: Path, out: Path) -> None:
    """List pods every second with the kubeconfig's client cert; rewrite `out` (and its -bearer twin)
    when the targets change."""
    cfg = json.loads(kubeconfig.read_text())
    cluster, user = cfg["clusters"][0]["cluster"], cfg["users"][0]["user"]
    ctx = ssl.create_default_context(cafile=cluster["certificate-authority"])
    ctx.load_cert_chain(user["client-certificate"], user["client-key"])
    last = None
    while True:
        try:
            with urllib.request.urlopen(f"{cluster['server']}/api/v1/pods", context=ctx, timeout=5) as r:  # noqa: S310
                items = json.loads(r.read())["items"]
            targets = {out: json.dumps(pod_targets(items)),
                       out.with_name(out.stem + "-bearer.json"): json.dumps(pod_targets(items, "bearer"))}
            if targets != last:
                for path, text in targets.items():
                    tmp = path.with_suffix(".tmp")
                    tmp.write_text(text)
                    tmp.replace(path)
                last = targets
        except (OSError, ValueError) as e:
            print(f"discover: {e}", file=sys.stderr, flush=True)
        time.sleep(1.0)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    if len(sys.argv) == 4 and sys.argv[1] == "sd":
        discover(Path(sys.argv[2]), Path(sys.argv[3]))
    import devcluster

    if len(sys.argv) != 3 or sys.argv[1] != "start":
        raise SystemExit("usage: realprom.py start PORT   (stopped by devcluster.py stop)")
    prom = RealProm(devcluster.run_dir(), devcluster.kubeconfig_path(), int(sys.argv[2]))
    prom.start()
    print(prom.url)
