"""A real Prometheus (Debian's package) scraping an exporter the test controls.

The exporter publishes counters whose rate() is exactly what a test sets, and gauges, so a test can make
a dependency or a context change "appear in Prometheus" and watch the operator react.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from wsgiref.simple_server import WSGIRequestHandler, make_server

from prometheus_client import CollectorRegistry, make_wsgi_app
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

sys.path.insert(0, str(Path(__file__).resolve().parent))  # hack/ is a script dir
import reaper  # noqa: E402


class _Quiet(WSGIRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


class ControlledSeries:
    """Collector: counters that grow at a set rate (rate() reads it back exactly), and gauges."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # name -> labels tuple -> [value at t0, rate, t0]
        self._counters: dict[str, dict[tuple[tuple[str, str], ...], list[float]]] = {}
        self._gauges: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}

    def set_rate(self, name: str, labels: dict[str, str], rate: float) -> None:
        key = tuple(sorted(labels.items()))
        now = time.time()
        with self._lock:
            series = self._counters.setdefault(name, {})
            if key in series:
                v0, r, t0 = series[key]
                series[key] = [v0 + r * (now - t0), rate, now]
            else:
                series[key] = [0.0, rate, now]

    def set_gauge(self, name: str, labels: dict[str, str], value: float | None) -> None:
        key = tuple(sorted(labels.items()))
        with self._lock:
            if value is None:
                self._gauges.get(name, {}).pop(key, None)
            else:
                self._gauges.setdefault(name, {})[key] = value

    def clear(self) -> None:
        with self._lock:
            self._counters.clear()
            self._gauges.clear()

    def collect(self):
        now = time.time()
        with self._lock:
            for name, series in self._counters.items():
                keys = sorted({k for key in series for k, _ in key})
                fam = CounterMetricFamily(name.removesuffix("_total"), "test series", labels=keys)
                for key, (v0, rate, t0) in series.items():
                    d = dict(key)
                    fam.add_metric([d.get(k, "") for k in keys], v0 + rate * (now - t0))
                yield fam
            for name, series in self._gauges.items():
                keys = sorted({k for key in series for k, _ in key})
                fam = GaugeMetricFamily(name, "test series", labels=keys)
                for key, value in series.items():
                    d = dict(key)
                    fam.add_metric([d.get(k, "") for k in keys], value)
                yield fam


class PromStack:
    def __init__(self, prom_port: int, exporter_port: int, record_dir: Path | None = None) -> None:
        """`record_dir`: a run dir; the Prometheus process is recorded there (hack/reaper.py) so that the
        next start reaps it if this process is killed before it could stop it."""
        self.prom_port, self.exporter_port = prom_port, exporter_port
        self.record_dir = record_dir
        self._record: Path | None = None
        self.series = ControlledSeries()
        registry = CollectorRegistry()
        registry.register(self.series)
        self._httpd = make_server("127.0.0.1", exporter_port, make_wsgi_app(registry), handler_class=_Quiet)
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()
        self.dir = Path(tempfile.mkdtemp(prefix="edgeweave-prom-"))
        (self.dir / "prometheus.yml").write_text(
            "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
            "scrape_configs:\n"
            "- job_name: edgeweave-test\n"
            f"  static_configs: [{{targets: ['127.0.0.1:{exporter_port}']}}]\n")
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.prom_port}"

    def start(self) -> None:
        binary = shutil.which("prometheus") or "/usr/bin/prometheus"
        log = open(self.dir / "prometheus.log", "ab")  # noqa: SIM115 - owned by the child
        self.proc = subprocess.Popen(
            [binary, f"--config.file={self.dir / 'prometheus.yml'}", f"--storage.tsdb.path={self.dir / 'data'}",
             f"--web.listen-address=127.0.0.1:{self.prom_port}", "--storage.tsdb.retention.time=1h",
             "--query.lookback-delta=30s"],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=reaper.die_with_parent)
        if self.record_dir is not None:
            self._record = reaper.record(self.record_dir, f"test-prometheus-{self.prom_port}", self.proc.pid)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=1) as r:
                    if r.status == 200:
                        return
            except OSError:
                time.sleep(0.3)
        raise RuntimeError(f"prometheus did not become ready: {(self.dir / 'prometheus.log').read_text()[-2000:]}")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None
        reaper.forget(self._record)
        self._record = None

    def close(self) -> None:
        self.stop()
        self._httpd.shutdown()
        shutil.rmtree(self.dir, ignore_errors=True)
