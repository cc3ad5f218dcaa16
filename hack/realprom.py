#!/usr/bin/env python3
"""A real Prometheus (Debian's package) that finds the pods to scrape through the API server.

Kubernetes service discovery (role: pod) with the cluster's kubeconfig; pods annotated
`prometheus.io/scrape: "true"` are scraped at podIP:`prometheus.io/port` (the host routes to every real
node's pod CIDR). `honor_labels` keeps the labels a workload exports (`namespace` in
edgeweave_flow_bytes_total is the exporter's, not the target's). Its PID goes to <run dir>/pids/, so
`devcluster.py stop` (and the next start after a SIGKILL) ends it with the rest. Stdlib only.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
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

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def config(self) -> str:
        return json.dumps({
            "global": {"scrape_interval": self.scrape_interval, "evaluation_interval": self.scrape_interval},
            "scrape_configs": [{
                "job_name": "pods", "honor_labels": True, "scrape_timeout": "1s",
                "kubernetes_sd_configs": [{"role": "pod", "kubeconfig_file": str(self.kubeconfig)}],
                "relabel_configs": [
                    {"source_labels": ["__meta_kubernetes_pod_annotation_prometheus_io_scrape"],
                     "regex": "true", "action": "keep"},
                    {"source_labels": ["__meta_kubernetes_pod_ip", "__meta_kubernetes_pod_annotation_prometheus_io_port"],
                     "regex": "(.+);(.+)", "replacement": "$1:$2", "target_label": "__address__"},
                    {"source_labels": ["__meta_kubernetes_pod_name"], "target_label": "pod"},
                    {"source_labels": ["__meta_kubernetes_namespace"], "target_label": "kubernetes_namespace"},
                    {"source_labels": ["__meta_kubernetes_pod_node_name"], "target_label": "node"},
                ],
            }],
        }, indent=2)

    def start(self, timeout: float = 60.0) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.rd / "pids").mkdir(parents=True, exist_ok=True)
        (self.dir / "prometheus.yml").write_text(self.config())  # JSON is YAML
        shutil.rmtree(self.dir / "data", ignore_errors=True)
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

    def query(self, promql: str) -> list[dict]:
        url = f"{self.url}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
        with urllib.request.urlopen(url, timeout=5) as r:  # noqa: S310 - loopback
            return json.loads(r.read())["data"]["result"]

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        (self.rd / "pids" / "prometheus-realnode.pid").unlink(missing_ok=True)
        self.proc = None


if __name__ == "__main__":
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import devcluster

    if len(sys.argv) != 3 or sys.argv[1] != "start":
        raise SystemExit("usage: realprom.py start PORT   (stopped by devcluster.py stop)")
    prom = RealProm(devcluster.run_dir(), devcluster.kubeconfig_path(), int(sys.argv[2]))
    prom.start()
    print(prom.url)
