"""Aggregation benchmark, real-cluster part: time from a dependency appearing in Prometheus to both pods
Running and Ready on one device, with the operator acting, next to a no-action baseline in the same run.

It starts its own control plane (etcd, kube-apiserver, controller-manager, scheduler, kwok) on ports of
its own, a kwok fleet, a real Prometheus scraping an exporter whose counters it controls, and the
operator as a subprocess. Each measured namespace holds a pair of Deployments (api, cache) that a soft
anti-affinity places on different devices, and a WorkloadGroup:

- ``agg-e-*``: mode Enforce — the operator should bring the pair together;
- ``agg-b-*``: mode DryRun — the operator records a plan and changes nothing (the no-action baseline,
  which also shows the operator did see the dependency).

First, the churn-forever case: ``agg-n-*`` pairs in Enforce groups under an operator started without
its steering webhook, with traffic that says move; the pods evicted or replaced over the window are
``evictions_without_steering`` (a mover that proves steering first evicts none and raises
SteeringUnavailable). That operator is stopped and those namespaces removed before the main part.

At t0 traffic api→cache appears in Prometheus for every pair at once; the API is polled every 0.2 s
until every Enforce pair is together (then held a few seconds to see it stays), or the window ends.
The Deployments' generation and pod template are compared before and after: any change is GitOps drift.

Progress goes to stderr; the result is written to ``--out`` and printed as one JSON line.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "hack"))
from clusterkit import free_port, load_hack, wait_for  # noqa: E402 - hack/ is a script dir

# Ports and state of our own, so a `make run` or an integration test run elsewhere is left alone.
# Below 32768: the kernel hands out ports above that to outgoing connections, which could hold ours.
for _k, _v in {"EDGEWEAVE_RUN_DIR": str(REPO / ".run" / "bench-agg"), "EDGEWEAVE_APISERVER_PORT": "25543",
               "EDGEWEAVE_ETCD_PORT": "25890", "EDGEWEAVE_ETCD_PEER_PORT": "25900",
               "EDGEWEAVE_KCM_PORT": "25357", "EDGEWEAVE_SCHED_PORT": "25359",
               "EDGEWEAVE_KWOK_PORT": "25380"}.items():
    os.environ.setdefault(_k, _v)

GROUP, VERSION = "edgeweave.io", "v1alpha1"
LABEL = "edgeweave.io/group"
BENCH_LABEL = "edgeweave.io/bench"
POLL_S = 0.2
ENFORCE_PREFIX, BASELINE_PREFIX, NO_STEERING_PREFIX = "agg-e-", "agg-b-", "agg-n-"


def log(msg: str) -> None:
    print(f"[bench-aggregation/cluster] {msg}", file=sys.stderr, flush=True)








# -- objects as a user would keep them in Git ----------------------------------------------------------
def deployment(name: str, grp: str, cpu: str = "250m", avoid: str | None = None) -> dict:
    labels = {"app": name, LABEL: grp, BENCH_LABEL: "aggregation"}
    spec: dict = {"containers": [{"name": "app", "image": "registry.invalid/app:1",
                                  "resources": {"requests": {"cpu": cpu, "memory": "64Mi"}}}]}
    if avoid:
        # Soft, as users write it: the scheduler starts the pair apart, which is the split to repair.
        spec["affinity"] = {"podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
            {"weight": 100, "podAffinityTerm": {"topologyKey": "kubernetes.io/hostname",
                                                 "labelSelector": {"matchLabels": {"app": avoid}}}}]}}
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "labels": labels},
            "spec": {"replicas": 1, "selector": {"matchLabels": {"app": name, LABEL: grp}},
                     "template": {"metadata": {"labels": labels}, "spec": spec}}}


def workload_group(name: str, mode: str) -> dict:
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "WorkloadGroup", "metadata": {"name": name},
            "spec": {"selector": {LABEL: name}, "mode": mode,
                     "telemetry": {"resyncSeconds": 5, "maxAgeSeconds": 60},
                     "limits": {"maxInFlight": 1},
                     "aggregation": {"gainThreshold": 0.2, "cooldownSeconds": 600}}}


# -- pure measurement helpers ------------------------------------------------------------------------
def pod_ready(pod: Any) -> bool:
    return any(c.type == "Ready" and c.status == "True" for c in (pod.status.conditions or []))


def pair_nodes(pods: list[Any]) -> dict[str, dict[str, str]]:
    """namespace -> {app: node} for namespaces whose api and cache each have exactly one live pod that is
    Running and Ready. A pod being replaced (terminating, or a second one) means the pair is not settled."""
    live: dict[str, dict[str, list[Any]]] = {}
    for p in pods:
        if p.metadata.deletion_timestamp:
            continue
        live.setdefault(p.metadata.namespace, {}).setdefault(p.metadata.labels.get("app", ""), []).append(p)
    out: dict[str, dict[str, str]] = {}
    for ns, apps in live.items():
        api, cache = apps.get("api", []), apps.get("cache", [])
        if len(api) == 1 and len(cache) == 1 and all(
                p.status.phase == "Running" and pod_ready(p) and p.spec.node_name for p in (api[0], cache[0])):
            out[ns] = {"api": api[0].spec.node_name, "cache": cache[0].spec.node_name}
    return out


def together(nodes: dict[str, str] | None) -> bool:
    return bool(nodes) and nodes["api"] == nodes["cache"]


def nearest_rank(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile: a value that was really measured (with 8 pairs, p95 is the max)."""
    if not values:
        return None
    s = sorted(values)
    return s[max(0, math.ceil(q * len(s)) - 1)]


ACCESS_RE = re.compile(r"^(\S+ \S+),\d+ INFO aiohttp\.access: .*\[([^\]]+)\] \"POST /steer-moved-pods")


def webhook_latencies(operator_log: str) -> list[float]:
    """Seconds from the API server's admission request reaching the operator to its answer, per request,
    from the aiohttp access log (request start in brackets) and the log line's own time (answer)."""
    out = []
    for line in operator_log.splitlines():
        m = ACCESS_RE.match(line)
        if m:
            done = datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S")
            began = datetime.strptime(m.group(2), "%d/%b/%Y:%H:%M:%S %z").replace(tzinfo=None)
            out.append((done - began).total_seconds())
    return out


def deployment_fingerprint(d: Any) -> tuple[int, str]:
    return d.metadata.generation, json.dumps(d.spec.to_dict(), sort_keys=True, default=str)


# -- the run -----------------------------------------------------------------------------------------
@dataclass
class Stack:
    devcluster: Any = None
    prom: Any = None
    operator: subprocess.Popen | None = None
    operator_log: Path | None = None
    api: Any = None
    bins: Path | None = None
    kubeconfig: Path | None = None
    notes: list[str] = field(default_factory=list)

    def kubectl(self, *args: str) -> str:
        return subprocess.run([str(self.bins / "kubectl"), f"--kubeconfig={self.kubeconfig}", *args],
                              check=True, capture_output=True, text=True, timeout=120).stdout


def start_operator(st: Stack, out_dir: Path, workers: int = 0, *, namespace: str = "agg-*",
                   steering: bool = True, log_name: str = "operator.log") -> None:
    """The operator as a subprocess; steering=False runs it without its steering webhook (what a
    `helm install` without the webhook, or a webhook that is down, gives the mover)."""
    probe = free_port()
    st.operator_log = out_dir / log_name
    logf = open(st.operator_log, "wb")  # noqa: SIM115 - owned by the child
    argv = [sys.executable, "-m", "edgeweave.cli", "operator", "--standalone", "--probe-host", "127.0.0.1",
            "--probe-port", str(probe), "--prometheus-url", st.prom.url, "--namespace", namespace]
    if steering:
        argv += ["--webhook-port", str(free_port())]
    env = {**os.environ, "KUBECONFIG": str(st.kubeconfig)}
    if workers:
        env["EDGEWEAVE_WORKERS"] = str(workers)
    st.operator = subprocess.Popen(argv, stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   env=env, cwd=REPO,
                                   start_new_session=True)

    def ready() -> bool:
        if st.operator.poll() is not None:
            raise RuntimeError(f"operator exited rc={st.operator.returncode}: "
                               f"{st.operator_log.read_text(errors='replace')[-3000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{probe}/readyz", timeout=1) as r:  # noqa: S310
                return r.status == 200
        except OSError:
            return False

    wait_for(ready, 60, "operator /readyz")


def stop_operator(st: Stack) -> None:
    p = st.operator
    if p is None or p.poll() is not None:
        return
    try:
        os.killpg(p.pid, signal.SIGTERM)
        p.wait(15)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        p.wait(5)
    except ProcessLookupError:
        pass


def make_split_pairs(st: Stack, namespaces: list[str]) -> dict[str, dict[str, str]]:
    """Create the pairs; a pair the scheduler put together gets its cache pod re-created once. Returns
    the namespaces whose pair is split (ns -> {app: node})."""
    from kubernetes import client

    core, apps = client.CoreV1Api(st.api), client.AppsV1Api(st.api)
    for ns in namespaces:
        core.create_namespace({"metadata": {"name": ns, "labels": {BENCH_LABEL: "aggregation"}}})
    for ns in namespaces:
        wait_for(lambda ns=ns: core.read_namespaced_service_account("default", ns), 60, f"default SA in {ns}")

    def all_pods() -> list[Any]:
        return core.list_pod_for_all_namespaces(label_selector=BENCH_LABEL).items

    # api first everywhere, so each cache pod sees its partner when it is scheduled.
    for ns in namespaces:
        apps.create_namespaced_deployment(ns, deployment("api", ns))
    wait_for(lambda: sum(1 for p in all_pods() if p.status.phase == "Running") >= len(namespaces), 90,
             "api pods Running")
    for ns in namespaces:
        apps.create_namespaced_deployment(ns, deployment("cache", ns, avoid="api"))
    placed = wait_for(lambda: (n := pair_nodes(all_pods())) and len(n) == len(namespaces) and n, 90,
                      "every pair Running and Ready")
    stuck = [ns for ns, n in placed.items() if together(n)]
    if stuck:
        log(f"scheduler put {len(stuck)} pair(s) together at first: {stuck}; re-creating their cache pods")
        for ns in stuck:
            for p in core.list_namespaced_pod(ns, label_selector="app=cache").items:
                core.delete_namespaced_pod(p.metadata.name, ns, grace_period_seconds=0)
        placed = wait_for(lambda: (n := pair_nodes(all_pods())) and len(n) == len(namespaces) and n, 90,
                          "re-created pairs Running and Ready")
    split = {ns: n for ns, n in placed.items() if not together(n)}
    st.notes.append(f"{len(split)} of {len(namespaces)} pairs started split "
                    f"({len(stuck)} needed their cache pod re-created)")
    return split


def without_steering(st: Stack, args: argparse.Namespace, out_dir: Path) -> dict[str, Any]:
    """The churn-forever case: Enforce groups whose pairs are split and whose traffic says move, with the
    operator running without its steering webhook. Counts the pods evicted (or otherwise replaced) over
    the window; a mover that proves steering first evicts none and raises SteeringUnavailable instead."""
    from kubernetes import client

    core, custom = client.CoreV1Api(st.api), client.CustomObjectsApi(st.api)
    namespaces = [f"{NO_STEERING_PREFIX}{i:02d}" for i in range(args.no_steering_pairs)]
    split = make_split_pairs(st, namespaces)
    start_operator(st, out_dir, args.operator_workers, namespace=f"{NO_STEERING_PREFIX}*", steering=False,
                   log_name="operator-no-steering.log")
    operator_log = st.operator_log
    try:
        for ns in namespaces:
            custom.create_namespaced_custom_object(GROUP, VERSION, ns, "workloadgroups", workload_group(ns, "Enforce"))

        def pods() -> dict[str, Any]:
            return {p.metadata.uid: p for p in core.list_pod_for_all_namespaces(label_selector=BENCH_LABEL).items
                    if p.metadata.namespace in namespaces}

        def wg(ns: str) -> dict:
            return custom.get_namespaced_custom_object(GROUP, VERSION, ns, "workloadgroups", ns).get("status") or {}

        wait_for(lambda: all(wg(ns).get("members") == 2 for ns in namespaces), 60, "no-steering groups' first round")
        uids = set(pods())
        t0 = time.monotonic()
        for ns in namespaces:
            st.prom.series.set_rate("edgeweave_flow_bytes_total",
                                    {"namespace": ns, "source_workload": "api", "destination_workload": "cache"},
                                    args.rate)
        replaced: set[str] = set()
        flagged_at: dict[str, float] = {}
        while time.monotonic() - t0 < args.no_steering_window:
            replaced |= uids - set(pods())
            for ns in namespaces:
                cond = next((c for c in wg(ns).get("conditions") or [] if c.get("type") == "SteeringUnavailable"), {})
                if cond.get("status") == "True":
                    flagged_at.setdefault(ns, round(time.monotonic() - t0, 1))
            time.sleep(0.5)
        statuses = {ns: wg(ns) for ns in namespaces}
        planned = sum(1 for s in statuses.values() if (s.get("plan") or {}).get("moves"))
        moves_done = sum(s.get("movesTotal", 0) for s in statuses.values())
    finally:
        stop_operator(st)
    (out_dir / "workloadgroups-no-steering.json").write_text(json.dumps(statuses, indent=2, default=str))
    for ns in namespaces:
        st.prom.series.set_rate("edgeweave_flow_bytes_total",
                                {"namespace": ns, "source_workload": "api", "destination_workload": "cache"}, 0.0)
        core.delete_namespace(ns)
    wait_for(lambda: not pods(), 120, "no-steering namespaces gone")
    out = {"groups": len(namespaces), "pairs_split": len(split), "window_s": args.no_steering_window,
           "pods_replaced": len(replaced), "groups_with_a_plan": planned, "moves_done": moves_done,
           "groups_steering_unavailable": len(flagged_at),
           "seconds_to_steering_unavailable_max": max(flagged_at.values()) if flagged_at else None,
           "operator_log": str(operator_log)}
    log(f"without steering: {out}")
    return out


def run(args: argparse.Namespace, out_dir: Path) -> dict[str, Any]:
    from kubernetes import client, config

    from edgeweave.sim.fleet import FleetShape, create_fleet

    st = Stack()
    result: dict[str, Any] | None = None
    t_start = time.monotonic()
    st.devcluster = load_hack("devcluster")
    prom_cls = load_hack("promstack").PromStack
    try:
        st.devcluster.stop()
        st.kubeconfig = st.devcluster.start()
        st.bins = st.devcluster.bin_dir()
        st.api = config.new_client_from_config(config_file=str(st.kubeconfig))
        core, apps, custom = client.CoreV1Api(st.api), client.AppsV1Api(st.api), client.CustomObjectsApi(st.api)
        st.kubectl("apply", "-f", str(REPO / "crds"))
        st.kubectl("wait", "--for", "condition=established", "crd", "--all", "--timeout=60s")
        shape = FleetShape(sites=args.sites, nodes_per_site=args.nodes_per_site, cpu="4", gpu_every=0,
                           fleet="bench")
        names = create_fleet(st.api, shape)
        wait_for(lambda: sum(1 for n in core.list_node().items if any(
            c.type == "Ready" and c.status == "True" for c in n.status.conditions or [])) >= len(names), 90,
            "kwok nodes Ready")
        log(f"cluster up with {len(names)} edge devices in {time.monotonic() - t_start:.1f}s")

        st.prom = prom_cls(prom_port=free_port(), exporter_port=free_port())
        st.prom.start()
        no_steering = without_steering(st, args, out_dir) if args.no_steering_pairs else None
        start_operator(st, out_dir, args.operator_workers)
        log(f"prometheus {st.prom.url} and operator ready")

        enforce = [f"{ENFORCE_PREFIX}{i:02d}" for i in range(args.pairs)]
        baseline = [f"{BASELINE_PREFIX}{i:02d}" for i in range(args.pairs)]
        split = make_split_pairs(st, enforce + baseline)
        measured_e = [ns for ns in enforce if ns in split]
        measured_b = [ns for ns in baseline if ns in split]
        log(f"split pairs: {len(measured_e)} enforce, {len(measured_b)} baseline (DryRun)")

        for ns in enforce + baseline:
            mode = "Enforce" if ns.startswith(ENFORCE_PREFIX) else "DryRun"
            custom.create_namespaced_custom_object(GROUP, VERSION, ns, "workloadgroups", workload_group(ns, mode))

        def wg(ns: str) -> dict:
            return custom.get_namespaced_custom_object(GROUP, VERSION, ns, "workloadgroups", ns)

        # Start the clock from an operator already watching every group (first round done, no traffic yet).
        wait_for(lambda: all(((wg(ns).get("status") or {}).get("members") == 2) for ns in measured_e + measured_b),
                 60, "every WorkloadGroup's first round (members=2)")
        before = {(d.metadata.namespace, d.metadata.name): deployment_fingerprint(d)
                  for d in apps.list_deployment_for_all_namespaces(label_selector=BENCH_LABEL).items}
        pre_moves = sum((wg(ns).get("status") or {}).get("movesTotal", 0) for ns in measured_e)

        # t0: the dependency appears in Prometheus for every pair at once.
        t0 = time.monotonic()
        for ns in measured_e + measured_b:
            st.prom.series.set_rate("edgeweave_flow_bytes_total",
                                    {"namespace": ns, "source_workload": "api", "destination_workload": "cache"},
                                    args.rate)
        colocated_at: dict[str, float] = {}
        planned_at: dict[str, float] = {}
        flaps: dict[str, int] = {}
        hold_until: float | None = None
        polls = 0
        while True:
            now = time.monotonic() - t0
            nodes = pair_nodes(core.list_pod_for_all_namespaces(label_selector=BENCH_LABEL).items)
            polls += 1
            for ns in measured_e:
                if together(nodes.get(ns)):
                    colocated_at.setdefault(ns, now)
                elif ns in colocated_at and nodes.get(ns):
                    flaps[ns] = flaps.get(ns, 0) + 1  # settled apart again after being together
            groups = custom.list_cluster_custom_object(GROUP, VERSION, "workloadgroups")["items"]
            for g in groups:
                ns = g["metadata"]["namespace"]
                moves = ((g.get("status") or {}).get("plan") or {}).get("moves") or []
                if ns in split and moves:
                    planned_at.setdefault(ns, now)
            if hold_until is None and len(colocated_at) == len(measured_e):
                # The baseline gets the same window, and never less than --min-window to come together.
                hold_until = max(now + args.hold, args.min_window)
            if (hold_until is not None and now >= hold_until) or now >= args.window:
                break
            time.sleep(max(0.0, POLL_S - ((time.monotonic() - t0) - now)))
        window = time.monotonic() - t0
        final = pair_nodes(core.list_pod_for_all_namespaces(label_selector=BENCH_LABEL).items)

        after = {(d.metadata.namespace, d.metadata.name): deployment_fingerprint(d)
                 for d in apps.list_deployment_for_all_namespaces(label_selector=BENCH_LABEL).items}
        drift = sum(1 for k, v in before.items() if after.get(k) != v)
        statuses = {ns: (wg(ns).get("status") or {}) for ns in measured_e + measured_b}
        # Kept for whoever reads a surprising figure: every group's final status (plans, moves, conditions).
        (out_dir / "workloadgroups.json").write_text(json.dumps(statuses, indent=2, default=str))
        (out_dir / "events.txt").write_text("\n".join(
            f"{e.metadata.namespace} {e.last_timestamp or e.event_time} {e.reason} "
            f"{e.involved_object.kind}/{e.involved_object.name}: {e.message}"
            for e in sorted(core.list_event_for_all_namespaces().items,
                            key=lambda e: (e.metadata.namespace, str(e.last_timestamp or e.event_time)))
            if e.metadata.namespace.startswith("agg-")) + "\n")
        moves_e = sum(s.get("movesTotal", 0) for ns, s in statuses.items() if ns in measured_e) - pre_moves
        dry_plans = sum(1 for ns in measured_b if any(
            m.get("phase") == "Planned" for m in ((statuses[ns].get("plan") or {}).get("moves") or [])))
        failed = {ns: [m for m in ((s.get("plan") or {}).get("moves") or []) if m.get("phase") == "Failed"]
                  for ns, s in statuses.items()}
        failed = {ns: ms for ns, ms in failed.items() if ms}
        phases: dict[str, int] = {}
        for ns in measured_e:
            for m in (statuses[ns].get("plan") or {}).get("moves") or []:
                phases[m.get("phase", "?")] = phases.get(m.get("phase", "?"), 0) + 1

        times = [colocated_at[ns] for ns in measured_e if ns in colocated_at]
        plan_e = [planned_at[ns] for ns in measured_e if ns in planned_at]
        plan_b = [planned_at[ns] for ns in measured_b if ns in planned_at]

        def r(x: float | None) -> float | None:
            return None if x is None else round(x, 2)

        result = {
            **({"evictions_without_steering": no_steering["pods_replaced"], "no_steering": no_steering}
               if no_steering else {}),
            "dependency_to_colocated_p50_s": r(nearest_rank(times, 0.5)),
            "dependency_to_colocated_p95_s": r(nearest_rank(times, 0.95)),
            "dependency_to_colocated_max_s": r(max(times) if times else None),
            "pairs_measured": len(measured_e),
            "pairs_together": len(colocated_at),
            "pairs_together_at_end": sum(1 for ns in measured_e if together(final.get(ns))),
            "baseline": "same pairs and traffic, WorkloadGroup mode DryRun (no operator action)",
            "baseline_pairs_measured": len(measured_b),
            "baseline_pairs_together": sum(1 for ns in measured_b if together(final.get(ns))),
            "baseline_window_s": round(window, 1),
            "deployment_drift": drift,
            "cluster": {
                "devices": len(names), "sites": args.sites, "poll_seconds": POLL_S,
                "resync_seconds": 5, "prometheus_scrape_seconds": 1, "traffic_bytes_per_second": args.rate,
                "dependency_to_plan_p50_s": r(nearest_rank(plan_e, 0.5)),
                "dependency_to_plan_max_s": r(max(plan_e) if plan_e else None),
                "baseline_dependency_to_dry_run_plan_p50_s": r(nearest_rank(plan_b, 0.5)),
                "baseline_dry_run_plans_recorded": dry_plans,
                "operator_workers": args.operator_workers or "default",
                "move_phases_at_end": phases,
                "moves_done": moves_e, "failed_moves": sum(len(v) for v in failed.values()),
                "pairs_split_again_after_together": len(flaps),
                "colocated_seconds": {ns: round(colocated_at[ns], 2) for ns in sorted(colocated_at)},
                "polls": polls, "notes": st.notes,
                "wall_seconds": round(time.monotonic() - t_start, 1),
            },
        }
        if failed:
            log(f"failed moves: {json.dumps(failed)[:2000]}")
        return result
    finally:
        try:
            stop_operator(st)
            if st.operator_log is not None and result is not None:
                # After the operator stopped: a hung admission request is only logged when it is answered.
                lat = webhook_latencies(st.operator_log.read_text(errors="replace"))
                result["cluster"]["steering_webhook_requests"] = len(lat)
                result["cluster"]["steering_webhook_max_latency_s"] = max(lat) if lat else None
        finally:
            try:
                if st.prom is not None:
                    st.prom.close()
            finally:
                if st.devcluster is not None:
                    st.devcluster.stop()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(REPO / "bench" / "out" / "aggregation" / "cluster.json"))
    ap.add_argument("--pairs", type=int, default=8, help="Enforce pairs (and as many DryRun baseline pairs)")
    ap.add_argument("--sites", type=int, default=10)
    ap.add_argument("--nodes-per-site", type=int, default=2)
    ap.add_argument("--rate", type=float, default=5e6, help="bytes/s api->cache published at t0")
    ap.add_argument("--window", type=float, default=90.0, help="give up on pairs not together after this")
    ap.add_argument("--min-window", type=float, default=30.0, help="observe at least this long after t0")
    ap.add_argument("--operator-workers", type=int, default=0,
                    help="EDGEWEAVE_WORKERS for the operator (0 = the operator's own default)")
    ap.add_argument("--hold", type=float, default=8.0, help="after the last pair is together, watch this long")
    ap.add_argument("--no-steering-pairs", type=int, default=4,
                    help="pairs run first under an operator without its steering webhook (0: skip)")
    ap.add_argument("--no-steering-window", type=float, default=45.0,
                    help="seconds to count evictions without steering after the traffic appears")
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    # make (or a user) stopping us with SIGTERM still runs the finally blocks that stop the cluster.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    result = run(args, out.parent)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, separators=(",", ":")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
