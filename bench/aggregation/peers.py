"""Aggregation benchmark, the real peers: the same apps, fleet, start placement and churn on one real
control plane, at the same time, each arm on its own identical pool of kwok devices:

(a)  stock Kubernetes: preferred podAffinity from each service to the services it talks to, placed by the
     real kube-scheduler (what a user writes today to keep partners together);
(b1) (a) plus the real descheduler (v0.36.0, hack/build-descheduler.sh) in loop mode with the strategies its
     users enable against piles and imbalance: RemoveDuplicates, RemovePodsViolatingInterPodAntiAffinity,
     LowNodeUtilization;
(b2) (a) plus the real descheduler's HighNodeUtilization, with replacements placed by a second
     kube-scheduler whose NodeResourcesFit scores MostAllocated (the packing setup its docs pair it with:
     packing keeps partners together);
(c)  edgeweave (Enforce WorkloadGroups on the same ReplicaSets; the podAffinity stays), as configured
     by default: never two replicas of a workload on one device (availability kept);
(c0) edgeweave with `aggregation.spread.maxReplicasPerDevice: 0`: replicas may share a device, the
     trade (b2) makes (an extra row: what a user who prefers traffic over availability gets).

Two scenarios (--scenarios), each run once per run index:

- drift (the headline): web -> api x2 -> cache x2 as before, plus search and auth, two more services of
  the namespace that nothing calls yet. At the churn a new release of web starts calling both (a
  search box, a login check). The manifests' podAffinity names only the calls known when they were
  written, as a user's would: nobody writes affinity for a dependency that does not exist yet.
- static: web -> api x2 -> cache x2, every call declared as podAffinity up front (the case podAffinity
  handles best; the previous headline, kept as a row).

One run: arm (a)'s ReplicaSets are created and the real kube-scheduler places them; that placement is the
run's start placement, copied onto the other pools (each pod created on its start device, then adopted
by its ReplicaSet, so the start is exactly the same and the owner is what a Deployment would have made).
Then the same churn in every pool at once (the same third of the pods deleted and re-created by their
ReplicaSets, two devices join, the same device leaves), and each arm runs until its placement has not
changed for --steady seconds ("settled"), or until --window seconds after the churn ("not settled": the
figures are then those at the deadline). Each pod's nodeSelector keeps it in its arm's pool, the
descheduler instances only process their pool's nodes, and edgeweave only acts on its arm's namespaces.

Cross-device traffic is computed from where the pods run and the rates each app has after the churn
(the same rates edgeweave reads from Prometheus; drift's new calls appear there at the churn), with
traffic spread evenly over pod pairs as a Service spreads it.

Repeated --runs times (each run its own scheduler draw for the start placement); the result holds each
run's rows and, per scenario and arm, the median and a distribution-free 95% interval of the median, and
the headline: ours / the best real peer of the same run that piled no more replicas than ours (drift),
with the any-availability and static figures beside it under their own keys.

Progress goes to stderr; the result is written to --out and printed as one JSON line.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import cluster as ck  # noqa: E402 - bench/ is a script dir; sets our ports (setdefault) first
from stats import median_interval  # noqa: E402 - bench/ is a script dir

from edgeweave.placement.graph import DependencyGraph  # noqa: E402
from edgeweave.placement.model import Edge, WorkloadState  # noqa: E402

REPO = ck.REPO
GROUP, VERSION, LABEL = ck.GROUP, ck.VERSION, ck.LABEL
HOST = "kubernetes.io/hostname"
PEER_LABEL = "edgeweave.io/peers"
POOL_LABEL = "edgeweave.io/bench-pool"
PACKING_SCHEDULER = "edgeweave-bench-mostallocated"
RATE = 2e6  # bytes/s per call edge


@dataclass(frozen=True)
class Scenario:
    """An app shape: (service, replicas, calls known when the manifests were written), and the calls
    that begin only at the churn (t0). The user's podAffinity names the first kind only: nobody can
    write affinity for a dependency that does not exist yet."""

    name: str
    app: tuple[tuple[str, int, tuple[str, ...]], ...]
    later_calls: tuple[tuple[str, str], ...] = ()

    def calls(self, *, later: bool = True) -> list[tuple[str, str]]:
        out = [(s, c) for s, _, calls in self.app for c in calls]
        return out + list(self.later_calls) if later else out

    def partners_of(self, svc: str) -> tuple[str, ...]:
        """Services the manifest of svc names in its podAffinity: the calls known at deploy time."""
        known = self.calls(later=False)
        return tuple([c for s, c in known if s == svc] + [s for s, c in known if c == svc])

    def edges(self) -> list[Edge]:
        """The traffic after the churn, which every arm is scored on."""
        return [Edge(source=s, target=c, bytes_per_second=RATE) for s, c in self.calls()]

    def pods(self) -> int:
        return sum(r for _, r, _ in self.app)


SCENARIOS = {
    # every dependency declared up front as podAffinity: the case podAffinity handles best
    "static": Scenario("static", (("api", 2, ("cache",)), ("cache", 2, ()), ("web", 1, ("api",)))),
    # the same app with two more services of the namespace; at the churn a new release of web starts
    # calling them (a search box, a login check): traffic the manifests' podAffinity never named
    "drift": Scenario("drift", (("api", 2, ("cache",)), ("cache", 2, ()), ("web", 1, ("api",)),
                                ("search", 1, ()), ("auth", 1, ())),
                      later_calls=(("web", "search"), ("web", "auth"))),
}
ARMS = ("a", "b1", "b2", "c", "c0")
ARM_NAMES = {"a": "stock_kube_scheduler_podaffinity", "b1": "descheduler_v0_36_0_spread_strategies",
             "b2": "descheduler_v0_36_0_highnodeutilization_mostallocated", "c": "edgeweave",
             "c0": "edgeweave_replicas_may_share_a_device"}
OURS = ("c", "c0")
PEERS = ("a", "b1", "b2")


def log(msg: str) -> None:
    print(f"[bench-aggregation/peers] {msg}", file=sys.stderr, flush=True)


# -- objects ----------------------------------------------------------------------------------------
def pod_template(svc: str, app: str, arm: str, partners: tuple[str, ...]) -> dict:
    labels = {"app": svc, LABEL: app, PEER_LABEL: arm}
    spec: dict = {"containers": [{"name": "c", "image": "registry.invalid/app:1",
                                  "resources": {"requests": {"cpu": "250m", "memory": "64Mi"}}}],
                  "nodeSelector": {POOL_LABEL: arm}, "terminationGracePeriodSeconds": 0}
    if arm == "b2":
        spec["schedulerName"] = PACKING_SCHEDULER
    if partners:
        # what a user writes today to keep a service near what it talks to
        spec["affinity"] = {"podAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
            {"weight": 100, "podAffinityTerm": {"topologyKey": HOST, "labelSelector": {"matchLabels": {"app": p}}}}
            for p in partners]}}
    return {"metadata": {"labels": labels}, "spec": spec}


def replica_set(sc: Scenario, svc: str, replicas: int, app: str, arm: str) -> dict:
    return {"apiVersion": "apps/v1", "kind": "ReplicaSet",
            "metadata": {"name": svc, "labels": {"app": svc, LABEL: app, PEER_LABEL: arm}},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": svc, LABEL: app}},
                     "template": pod_template(svc, app, arm, sc.partners_of(svc))}}


# -- pure measurement helpers -----------------------------------------------------------------------
def score(sc: Scenario, placement: dict[str, str]) -> dict[str, float]:
    """Cross-device traffic (after the churn's new calls) and replicas sharing a device, for
    {'ns/pod|app': node}."""
    ws = [WorkloadState(key=k.split("|")[0], workload=k.split("|")[1], group=k.split("/")[0], node=n)
          for k, n in placement.items()]
    g = DependencyGraph(ws, [e.model_copy(update={"group": ns}) for ns in {w.group for w in ws} for e in sc.edges()])
    node_of = {k.split("|")[0]: n for k, n in placement.items()}
    colocated = 0
    for _, members in g.members.items():
        nodes = [node_of[m] for m in members]
        colocated += len(members) > 1 and len(set(nodes)) < len(nodes)
    return {"cross_device_traffic": g.cross_device_traffic(), "replicas_colocated": colocated}


def summarise(runs: list[dict[str, dict]]) -> dict[str, Any]:
    """Per arm: median and 95% interval of each figure over runs; the headline ratios."""
    out: dict[str, Any] = {}
    for arm in ARMS:
        rows = [r[arm] for r in runs if arm in r]
        if not rows:
            continue
        s: dict[str, Any] = {"runs": len(rows)}
        for key in ("cross_device_traffic", "moves", "replicas_colocated", "seconds_to_steady_state"):
            vals = [row[key] for row in rows if row.get(key) is not None]
            med, lo, hi = median_interval(vals)
            s[key] = {"median": med, "ci95": [lo, hi]}
        s["settled_runs"] = sum(1 for row in rows if row.get("seconds_to_steady_state") is not None)
        out[ARM_NAMES[arm]] = s
    head: dict[str, Any] = {}
    # "" the headline: ours as configured vs the best peer, whatever availability it gave up;
    # "_at_equal_availability": vs the best peer that left no more replicas sharing a device than ours;
    # "_replicas_may_share": ours with the spread policy off (the trade the packing peer makes) vs the best
    for ours, suffix, same_ha in (("c", "", False), ("c", "_at_equal_availability", True),
                                  ("c0", "_replicas_may_share", False)):
        ratios, move_ratios, best_arms = [], [], []
        for r in runs:
            peers = [a for a in PEERS if a in r and (not same_ha or ours in r and r[a]["replicas_colocated"]
                                                      <= r[ours]["replicas_colocated"])]
            if ours not in r or not peers:
                continue
            best = min(peers, key=lambda a: (r[a]["cross_device_traffic"], r[a]["moves"], a))
            best_arms.append(best)
            bt, mine = r[best]["cross_device_traffic"], r[ours]["cross_device_traffic"]
            # a best peer at zero traffic: equal if ours is zero too, else unboundedly worse
            ratios.append(mine / bt if bt > 0 else (1.0 if mine == 0 else math.inf))
            bm = r[best]["moves"]
            move_ratios.append(r[ours]["moves"] / bm if bm > 0 else None)
        if not ratios:
            continue
        med, lo, hi = median_interval([x if math.isfinite(x) else 1e18 for x in ratios])

        def fin(x: float | None) -> float | None:
            return None if x is None or x >= 1e17 else round(x, 4)

        mmed, mlo, mhi = median_interval([m for m in move_ratios if m is not None])
        head.update({
            f"traffic_ratio_vs_best_real_peer{suffix}": fin(med),
            f"traffic_ratio_vs_best_real_peer{suffix}_ci95": [fin(lo), fin(hi)],
            f"traffic_ratio_vs_best_real_peer{suffix}_per_run": [fin(x if math.isfinite(x) else 1e18) for x in ratios],
            f"traffic_ratio_vs_best_real_peer{suffix}_unbounded_runs": sum(1 for x in ratios if not math.isfinite(x)),
            f"moves_ratio_vs_best_real_peer{suffix}": fin(mmed),
            f"moves_ratio_vs_best_real_peer{suffix}_ci95": [fin(mlo), fin(mhi)],
            f"best_real_peer_per_run{suffix}": [ARM_NAMES[a] for a in best_arms]})
    return {"arms": out, **head}


def descheduler_policy(path: Path, arm: str) -> None:
    if arm == "b1":
        plugins = [{"name": "DefaultEvictor", "args": {"evictLocalStoragePods": True}},
                   {"name": "RemoveDuplicates"},
                   {"name": "RemovePodsViolatingInterPodAntiAffinity"},
                   {"name": "LowNodeUtilization", "args": {"thresholds": {"cpu": 20, "pods": 20},
                                                           "targetThresholds": {"cpu": 50, "pods": 50}}}]
        enabled = {"balance": {"enabled": ["RemoveDuplicates", "LowNodeUtilization"]},
                   "deschedule": {"enabled": ["RemovePodsViolatingInterPodAntiAffinity"]}}
    else:
        # a device below 20% of its CPU requested (0-3 of these pods on 4 CPUs) is drained onto busier
        # ones, which the MostAllocated scheduler picks: the fleet packs, partners with it
        plugins = [{"name": "DefaultEvictor", "args": {"evictLocalStoragePods": True}},
                   {"name": "HighNodeUtilization", "args": {"thresholds": {"cpu": 20}}}]
        enabled = {"balance": {"enabled": ["HighNodeUtilization"]}}
    path.write_text(json.dumps({
        "apiVersion": "descheduler/v1alpha2", "kind": "DeschedulerPolicy",
        "nodeSelector": f"{POOL_LABEL}={arm}",
        "profiles": [{"name": f"peers-{arm}", "pluginConfig": plugins, "plugins": enabled}]}))


def scheduler_config(path: Path, kubeconfig: Path) -> None:
    path.write_text(json.dumps({
        "apiVersion": "kubescheduler.config.k8s.io/v1", "kind": "KubeSchedulerConfiguration",
        "clientConnection": {"kubeconfig": str(kubeconfig)}, "leaderElection": {"leaderElect": False},
        "profiles": [{"schedulerName": PACKING_SCHEDULER, "pluginConfig": [{
            "name": "NodeResourcesFit", "args": {"scoringStrategy": {
                "type": "MostAllocated", "resources": [{"name": "cpu", "weight": 1},
                                                       {"name": "memory", "weight": 1}]}}}]}]}))


# -- the run ----------------------------------------------------------------------------------------
class Pools:
    """Each arm's devices: pool k uses sites [k*sites, (k+1)*sites), so names never collide."""

    def __init__(self, sites: int, nodes_per_site: int) -> None:
        self.sites, self.nodes_per_site = sites, nodes_per_site

    def shape(self, arm: str) -> Any:
        from edgeweave.sim.fleet import FleetShape
        return FleetShape(sites=self.sites * len(ARMS), nodes_per_site=self.nodes_per_site, cpu="4", gpu_every=0,
                          fleet="bench-peers", extra_labels={POOL_LABEL: arm})

    def node(self, arm: str, site: int, idx: int) -> dict:
        from edgeweave.sim.fleet import node_manifest
        return node_manifest(self.shape(arm), ARMS.index(arm) * self.sites + site, idx)

    def base(self, arm: str) -> list[dict]:
        return [self.node(arm, s, i) for s in range(self.sites) for i in range(self.nodes_per_site)]

    def map_node(self, name: str, src: str, dst: str) -> str:
        """The device of pool dst in the same position as device `name` of pool src."""
        for s in range(self.sites):
            for i in range(self.nodes_per_site + 2):
                if self.node(src, s, i)["metadata"]["name"] == name:
                    return self.node(dst, s, i)["metadata"]["name"]
        raise KeyError(name)


def snapshot(sc: Scenario, core: Any, namespaces: list[str], nodes: set[str]) -> dict[str, str] | None:
    """pod key -> node for every live pod of the arm; None while any is Pending or terminating."""
    out = {}
    for p in core.list_pod_for_all_namespaces(label_selector=PEER_LABEL).items:
        if p.metadata.namespace not in namespaces:
            continue
        if p.metadata.deletion_timestamp or p.status.phase != "Running" or p.spec.node_name not in nodes:
            return None  # in flight, or stranded on a device that left (until pod GC removes it)
        out[f"{p.metadata.namespace}/{p.metadata.name}|{p.metadata.labels['app']}"] = p.spec.node_name
    want = sc.pods() * len(namespaces)
    return out if len(out) == want else None


def run_once(st: Any, args: argparse.Namespace, sc: Scenario, run: int, pools: Pools, out_dir: Path,
             desched_bin: str, arms: tuple[str, ...]) -> dict[str, dict]:
    from kubernetes import client

    core, apps, custom = client.CoreV1Api(st.api), client.AppsV1Api(st.api), client.CustomObjectsApi(st.api)
    ns_of = {arm: [f"agg-p{arm}-{sc.name[0]}{run:02d}-{i:02d}" for i in range(args.apps)] for arm in arms}
    tag = f"run {run} ({sc.name})"
    for arm in arms:
        for ns in ns_of[arm]:
            core.create_namespace({"metadata": {"name": ns, "labels": {PEER_LABEL: arm}}})
    ck.wait_for(lambda: all(core.read_namespaced_service_account("default", ns)
                            for arm in arms for ns in ns_of[arm]), 60, "SAs")
    node_names = {arm: {n["metadata"]["name"] for n in pools.base(arm)} for arm in arms}

    # (a) is placed by the real kube-scheduler: that placement is this run's start, for every arm
    for ns in ns_of["a"]:
        for svc, replicas, _ in sc.app:
            apps.create_namespaced_replica_set(ns, replica_set(sc, svc, replicas, ns, "a"))
    start = ck.wait_for(lambda: snapshot(sc, core, ns_of["a"], node_names["a"]), 120, f"{tag}: (a) placed")
    by_slot: dict[tuple[int, str], list[str]] = {}  # (app index, service) -> start devices (pool a)
    for key, node in sorted(start.items()):
        ns, app = key.split("/")[0], key.split("|")[1]
        by_slot.setdefault((ns_of["a"].index(ns), app), []).append(node)
    for arm in arms:
        if arm == "a":
            continue
        for i, ns in enumerate(ns_of[arm]):
            if arm in OURS:
                set_rates(st, ns, sc.calls(later=False), RATE)
            for svc, _n, _ in sc.app:
                tmpl = pod_template(svc, ns, arm, sc.partners_of(svc))
                for r, node in enumerate(by_slot[(i, svc)]):
                    body = {"apiVersion": "v1", "kind": "Pod",
                            "metadata": {"name": f"{svc}-start-{r}", "labels": tmpl["metadata"]["labels"]},
                            "spec": {**tmpl["spec"], "nodeName": pools.map_node(node, "a", arm)}}
                    core.create_namespaced_pod(ns, body)
    # the ReplicaSets come once their pods are seen Running, so they adopt them (same selector, no
    # controller yet) rather than racing to create their own
    for arm in arms:
        if arm != "a":
            ck.wait_for(lambda arm=arm: snapshot(sc, core, ns_of[arm], node_names[arm]), 120, f"{tag}: {arm} pods")
            for ns in ns_of[arm]:
                for svc, replicas, _ in sc.app:
                    apps.create_namespaced_replica_set(ns, replica_set(sc, svc, replicas, ns, arm))
    starts = {arm: ck.wait_for(lambda arm=arm: snapshot(sc, core, ns_of[arm], node_names[arm]), 120,
                               f"{tag}: {arm} at the start placement") for arm in arms}
    for arm in arms:
        if arm != "a":
            got = sorted(n for n in starts[arm].values())
            want = sorted(pools.map_node(n, "a", arm) for n in start.values())
            if got != want:
                raise StartMismatch(f"{tag}: arm {arm} did not start on the shared placement")
    start_score = score(sc, start)

    rng = random.Random(args.seed * 1000 + run)
    slots = sorted(by_slot)
    victims = rng.sample([(i, svc, r) for i, svc in slots for r in range(len(by_slot[(i, svc)]))],
                         sum(len(v) for v in by_slot.values()) // 3)
    leave_site, leave_idx = rng.randrange(pools.sites), rng.randrange(pools.nodes_per_site)
    # the same pods in every arm: by app, service and position at the start (listed before anything moves)
    pods_of: dict[str, dict[tuple[int, str], list[Any]]] = {}
    for arm in arms:
        pods_of[arm] = {}
        for p in core.list_pod_for_all_namespaces(label_selector=f"{PEER_LABEL}={arm}").items:
            if p.metadata.namespace in ns_of[arm]:
                pods_of[arm].setdefault((ns_of[arm].index(p.metadata.namespace), p.metadata.labels["app"]),
                                        []).append(p)
    # t0: deschedulers start, and the same churn hits every pool at once
    procs = CHILDREN  # stopped in main's finally too, should this run fail half-way
    for arm in arms:
        if arm in ("b1", "b2"):
            policy = out_dir / f"descheduler-{arm}.json"
            descheduler_policy(policy, arm)
            dlog = open(out_dir / f"descheduler-{arm}-r{run:02d}.log", "wb")  # noqa: SIM115 - owned by the child
            procs[arm] = subprocess.Popen([f"{desched_bin}/descheduler", f"--kubeconfig={st.kubeconfig}",
                                           f"--policy-config-file={policy}", "--descheduling-interval=10s",
                                           "--leader-elect=false", "--secure-port=0", "-v=2"],
                                          stdout=dlog, stderr=subprocess.STDOUT, start_new_session=True)
    # edgeweave starts acting at t0 too: its groups are created now, as the deschedulers start
    for arm in arms:
        if arm in OURS:
            for ns in ns_of[arm]:
                custom.create_namespaced_custom_object(GROUP, VERSION, ns, "workloadgroups", {
                    "apiVersion": f"{GROUP}/{VERSION}", "kind": "WorkloadGroup", "metadata": {"name": ns},
                    "spec": {"selector": {LABEL: ns}, "mode": "Enforce",
                             "telemetry": {"resyncSeconds": 5, "maxAgeSeconds": 60},
                             "aggregation": {"cooldownSeconds": 30, **(
                                 {"spread": {"maxReplicasPerDevice": 0}} if arm == "c0" else {})}}})
    # the calls that begin now (drift): the operator reads them in Prometheus as it would in production
    for arm in arms:
        if arm in OURS:
            for ns in ns_of[arm]:
                set_rates(st, ns, sc.later_calls, RATE)
    t0 = time.monotonic()
    live_nodes = {}
    for arm in arms:
        for i, svc, r in victims:
            group = sorted(pods_of[arm][(i, svc)], key=lambda p: ((p.spec.node_name or ""), p.metadata.name))
            p = group[r]
            try:
                core.delete_namespaced_pod(p.metadata.name, p.metadata.namespace, grace_period_seconds=0)
            except client.ApiException as e:
                if e.status != 404:  # already evicted by the descheduler
                    raise
        for j in range(2):
            core.create_node(pools.node(arm, 0, pools.nodes_per_site + j))
        leaving = pools.node(arm, leave_site, leave_idx)["metadata"]["name"]
        core.delete_node(leaving)
        live_nodes[arm] = (node_names[arm] - {leaving}) | {
            pools.node(arm, 0, pools.nodes_per_site + j)["metadata"]["name"] for j in range(2)}
    # each arm until settled (placement unchanged for --steady s) or the window ends
    last: dict[str, dict | None] = dict.fromkeys(arms)
    since = dict.fromkeys(arms, t0)
    steady_at: dict[str, float | None] = dict.fromkeys(arms)
    while time.monotonic() - t0 < args.window and any(steady_at[a] is None for a in arms):
        for arm in arms:
            if steady_at[arm] is not None:
                continue
            snap = snapshot(sc, core, ns_of[arm], live_nodes[arm])
            now = time.monotonic()
            if snap is None:
                since[arm] = now
            elif snap != last[arm]:
                last[arm], since[arm] = snap, now
            elif now - since[arm] >= args.steady:
                steady_at[arm] = since[arm] - t0
        time.sleep(0.5)
    # the window is over: the deschedulers stop, and an arm without a complete placement since the
    # churn (a descheduler evicting faster than pods come back) is read once its pods are all back
    for arm in list(procs):
        procs[arm].send_signal(signal.SIGTERM)
    for arm in arms:
        if last[arm] is None:
            last[arm] = ck.wait_for(lambda arm=arm: snapshot(sc, core, ns_of[arm], live_nodes[arm]), 90,
                                    f"{tag}: {arm} complete after the window")
    rows: dict[str, dict] = {}
    for arm in arms:
        final = last[arm] or {}
        moves = 0
        if arm in procs:
            stop_child(procs.pop(arm))
            text = (out_dir / f"descheduler-{arm}-r{run:02d}.log").read_text(errors="replace")
            moves = len(re.findall(r"Evicted pod", text))
        if arm in OURS:
            statuses = {ns: custom.get_namespaced_custom_object(GROUP, VERSION, ns, "workloadgroups", ns).get(
                "status") or {} for ns in ns_of[arm]}
            # kept for whoever reads a surprising figure: what each group planned and why
            (out_dir / f"peers-workloadgroups-{arm}-r{run:02d}.json").write_text(json.dumps(statuses, indent=2, default=str))
            moves = sum(s.get("movesTotal", 0) for s in statuses.values())
        rows[arm] = {**score(sc, final), "moves": moves,
                     "seconds_to_steady_state": round(steady_at[arm], 1) if steady_at[arm] is not None else None,
                     "settled": steady_at[arm] is not None, "pods": len(final), "start": start_score}
    log(f"{tag}: " + "; ".join(f"{a}: {rows[a]['cross_device_traffic'] / 1e6:.1f} MB/s, {rows[a]['moves']} moves, "
                                   f"{rows[a]['replicas_colocated']} piled, steady "
                                   f"{rows[a]['seconds_to_steady_state']}" for a in arms)
        + f" (start {start_score['cross_device_traffic'] / 1e6:.1f} MB/s, {start_score['replicas_colocated']} piled)")
    # clean up: the next run starts from the same fleet
    for arm in arms:
        for ns in ns_of[arm]:
            core.delete_namespace(ns)
            if arm in OURS:
                set_rates(st, ns, sc.calls(), 0.0)
        for j in range(2):
            core.delete_node(pools.node(arm, 0, pools.nodes_per_site + j)["metadata"]["name"])
        core.create_node(pools.node(arm, leave_site, leave_idx))
    gone = {ns for arm in arms for ns in ns_of[arm]}
    ck.wait_for(lambda: not [p for p in core.list_pod_for_all_namespaces(label_selector=PEER_LABEL).items
                             if p.metadata.namespace in gone], 180, f"run {run} cleaned up")
    return rows


def set_rates(st: Any, ns: str, calls: Any, rate: float) -> None:
    for src, dst in calls:
        st.prom.series.set_rate("edgeweave_flow_bytes_total", {
            "namespace": ns, "source_workload": src, "destination_workload": dst}, rate)


class StartMismatch(AssertionError):
    """An arm's ReplicaSet replaced a start pod before adopting it: the run is void, not counted."""


CHILDREN: dict[str, subprocess.Popen] = {}  # this process's descheduler instances


def stop_child(p: subprocess.Popen) -> None:
    if p.poll() is None:
        os.killpg(p.pid, signal.SIGTERM)
        try:
            p.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait(5)


def start_packing_scheduler(st: Any, out_dir: Path) -> subprocess.Popen:
    cfg = out_dir / "scheduler-mostallocated.json"
    scheduler_config(cfg, st.kubeconfig)
    port = os.environ.get("EDGEWEAVE_PEERS_SCHED_PORT", "25361")
    logf = open(out_dir / "scheduler-mostallocated.log", "wb")  # noqa: SIM115 - owned by the child
    return subprocess.Popen([str(st.bins / "kube-scheduler"), f"--config={cfg}",
                             f"--authentication-kubeconfig={st.kubeconfig}",
                             f"--authorization-kubeconfig={st.kubeconfig}",
                             "--bind-address=127.0.0.1", f"--secure-port={port}"],
                            stdout=logf, stderr=subprocess.STDOUT, start_new_session=True)


def headline(runs: dict[str, list[dict[str, dict]]], args: argparse.Namespace, void: list[str],
             wall: float) -> dict[str, Any]:
    """The result: per scenario every arm's medians and each run's rows; the headline keys from the
    drift scenario at equal availability (ours against the best peer that piled no more replicas than
    ours), with the any-availability and static figures beside it under their own names."""
    out: dict[str, Any] = {"scenarios": {}}
    for name, rs in runs.items():
        summary = summarise(rs)
        out["scenarios"][name] = {**summary, "runs": len(rs), "per_run": [{ARM_NAMES[a]: r[a] for a in r} for r in rs]}
    keys = ("traffic_ratio_vs_best_real_peer", "traffic_ratio_vs_best_real_peer_ci95",
            "moves_ratio_vs_best_real_peer", "moves_ratio_vs_best_real_peer_ci95")
    drift = out["scenarios"].get("drift", {})
    static = out["scenarios"].get("static", {})
    for k in keys:
        eq = k.replace("_real_peer", "_real_peer_at_equal_availability")
        out[k] = drift.get(eq)
        out[k.replace("_real_peer", "_real_peer_any_availability")] = drift.get(k)
        out[k.replace("_real_peer", "_real_peer_static")] = static.get(eq)
        out[k.replace("_real_peer", "_real_peer_static_any_availability")] = static.get(k)
    out["real_peers"] = {"headline": "drift scenario, at equal availability", "void_runs": void,
                         "window_s": args.window, "steady_s": args.steady,
                         "devices_per_arm": args.sites * args.nodes_per_site, "apps_per_arm": args.apps,
                         "settled": f"placement unchanged for {args.steady:.0f} s within {args.window:.0f} s of the churn",
                         "wall_seconds": round(wall, 1)}
    return out


def main(argv: list[str] | None = None) -> int:
    from kubernetes import client, config

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--apps", type=int, default=6)
    ap.add_argument("--sites", type=int, default=3)
    ap.add_argument("--nodes-per-site", type=int, default=4)
    ap.add_argument("--window", type=float, default=120.0, help="seconds after the churn an arm may take to settle")
    ap.add_argument("--steady", type=float, default=30.0, help="settled: placement unchanged this long")
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--first-run", type=int, default=0, help="index of the first run (names and churn draw)")
    ap.add_argument("--merge", help="a previous --out (or .partial.json) whose runs are counted with these")
    ap.add_argument("--arms", default=",".join(ARMS), help="comma-separated arms (a is always run: it places)")
    ap.add_argument("--scenarios", default="drift,static",
                    help="comma-separated, each run once per run index: drift (the headline: calls that begin after "
                         "placement), static (every call declared as podAffinity up front)")
    ap.add_argument("--out", default=str(REPO / "bench" / "out" / "aggregation" / "peers.json"))
    args = ap.parse_args(argv)
    arms = tuple(a for a in ARMS if a in {"a", *args.arms.split(",")})
    scenarios = [SCENARIOS[n] for n in args.scenarios.split(",")]
    out_dir = Path(args.out).parent
    out_dir.mkdir(parents=True, exist_ok=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    desched_bin = subprocess.run(["bash", str(REPO / "hack" / "build-descheduler.sh")], check=True,
                                 capture_output=True, text=True).stdout.strip()
    pools = Pools(args.sites, args.nodes_per_site)
    st = ck.Stack()
    st.devcluster = ck.load_hack("devcluster")
    packer = None
    runs: dict[str, list[dict[str, dict]]] = {sc.name: [] for sc in scenarios}
    void: list[str] = []
    t_start = time.monotonic()
    try:
        st.devcluster.stop()
        st.kubeconfig = st.devcluster.start()
        st.bins = st.devcluster.bin_dir()
        st.api = config.new_client_from_config(config_file=str(st.kubeconfig))
        st.kubectl("apply", "-f", str(REPO / "crds"))
        st.kubectl("wait", "--for", "condition=established", "crd", "--all", "--timeout=60s")
        core = client.CoreV1Api(st.api)
        names = []
        for arm in arms:
            for n in pools.base(arm):
                core.create_node(n)
                names.append(n["metadata"]["name"])
        ck.wait_for(lambda: sum(1 for n in core.list_node().items if any(
            c.type == "Ready" and c.status == "True" for c in n.status.conditions or [])) >= len(names), 90,
            "kwok nodes Ready")
        if "b2" in arms:
            packer = start_packing_scheduler(st, out_dir)
        st.prom = ck.load_hack("promstack").PromStack(prom_port=ck.free_port(), exporter_port=ck.free_port())
        st.prom.start()
        if set(OURS) & set(arms):
            ck.start_operator(st, out_dir, namespace="agg-pc*", log_name="operator-peers.log")
        for run in range(args.first_run, args.first_run + args.runs):
            for sc in scenarios:
                try:
                    runs[sc.name].append(run_once(st, args, sc, run, pools, out_dir, desched_bin, arms))
                except StartMismatch as e:
                    void.append(str(e))  # its namespaces stay; the next run uses new names
                    log(f"{e}: run not counted")
                Path(args.out).with_suffix(".partial.json").write_text(json.dumps(runs, indent=1))
    finally:
        for child in [*CHILDREN.values(), *([packer] if packer is not None else [])]:
            stop_child(child)
        ck.stop_operator(st)
        if st.prom is not None:
            st.prom.close()
        st.devcluster.stop()
    if args.merge:
        prev = json.loads(Path(args.merge).read_text())
        back = {v: k for k, v in ARM_NAMES.items()}
        if "scenarios" in prev:
            prev = {name: [{back[n]: row for n, row in r.items()} for r in sc_prev["per_run"]]
                    for name, sc_prev in prev["scenarios"].items()}
        for name, earlier in prev.items():
            runs[name] = earlier + runs.get(name, [])
    result = headline(runs, args, void, time.monotonic() - t_start)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(json.dumps(result, separators=(",", ":")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
