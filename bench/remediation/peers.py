"""Remediation benchmark against the stock paths a user can assemble today: one cluster, one injection, one run.

One real control plane, a kwok fleet (500 devices by default), one real Prometheus scraping the battery
gauges. The fleet is split into four pools (node label ``bench.edgeweave.io/path``), one per path, so
that one path's taints or evictions never touch another path's pods:

(a) alerting: a Prometheus alerting rule ``edgeweave_battery_percent < 40`` (evaluation 1 s, ``for`` = our
    grace) -> a real Alertmanager (group_wait 0) -> a webhook receiver (here) that taints the node
    ``NoExecute`` while the alert fires -> taint-based eviction -> scheduler;
(b) labels + descheduler: a labeller (here) sets ``bench.edgeweave.io/battery-ok`` from the same series every
    second; pods require it as node affinity; the real descheduler (v0.36.0) runs
    RemovePodsViolatingNodeAffinity and RemovePodsViolatingNodeTaints every second;
(c) NotReady: the breached devices stop heart-beating (kwok stops managing them: no status, no lease),
    the node lifecycle controller marks them NotReady after node-monitor-grace-period (40 s here) and
    taint-based eviction moves the pods; the pods tolerate ``unreachable``/``not-ready`` for 0 s (the
    best configuration; the default is 300 s). Measured, not computed;
(d) edgeweave: one WorkloadGroup, BatteryPercent Gte 40, gracePeriodSeconds = the grace, hysteresis 10.

Each pool runs ``--per-path`` Deployments that require the battery, and ``--indifferent`` Deployments that
do not care about it placed next to them (preferred pod affinity): moving one of those is an unnecessary
eviction. At t0 every device hosting a requiring pod breaches at once: most drop to 10, every
``--oscillate-every``-th one oscillates 35 <-> 48 every 2 s around the threshold (the noisy signal). In
(a), (b) and (d) the pods see the battery; in (c) the same devices go dark instead.

Reported per path: breach -> Running (p50/p95, a requiring workload's pod Running and Ready on a good device
of its pool), unnecessary evictions, requiring workloads left on breaching devices at the end, and flap
moves (a workload moved more than once), and where the seconds go: per requiring workload, t0 until its pod
is marked for deletion (evicted), until the replacement exists, is bound to a device, is Running and Ready.
``--rounds N`` repeats the injection on the same cluster (between rounds every battery is full again, dark
devices heart-beat again, and the bench waits until no breach taint is left and every workload is Ready);
each round is one run of every path. Then edgeweave alone: the operator is SIGKILLed half-way through a
grace period and restarted; restart_grace_error_s is how far from the original deadline the new process
completes the breach. The last line is one JSON object: per path the median and the 95% interval (with
fewer than 40 rounds: the range) of the per-round p50 and p95, the issue's keys from the medians, and every
round in full. ``--combine a.json b.json`` merges several runs' lines into one.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cluster import (  # noqa: E402 - a sibling script
    BATTERY,
    BENCH_LABEL,
    BREACH_TAINT,
    FULL,
    GROUP,
    LABEL,
    LOW,
    REPO,
    THRESHOLD,
    VERSION,
    Bench,
    free_port,
    http_ok,
    live_pods_by_workload,
    log,
    nearest_rank,
    pod_ready,
    proc_cpu_seconds,
    run_bench,
    summarise,
    wait_for,
)

PATH_LABEL = "bench.edgeweave.io/path"
OK_LABEL = "bench.edgeweave.io/battery-ok"
LOW_TAINT = "bench.edgeweave.io/battery-low"
KWOK_NODE_ANNOTATION = "kwok.x-k8s.io/node"
DARK_HOLDER = "bench-remediation-dark"  # holds a dark device's lease: kwok leaves a lease held by another alone
PATHS = ("a", "b", "c", "d")
OSC_LOW, OSC_HIGH = 35.0, 48.0
NAMES = {"a": "alerting (Prometheus rule -> Alertmanager -> NoExecute taint)",
         "b": "node label + descheduler (RemovePodsViolatingNodeAffinity)",
         "c": "NotReady (heartbeat stops; taint-based eviction, tolerationSeconds 0)",
         "d": "edgeweave"}


def peer_deployment(name: str, path: str, *, requires: bool, grp: str | None = None) -> dict:
    labels = {"app": name, "edgeweave.io/bench": "remediation", "bench.edgeweave.io/requires": str(requires).lower(),
              **({LABEL: grp} if grp else {})}
    terms = [{"key": PATH_LABEL, "operator": "In", "values": [path]}]
    if requires and path == "b":
        terms.append({"key": OK_LABEL, "operator": "In", "values": ["true"]})
    spec: dict = {"containers": [{"name": "app", "image": "registry.invalid/app:1",
                                  "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}}}],
                  "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
                      "nodeSelectorTerms": [{"matchExpressions": terms}]}}}}
    if not requires:
        # Next to the pods that do care: the ones an eviction of the whole device would move for nothing.
        spec["affinity"]["podAffinity"] = {"preferredDuringSchedulingIgnoredDuringExecution": [
            {"weight": 100, "podAffinityTerm": {"topologyKey": "kubernetes.io/hostname", "labelSelector": {
                "matchLabels": {"bench.edgeweave.io/requires": "true", "bench.edgeweave.io/pool": path}}}}]}
        if path == "a":
            # Best configuration of the alerting path: pods that do not need the battery tolerate its taint.
            spec["tolerations"] = [{"key": LOW_TAINT, "operator": "Exists", "effect": "NoExecute"}]
    if path == "c":
        spec["tolerations"] = [{"key": k, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 0}
                               for k in ("node.kubernetes.io/unreachable", "node.kubernetes.io/not-ready")]
    labels["bench.edgeweave.io/pool"] = path
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "labels": labels},
            "spec": {"replicas": 1, "selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": {"labels": labels}, "spec": spec}}}


class Alerting:
    """Path (a): the rule in Prometheus, our own Alertmanager on loopback, and the webhook receiver."""

    def __init__(self, out_dir: Path, core: Any, pool: set[str]) -> None:
        self.out_dir, self.core, self.pool = out_dir, core, pool
        self.am_port, self.hook_port = free_port(), free_port()
        self.events: list[tuple[float, str, str]] = []  # (time, node, firing|resolved)
        self.proc: subprocess.Popen | None = None
        outer = self

        class Hook(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                for alert in body.get("alerts", []):
                    node = alert.get("labels", {}).get("node", "")
                    if node in outer.pool:
                        outer.act(node, alert.get("status") == "firing")
                self.send_response(200)
                self.end_headers()

            def log_message(self, *a: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", self.hook_port), Hook)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def act(self, node: str, firing: bool) -> None:
        self.events.append((time.monotonic(), node, "firing" if firing else "resolved"))
        taints = [t for t in (self.core.read_node(node).spec.taints or []) if t.key != LOW_TAINT]
        body = [{"key": t.key, "value": t.value, "effect": t.effect} for t in taints]
        if firing:
            body.append({"key": LOW_TAINT, "value": "true", "effect": "NoExecute"})
        self.core.patch_node(node, {"spec": {"taints": body}})

    def prometheus_config(self, prom_dir: Path, exporter_port: int, grace: int) -> None:
        (prom_dir / "rules.yml").write_text(
            "groups:\n- name: battery\n  interval: 1s\n  rules:\n"
            f"  - alert: BatteryLow\n    expr: {BATTERY} < {THRESHOLD:g}\n    for: {grace}s\n")
        (prom_dir / "prometheus.yml").write_text(
            "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
            f"rule_files: ['{prom_dir / 'rules.yml'}']\n"
            f"alerting: {{alertmanagers: [{{static_configs: [{{targets: ['127.0.0.1:{self.am_port}']}}]}}]}}\n"
            "scrape_configs:\n- job_name: edgeweave-test\n"
            f"  static_configs: [{{targets: ['127.0.0.1:{exporter_port}']}}]\n")

    def start(self) -> None:
        cfg = self.out_dir / "alertmanager.yml"
        cfg.write_text(
            "route: {receiver: taint, group_by: [node], group_wait: 0s, group_interval: 1s, repeat_interval: 1h}\n"
            f"receivers: [{{name: taint, webhook_configs: [{{url: 'http://127.0.0.1:{self.hook_port}/', "
            "send_resolved: true}]}]\n")
        logf = open(self.out_dir / "alertmanager.log", "wb")  # noqa: SIM115 - owned by the child
        self.proc = subprocess.Popen(
            ["/usr/bin/prometheus-alertmanager", f"--config.file={cfg}", f"--storage.path={self.out_dir / 'am-data'}",
             f"--web.listen-address=127.0.0.1:{self.am_port}", "--cluster.listen-address="],
            stdout=logf, stderr=subprocess.STDOUT, start_new_session=True)

        wait_for(lambda: http_ok(f"http://127.0.0.1:{self.am_port}/-/ready"), 60, "alertmanager ready")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(10)
        self.httpd.shutdown()


class Labeller(threading.Thread):
    """Path (b): the node label from the same series, once a second (what a user's small controller does)."""

    def __init__(self, prom_url: str, core: Any, pool: set[str]) -> None:
        super().__init__(daemon=True)
        self.url, self.core, self.pool = prom_url, core, pool
        self.labels: dict[str, str] = {}
        self.changes = 0
        self.halt = threading.Event()

    def run(self) -> None:
        while not self.halt.wait(1.0):
            try:
                with urllib.request.urlopen(f"{self.url}/api/v1/query?query={BATTERY}", timeout=3) as r:  # noqa: S310
                    res = json.loads(r.read())["data"]["result"]
            except OSError:
                continue
            for s in res:
                node = s["metric"].get("node", "")
                if node not in self.pool:
                    continue
                want = "true" if float(s["value"][1]) >= THRESHOLD else "false"
                if self.labels.get(node) != want:
                    self.core.patch_node(node, {"metadata": {"labels": {OK_LABEL: want}}})
                    self.labels[node] = want
                    self.changes += 1


class PodWatch(threading.Thread):
    """The bench's pods through one watch: each change is stamped (monotonic) as it arrives. Between
    `begin` and `attach` changes are kept, then handed to the handler in order; after `detach` they are
    dropped. A watch that ends (timeout, 410 Gone) is re-listed and resumed."""

    def __init__(self, core: Any, selector: str) -> None:
        super().__init__(daemon=True)
        self.core, self.selector = core, selector
        self.lock = threading.Lock()
        self.handler: Any = None
        self.buffer: list[tuple[str, dict, float]] | None = None
        self.halt = threading.Event()

    def begin(self) -> None:
        with self.lock:
            self.buffer = []

    def attach(self, handler: Any) -> None:
        with self.lock:
            for ev in self.buffer or []:
                handler(*ev)
            self.buffer, self.handler = None, handler

    def detach(self) -> None:
        with self.lock:
            self.handler, self.buffer = None, None

    def deliver(self, kind: str, pod: dict) -> None:
        t = time.monotonic()
        with self.lock:
            if self.handler is not None:
                self.handler(kind, pod, t)
            elif self.buffer is not None:
                self.buffer.append((kind, pod, t))

    def run(self) -> None:
        from kubernetes import watch

        rv: str | None = None
        while not self.halt.is_set():
            try:
                if rv is None:  # first start, or the server no longer has our version (410): from now on
                    rv = json.loads(self.core.list_pod_for_all_namespaces(
                        label_selector=self.selector, limit=1, _preload_content=False).data)["metadata"][
                        "resourceVersion"]
                for ev in watch.Watch().stream(self.core.list_pod_for_all_namespaces, label_selector=self.selector,
                                               resource_version=rv, timeout_seconds=300, deserialize=False):
                    if self.halt.is_set():
                        return
                    obj = ev.get("object")
                    if not isinstance(obj, dict):
                        continue
                    rv = (obj.get("metadata") or {}).get("resourceVersion") or rv
                    if ev.get("type") in ("ADDED", "MODIFIED", "DELETED"):
                        self.deliver(ev["type"], obj)
            except Exception as err:  # noqa: BLE001 - the client raises on an ERROR event (410 Gone) or a broken stream
                if self.halt.is_set():
                    return  # the rounds are over and the cluster is going away
                # Re-listed from now: changes in between are not seen (logged; none was, in the runs here).
                log(f"pod watch re-listed: {type(err).__name__}: {str(err)[:200]}")
                rv = None
                time.sleep(0.5)


class PeersBench(Bench):
    def start_pools(self, nodes: list[str]) -> dict[str, list[str]]:
        pools = {p: [n for i, n in enumerate(sorted(nodes)) if i % len(PATHS) == k] for k, p in enumerate(PATHS)}
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda x: self.core.patch_node(x[0], {"metadata": {"labels": {
                PATH_LABEL: x[1], **({OK_LABEL: "true"} if x[1] == "b" else {})}}}),
                [(n, p) for p, ns in pools.items() for n in ns]))
        return pools

    def start_prometheus_with_rules(self, nodes: list[str], alerting: Alerting) -> None:
        self.prom = self.promstack_mod.PromStack(prom_port=free_port(), exporter_port=free_port())
        alerting.prometheus_config(self.prom.dir, self.prom.exporter_port, self.args.grace)
        self.prom.start()
        self.battery = dict.fromkeys(nodes, FULL)
        for n in nodes:
            self.prom.series.set_gauge(BATTERY, {"node": n}, FULL)
        self.wait_series(nodes)

    def set_battery(self, node: str, v: float) -> None:
        self.prom.series.set_gauge(BATTERY, {"node": node}, v)
        self.battery[node] = v

    def create_peer_workloads(self) -> dict[str, dict[str, list[str]]]:
        a = self.args
        sets: dict[str, dict[str, list[str]]] = {p: {"requires": [], "indifferent": []} for p in PATHS}
        plan = []
        for p in PATHS:
            ns = f"rem-p{p}"
            self.core.create_namespace({"metadata": {"name": ns}})
            for i in range(a.per_path):
                plan.append((p, "requires", ns, peer_deployment(f"r-{i:02d}", p, requires=True,
                                                                 grp="pay" if p == "d" else None)))
        for p in PATHS:
            wait_for(lambda p=p: self.core.read_namespaced_service_account("default", f"rem-p{p}"), 60, "SA")
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda x: self.apps.create_namespaced_deployment(x[2], x[3]), plan))
        n = len(plan)
        wait_for(lambda: sum(1 for v in live_pods_by_workload(self.bench_pods()).values()
                             if len(v) == 1 and pod_ready(v[0])) >= n, 600, "requiring workloads Running", interval=1)
        # Then the indifferent ones, which the scheduler puts next to them.
        extra = [(p, "indifferent", f"rem-p{p}", peer_deployment(f"i-{i:02d}", p, requires=False))
                 for p in PATHS for i in range(a.indifferent)]
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda x: self.apps.create_namespaced_deployment(x[2], x[3]), extra))
        plan += extra
        wait_for(lambda: sum(1 for v in live_pods_by_workload(self.bench_pods()).values()
                             if len(v) == 1 and pod_ready(v[0])) >= len(plan), 600, "all workloads Running", interval=1)
        for p, kind, ns, d in plan:
            sets[p][kind].append(f"{ns}/{d['metadata']['name']}")
        return sets

    def create_group(self) -> None:
        spec = {"selector": {LABEL: "pay"}, "aggregation": {"enabled": False},
                "telemetry": {"resyncSeconds": 5, "maxAgeSeconds": 60},
                "limits": {"maxMovesPerInterval": 100, "intervalSeconds": 60, "maxInFlight": self.args.max_in_flight},
                "requirements": [{"element": "BatteryPercent", "operator": "Gte", "value": str(int(THRESHOLD)),
                                  "gracePeriodSeconds": self.args.grace, "hysteresis": 10}]}
        self.custom.create_namespaced_custom_object(GROUP, VERSION, "rem-pd", "workloadgroups", {
            "apiVersion": f"{GROUP}/{VERSION}", "kind": "WorkloadGroup", "metadata": {"name": "pay"}, "spec": spec})

        def satisfied() -> bool | dict:
            st = self.custom.get_namespaced_custom_object(GROUP, VERSION, "rem-pd", "workloadgroups", "pay").get(
                "status") or {}
            c = next((c for c in st.get("conditions", []) if c["type"] == "ContextSatisfied"), {})
            return c.get("reason") == "Satisfied" or c  # the condition, for the timeout message

        t = time.monotonic()
        wait_for(lambda: satisfied() is True, 300, "the WorkloadGroup ContextSatisfied", interval=1)
        log(f"WorkloadGroup ContextSatisfied in {time.monotonic() - t:.1f}s")

    def go_dark(self, node: str) -> None:
        """The device's heartbeat stops: kwok stops writing its status, and its lease is taken from kwok so
        nobody renews it. (The annotation alone does not do it: kwok 0.7 keeps renewing the lease of a node it
        no longer manages, so before this the NotReady path never saw a device go NotReady.) The lease keeps
        kwok's last renewal as its renew time: the heartbeat stopped then."""
        self.core.patch_node(node, {"metadata": {"annotations": {KWOK_NODE_ANNOTATION: "stopped"}}})
        self.coord.patch_namespaced_lease(node, "kube-node-lease", {"spec": {
            "holderIdentity": DARK_HOLDER, "leaseDurationSeconds": 3600}})

    def come_back(self, node: str) -> None:
        """The heartbeat resumes: the lease goes back to kwok (renewed now, its own holder identity and
        duration), and kwok manages the node again. kwok re-holds a lease only when it sees the node become
        managed, so the lease is handed back first."""
        held = next((ls for ls in self.coord.list_namespaced_lease("kube-node-lease", limit=50).items
                     if ls.spec.holder_identity and ls.spec.holder_identity != DARK_HOLDER), None)
        spec: dict[str, Any] = {"renewTime": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")}
        if held is not None:
            spec.update(holderIdentity=held.spec.holder_identity, leaseDurationSeconds=held.spec.lease_duration_seconds)
        self.coord.patch_namespaced_lease(node, "kube-node-lease", {"spec": spec})
        self.core.patch_node(node, {"metadata": {"annotations": {KWOK_NODE_ANNOTATION: "fake"}}})

    def run(self) -> dict[str, Any]:
        a = self.args
        t_setup = time.monotonic()
        self.start_cluster()
        # No EdgeSites: none of the four paths reads them, and on this shared 2-core machine the operator's
        # start-up pass over 250 of them (EdgeSite overlap check, fleet-scale work of its own) took minutes.
        nodes = self.start_fleet(edgesites=self.args.edgesites)
        from kubernetes import client

        self.coord = client.CoordinationV1Api(self.api)
        pools = self.start_pools(nodes)
        self.pools = pools
        alerting = Alerting(self.out_dir, self.core, set(pools["a"]))
        self.start_prometheus_with_rules(nodes, alerting)
        alerting.start()
        self.alerting = alerting
        labeller = Labeller(self.prom.url, self.core, set(pools["b"]))
        labeller.labels = dict.fromkeys(pools["b"], "true")
        labeller.start()
        self.labeller = labeller
        # The peers' pods never pass our pod webhook: a user of a stock path runs no edgeweave (and every pod
        # creation of theirs waited on a busy operator's answer before).
        self.webhook_excluded = [f"rem-p{p}" for p in PATHS if p != "d"]
        self.start_operator()
        sets = self.create_peer_workloads()
        self.create_group()
        desched = self.start_descheduler()
        self.pod_watch = PodWatch(self.core, f"{BENCH_LABEL}=remediation")
        self.pod_watch.start()
        setup_s = time.monotonic() - t_setup
        rounds = []
        try:
            for r in range(a.rounds):
                if r:
                    self.reset_round(sets)
                rounds.append(self.measure_round(sets, r))
                log(f"round {r + 1}/{a.rounds}: " + json.dumps(headline(rounds[-1]["paths"])))
        finally:
            self.pod_watch.halt.set()
            labeller.halt.set()
            os.killpg(desched.pid, signal.SIGTERM)
            desched.wait(15)
        for n in nodes:  # back to full so nothing oscillates while edgeweave's restart is measured
            if self.battery.get(n) != FULL:
                self.set_battery(n, FULL)
        restart = self.measure_restart(sets, {})
        return {
            "what": f"{len(nodes)} kwok devices in 4 pools, one per path; battery drop on many devices at once, "
                    f"every {a.oscillate_every}th oscillating 35<->48; grace {a.grace} s; {a.rounds} injection "
                    "round(s) on one cluster" + ("; cluster tuned for failover (every path)" if a.tuned else ""),
            "cluster_flags": ({"kwok": {**self.devcluster.KWOK_TUNED_OPTIONS, "nodeStages": "kubelet-like heartbeat"},
                               "kube-controller-manager": list(self.devcluster.KCM_TUNED_FLAGS)} if a.tuned else None),
            "devices": len(nodes), "grace_s": a.grace, "rounds": rounds, "restart": restart,
            "restart_grace_error_s": restart.get("restart_grace_error_s"), "setup_s": round(setup_s, 1),
            "load_average": os.getloadavg()[0],
        }

    def start_descheduler(self) -> subprocess.Popen:
        bin_dir = subprocess.run(["bash", str(REPO / "hack" / "build-descheduler.sh")], check=True,
                                 capture_output=True, text=True).stdout.strip()
        policy = self.out_dir / "descheduler-policy.json"
        policy.write_text(json.dumps({
            # Pool b and its namespace only: RemovePodsViolatingNodeTaints would otherwise also evict pods
            # from under edgeweave's NoSchedule breach taint in pool d (seen in the first run).
            "apiVersion": "descheduler/v1alpha2", "kind": "DeschedulerPolicy",
            "nodeSelector": f"{PATH_LABEL}=b",
            "profiles": [{"name": "battery", "pluginConfig": [
                {"name": "DefaultEvictor", "args": {"evictLocalStoragePods": True, "nodeFit": True}},
                {"name": "RemovePodsViolatingNodeAffinity",
                 "args": {"nodeAffinityType": ["requiredDuringSchedulingIgnoredDuringExecution"],
                          "namespaces": {"include": ["rem-pb"]}}},
                # edgeweave's NoSchedule breach taint is not this path's signal (a pool-d member the scheduler
                # put on a pool-b device brings it there): without the exclusion the plugin evicted pool b's
                # indifferent pods from under it (seen in the second run).
                {"name": "RemovePodsViolatingNodeTaints", "args": {"namespaces": {"include": ["rem-pb"]},
                                                                   "excludedTaints": ["edgeweave.io/context-breach"]}}],
                "plugins": {"deschedule": {"enabled": ["RemovePodsViolatingNodeAffinity",
                                                       "RemovePodsViolatingNodeTaints"]}}}]}))
        dlog = open(self.out_dir / "descheduler.log", "ab")  # noqa: SIM115 - owned by the child
        return subprocess.Popen([f"{bin_dir}/descheduler", f"--kubeconfig={self.kubeconfig}",
                                 f"--policy-config-file={policy}", "--descheduling-interval=1s",
                                 "--leader-elect=false", "--secure-port=0", "-v=2"],
                                stdout=dlog, stderr=subprocess.STDOUT, start_new_session=True)

    def reset_round(self, sets: dict) -> None:
        """Between rounds: every battery full, dark devices heart-beating again, and every workload back to
        one Ready pod with no breach taint left anywhere (edgeweave releases its claims on recovery; the
        alert resolves and its receiver lifts the NoExecute taint). The next round breaches the devices
        that host the requiring pods then."""
        t = time.monotonic()
        for n, v in list(self.battery.items()):
            if v != FULL:
                self.set_battery(n, FULL)
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(self.come_back, sorted(self.dark)))
        keys = [k for p in PATHS for kind in ("requires", "indifferent") for k in sets[p][kind]]
        back = time.monotonic()
        nudged: dict[str, float] = {}

        def settled() -> bool:
            nodes = self.raw(self.core.list_node, label_selector="type=kwok")["items"]
            clean = True
            for n in nodes:
                taints = {tt["key"] for tt in n["spec"].get("taints") or []}
                ready = any(c["type"] == "Ready" and c["status"] == "True" for c in n["status"].get("conditions") or [])
                name = n["metadata"]["name"]
                if not ready and name in self.dark and time.monotonic() - nudged.get(name, back) > 15:
                    # kwok now and then leaves a device that came back with its Unknown status (seen once in
                    # ten: the lease renewed, the node never re-initialised); it re-reads a node it starts
                    # managing again, so the annotation goes off and on.
                    self.core.patch_node(name, {"metadata": {"annotations": {KWOK_NODE_ANNOTATION: "stopped"}}})
                    self.core.patch_node(name, {"metadata": {"annotations": {KWOK_NODE_ANNOTATION: "fake"}}})
                    nudged[name] = time.monotonic()
                    log(f"reset: {name} came back without a status; kwok told to manage it again")
                if not ready or taints & {BREACH_TAINT, LOW_TAINT, "node.kubernetes.io/unreachable",
                                          "node.kubernetes.io/not-ready"}:
                    clean = False
            if not clean:
                return False
            by = live_pods_by_workload(self.bench_pods())
            return all(len(by.get(k, [])) == 1 and pod_ready(by[k][0]) for k in keys)

        wait_for(settled, 300, "every device clean and every workload Ready again", interval=2)
        log(f"reset in {time.monotonic() - t:.1f}s")

    def measure_round(self, sets: dict, r: int) -> dict[str, Any]:  # noqa: C901, PLR0915 - one measured scenario
        a = self.args
        before = live_pods_by_workload(self.bench_pods())
        origin = {k: v[0]["spec"]["nodeName"] for k, v in before.items()}
        first_uid = {k: v[0]["metadata"]["uid"] for k, v in before.items()}
        breaching = {p: sorted({origin[k] for k in sets[p]["requires"]}) for p in PATHS}
        oscillating = {p: [n for i, n in enumerate(devs) if p != "c" and i % a.oscillate_every == 0]
                       for p, devs in breaching.items()}
        osc_all = {n for v in oscillating.values() for n in v}
        dark = set(breaching["c"])
        self.dark = dark
        log(f"round {r + 1}: injecting at once: {sum(len(v) for v in breaching.values())} devices "
            f"({', '.join(f'{p}: {len(v)}' for p, v in breaching.items())}), {len(osc_all)} oscillating, "
            f"{len(dark)} of pool c going dark")
        cpu0 = proc_cpu_seconds(self.op.pid)
        alerts0, labels0 = len(self.alerting.events), self.labeller.changes
        self.pod_watch.begin()  # changes from t0 on are kept until the round's handler takes them
        t0 = time.monotonic()
        for p in PATHS:
            for n in breaching[p]:
                self.set_battery(n, OSC_LOW if n in osc_all else LOW)
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(self.go_dark, sorted(dark)))

        def good(node: str) -> bool:
            return self.battery.get(node, 0) >= THRESHOLD and node not in dark and node not in osc_all

        running: dict[str, float] = {}
        # Where the seconds go, per requiring workload (first move only): the old pod marked for deletion or
        # gone (evicted), its replacement created, bound to a device, Running and Ready.
        stages: dict[str, dict[str, float]] = {k: {} for p in PATHS for k in sets[p]["requires"]}
        dark_notready: dict[str, float] = {}  # device -> seconds until its Ready condition stopped being True
        dark_tainted: dict[str, float] = {}  # device -> seconds until the unreachable NoExecute taint
        diag = ThreadPoolExecutor(8)
        uids: dict[str, set[str]] = {k: {u} for k, u in first_uid.items()}
        bound_seen: set[str] = set()
        on_osc_later: dict[str, int] = {}
        requiring = {k for p in PATHS for k in sets[p]["requires"]}

        def seen(kind: str, pod: dict, t: float) -> None:
            """One pod change, stamped when the watch delivered it (a poll of every pod took seconds under
            load: its stage times were the poll's, not the cluster's)."""
            meta = pod["metadata"]
            k = f"{meta['namespace']}/{(meta.get('labels') or {}).get('app', '')}"
            if k not in uids:
                return
            uid, node = meta["uid"], pod["spec"].get("nodeName")
            gone = kind == "DELETED" or bool(meta.get("deletionTimestamp"))
            st = stages.get(k)
            if uid == first_uid[k]:
                if gone and st is not None:
                    st.setdefault("evicted", t)
                return
            if not gone:
                uids[k].add(uid)
                if node and uid not in bound_seen:
                    bound_seen.add(uid)
                    if node in osc_all:
                        on_osc_later[k] = on_osc_later.get(k, 0) + 1
            if st is not None:  # a replacement (the earliest stage times are kept: the first move's)
                st.setdefault("created", t)
                if node:
                    st.setdefault("bound", t)
                if pod_ready(pod):
                    st.setdefault("ready", t)
            if k in requiring and not gone and node and pod_ready(pod) and good(node):
                running.setdefault(k, t)

        self.pod_watch.attach(lambda kind, pod, t_mono: seen(kind, pod, t_mono - t0))
        osc_state, osc_next = False, t0 + 2.0
        while (elapsed := time.monotonic() - t0) < a.window:
            if time.monotonic() >= osc_next:  # the noisy signal: 35 <-> 48 every 2 s
                osc_state = not osc_state
                for n in osc_all:
                    self.set_battery(n, OSC_HIGH if osc_state else OSC_LOW)
                osc_next += 2.0
            t = time.monotonic() - t0
            todo = [n for n in sorted(dark) if n not in dark_tainted]
            for n, node in zip(todo, diag.map(lambda n: self.raw(self.core.read_node, n), todo), strict=True):
                ready = next((c for c in node["status"].get("conditions") or [] if c["type"] == "Ready"), {})
                if ready.get("status") != "True":
                    dark_notready.setdefault(n, t)
                if any(tt["key"] == "node.kubernetes.io/unreachable" for tt in node["spec"].get("taints") or []):
                    dark_tainted[n] = t
            with self.pod_watch.lock:
                done = all(k in running for p in ("a", "b", "d") for k in sets[p]["requires"])
                done_c = all(k in running for k in sets["c"]["requires"])
            if done and done_c and elapsed >= a.min_window:
                break
            time.sleep(0.5)
        self.pod_watch.detach()
        window_s = time.monotonic() - t0
        cpu1 = proc_cpu_seconds(self.op.pid)
        end = live_pods_by_workload(self.bench_pods())
        diag.shutdown()

        per_path: dict[str, Any] = {}
        for p in PATHS:
            req, ind = sets[p]["requires"], sets[p]["indifferent"]
            bad = set(breaching[p])
            moves = {k: len(uids[k]) - 1 for k in req + ind}
            per_path[p] = {
                "path": NAMES[p], "workloads": len(req), "breaching_devices": len(bad),
                "oscillating_devices": len(oscillating[p]),
                **summarise("breach_to_running", [running[k] for k in req if k in running], len(req)),
                "stages_p50_s": {s: nearest_rank([stages[k][s] for k in req if s in stages[k]], 50)
                                 for s in ("evicted", "created", "bound", "ready")},
                "stages_count": {s: sum(1 for k in req if s in stages[k]) for s in ("evicted", "created", "bound",
                                                                                     "ready")},
                "unnecessary_evictions": sum(1 for k in ind if origin.get(k) in bad and moves[k] > 0),
                "indifferent_on_breaching_devices": sum(1 for k in ind if origin.get(k) in bad),
                "left_on_breaching_devices": sum(
                    1 for k in req if any((pp["spec"].get("nodeName") or "") in bad | dark for pp in end.get(k, []))),
                "flap_moves": sum(max(0, moves[k] - 1) for k in req),
                "moves": sum(moves[k] for k in req),
                "placed_back_on_oscillating": sum(on_osc_later.get(k, 0) for k in req)}
        per_path["a"]["alerts"] = {s: sum(1 for e in self.alerting.events[alerts0:] if e[2] == s)
                                   for s in ("firing", "resolved")}
        per_path["b"]["label_changes"] = self.labeller.changes - labels0
        per_path["c"].update(summarise("notready", [dark_notready[n] for n in dark if n in dark_notready], len(dark)))
        per_path["c"].update(summarise("unreachable_taint", [dark_tainted[n] for n in dark if n in dark_tainted],
                                       len(dark)))
        st = self.custom.get_namespaced_custom_object(GROUP, VERSION, "rem-pd", "workloadgroups", "pay").get(
            "status") or {}
        plan = st.get("plan") or {}
        per_path["d"]["group"] = {
            "conditions": {c["type"]: f"{c.get('reason')}: {c.get('message', '')[:200]}" for c in st.get("conditions", [])},
            "plan": plan.get("summary"), "skipped": [x.get("reason", "")[:200] for x in plan.get("skipped", [])[:3]],
            "moves_by_phase": {ph: sum(1 for m in plan.get("moves", []) if m.get("phase") == ph)
                               for ph in sorted({m.get("phase", "") for m in plan.get("moves", [])})},
            "move_messages": sorted({(m.get("message") or "")[:160] for m in plan.get("moves", [])})[:4]}
        result = {"paths": per_path, "observation_window_s": round(window_s, 1),
                  "operator_cpu_s_in_window": round(cpu1 - cpu0, 1) if cpu0 is not None and cpu1 is not None else None,
                  "load_average": os.getloadavg()[0], "devices": len(self.battery)}
        with open(self.out_dir / "rounds.jsonl", "a") as f:  # each round as it ends: a later failure keeps it
            f.write(json.dumps(result) + "\n")
        return result

    def measure_restart(self, sets: dict, origin: dict[str, str]) -> dict[str, Any]:
        """SIGKILL the operator half-way through a grace period on one device of pool d; restart it."""
        grace = self.args.restart_grace
        self.custom.patch_namespaced_custom_object(GROUP, VERSION, "rem-pd", "workloadgroups", "pay", {
            "spec": {"requirements": [{"element": "BatteryPercent", "operator": "Gte", "value": str(int(THRESHOLD)),
                                       "gracePeriodSeconds": grace, "hysteresis": 10}]}})
        by = live_pods_by_workload(self.bench_pods())
        k = sets["d"]["requires"][0]
        node = by[k][0]["spec"]["nodeName"]

        def record(phase: str) -> dict | None:
            st = self.custom.get_namespaced_custom_object(GROUP, VERSION, "rem-pd", "workloadgroups", "pay").get(
                "status") or {}
            return next((r for r in st.get("breachState", []) if r["device"] == node and r["phase"] == phase), None)

        # Wait for the group to have read the new spec and seen the device recover (no record of it left: a
        # device still Breached from the rounds would never go Pending) before the drop.
        wait_for(lambda: not any(r["phase"] == "Pending" or r["device"] == node for r in (
            self.custom.get_namespaced_custom_object(GROUP, VERSION, "rem-pd", "workloadgroups", "pay").get(
                "status") or {}).get("breachState", [])), 90, "no pending breach, none on the device")
        self.set_battery(node, LOW)
        rec = wait_for(lambda: record("Pending"), 60, "the breach pending", interval=0.2)
        since = rec["since"]
        wait_for(lambda: time.time() >= since + grace / 2, grace, "half the grace", interval=0.1)
        os.killpg(self.op.pid, signal.SIGKILL)
        self.op.wait(10)
        killed = time.time()
        before = self.pending_message()
        self.op_log = self.out_dir / "operator-restarted.log"
        self.start_operator()
        up = time.time()
        # The new process's first round rewrites the grace left ("(12s of grace left)") or completes the breach.
        first_round: float | None = None
        while (r := record("Breached")) is None and time.time() - up < 120:
            if first_round is None and self.pending_message() != before:
                first_round = time.time()
            time.sleep(0.2)
        done = r or wait_for(lambda: record("Breached"), 10, "the restarted operator to complete the breach")
        first_round = first_round or done["changedAt"]
        err = done["changedAt"] - (since + grace)
        return {"restart_grace_error_s": round(err, 2), "grace_s": grace, "killed_after_s": round(killed - since, 2),
                "new_operator_ready_after_s": round(up - since, 2),
                "new_operator_first_round_after_s": round(first_round - since, 2),
                # A clock restarted by the new process would complete a full grace after its first round.
                "naive_restart_error_s": round(first_round - since, 2)}

    def pending_message(self) -> str:
        st = self.custom.get_namespaced_custom_object(GROUP, VERSION, "rem-pd", "workloadgroups", "pay").get(
            "status") or {}
        return next((c.get("message", "") for c in st.get("conditions", []) if c["type"] == "ContextSatisfied"), "")

    def stop(self) -> None:
        alerting = getattr(self, "alerting", None)
        if alerting is not None:
            alerting.stop()
        super().stop()


def _interval(values: list[float]) -> list[float] | None:
    """The 2.5th and 97.5th nearest-rank percentiles: with fewer than 40 values, the range."""
    return [nearest_rank(values, 2.5), nearest_rank(values, 97.5)] if values else None


def headline(paths: dict[str, Any]) -> dict[str, Any]:
    """The issue's keys for one round: ours against the best peer (lowest p95) of the same round."""
    ours = paths["d"]
    peers = {p: paths[p] for p in ("a", "b", "c")}
    best = min((p for p in peers if peers[p]["breach_to_running_p95_s"] is not None),
               key=lambda p: peers[p]["breach_to_running_p95_s"], default=None)
    best_p95 = peers[best]["breach_to_running_p95_s"] if best else None
    ours_p95 = ours["breach_to_running_p95_s"]
    return {
        "breach_to_running_p50_s": ours["breach_to_running_p50_s"], "breach_to_running_p95_s": ours_p95,
        "best_peer": best, "best_peer_breach_to_running_p95_s": best_p95,
        "ratio_vs_best_peer": round(ours_p95 / best_p95, 3) if ours_p95 and best_p95 else None,
        **{f"{'' if p == 'd' else f'peer_{p}_'}{k}": paths[p][k] for p in PATHS
           for k in ("unnecessary_evictions", "left_on_breaching_devices", "flap_moves")},
        **{f"peer_{p}_breach_to_running_p95_s": peers[p]["breach_to_running_p95_s"] for p in peers},
    }


def combine(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Every round of every run (one cluster each): per path, the median and the 95% interval of the per-round
    p50 and p95; the issue's keys from the medians (ours against the peer with the lowest median p95); counts
    summed over the rounds."""
    rounds = [r for res in results for r in res["rounds"]]
    out: dict[str, Any] = {"runs": len(rounds), "clusters": len(results)}
    med: dict[str, float | None] = {}
    for p in PATHS:
        for q in ("p50", "p95"):
            vals = [r["paths"][p][f"breach_to_running_{q}_s"] for r in rounds]
            got = [v for v in vals if v is not None]
            key = f"{'' if p == 'd' else f'peer_{p}_'}breach_to_running_{q}_s"
            # A round where the path did not get every workload Running has no percentile: the median then
            # counts it as longer than any measured one (the window), and says how many there were.
            m = statistics.median([v if v is not None else math.inf for v in vals]) if vals else None
            out[key] = None if m is None or math.isinf(m) else round(m, 2)
            out[f"{key}_interval"] = _interval(got) if len(got) == len(vals) else None
            out[f"{key}_rounds_without"] = len(vals) - len(got)
            if q == "p95":
                med[p] = out[key]
    best = min((p for p in ("a", "b", "c") if med[p] is not None), key=lambda p: med[p], default=None)
    out["best_peer"] = NAMES[best] if best else None
    out["best_peer_breach_to_running_p95_s"] = med[best] if best else None
    out["ratio_vs_best_peer"] = round(med["d"] / med[best], 3) if best and med["d"] else None
    out["ratio_vs_best_peer_per_round"] = [headline(r["paths"])["ratio_vs_best_peer"] for r in rounds]
    for k in ("unnecessary_evictions", "left_on_breaching_devices", "flap_moves"):
        out[k] = sum(r["paths"]["d"][k] for r in rounds)
        for p in ("a", "b", "c"):
            out[f"peer_{p}_{k}"] = sum(r["paths"][p][k] for r in rounds)
    errs = [res["restart_grace_error_s"] for res in results if res.get("restart_grace_error_s") is not None]
    out["restart_grace_error_s"] = statistics.median(errs) if errs else None
    out["restart_grace_error_s_all"] = errs
    out["stages_p50_s"] = {p: {s: statistics.median(v) if (v := [r["paths"][p]["stages_p50_s"][s] for r in rounds
                                                               if r["paths"][p]["stages_p50_s"][s] is not None])
                               else None for s in ("evicted", "created", "bound", "ready")} for p in PATHS}
    out["load_average_per_round"] = [r["load_average"] for r in rounds]
    out["devices"] = sorted({res["devices"] for res in results})
    return out


def _load_run(path: Path) -> dict[str, Any]:
    """A run's result (the last line of its JSON), or the rounds.jsonl a run writes as each round ends (an
    invocation cut short keeps its finished rounds: no restart figure then)."""
    lines = path.read_text().strip().splitlines()
    if path.suffix == ".jsonl":
        rounds = [json.loads(ln) for ln in lines if ln.strip()]
        return {"what": f"{len(rounds)} round(s) from {path.name}", "rounds": rounds, "restart_grace_error_s": None,
                "devices": rounds[0].get("devices") if rounds else None}
    return json.loads(lines[-1])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=str(REPO / "bench" / "out" / "remediation" / "peers.json"))
    p.add_argument("--sites", type=int, default=250, help="2 kwok devices per site")
    p.add_argument("--per-path", type=int, default=20, help="requiring Deployments per path")
    p.add_argument("--indifferent", type=int, default=10, help="Deployments per path that do not need the battery")
    p.add_argument("--oscillate-every", type=int, default=5)
    p.add_argument("--grace", type=int, default=0, help="our gracePeriodSeconds and the alert's `for`")
    p.add_argument("--restart-grace", type=int, default=30)
    p.add_argument("--max-in-flight", type=int, default=20)
    p.add_argument("--workers", type=int, default=int(os.environ.get("EDGEWEAVE_WORKERS", "32")))
    p.add_argument("--window", type=float, default=180.0)
    p.add_argument("--min-window", type=float, default=30.0)
    p.add_argument("--edgesites", action=argparse.BooleanOptionalAction, default=False,
                   help="also create the fleet's EdgeSites (off by default: no path reads them)")
    p.add_argument("--tuned", action=argparse.BooleanOptionalAction, default=True,
                   help="the cluster tuned for failover, for every path (hack/devcluster.py KWOK_TUNED_CONFIG, "
                        "KCM_TUNED_FLAGS)")
    p.add_argument("--rounds", type=int, default=1, help="injection rounds on the one cluster (reset in between)")
    p.add_argument("--combine", nargs="+", metavar="JSON", default=None,
                   help="no run: combine earlier runs' JSON (files whose last line is a run's result) into one line")
    args = p.parse_args(argv)
    if args.combine:
        results = [_load_run(Path(f)) for f in args.combine]
        line = json.dumps({"what": "combined: " + "; ".join(r.get("what", "") for r in results[:1]),
                           **combine(results)})
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(line + "\n")
        print(line)
        return 0
    return run_bench(PeersBench, args, finish=lambda res: {**combine([res]), **res})


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
