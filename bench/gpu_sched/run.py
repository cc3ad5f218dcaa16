"""bench-gpu-sched: the node slice dispatcher as real processes on the CPU runtime, plus the simulator row.

Real processes (`python -m edgeweave.gpu.dispatcher` + `python -m edgeweave.gpu.slice_worker` job pods
over its unix socket, CPU backend):

- policy_order_violations: for each of the five policies, three jobs submitted at once (a gate grant
  holds the GPU until all three wait); every grant decided with more than one job waiting is checked
  by an oracle written from the policy definitions (not the dispatcher's ranking code); plus the
  finishing order for Priority, ShortestFirst and Deadline.
- dynamic_resize_observed: a job runs alone, then a second tenant starts on the same GPU; the first
  job's grants after that must be smaller, by what the optimiser predicts from the measured load.
- exactly_once_after_kills: SIGKILL one job pod and then the dispatcher mid-job, restart both; the
  output assembled from committed grants must equal the unsliced run bit for bit.
- grant latency: `next` of an uncontended client, the dispatcher's part of the round trip (request
  sent -> answer sent, stamped by the dispatcher on the node's monotonic clock) p50/p99 per run over
  --latency-runs runs (median, 95% interval), timed by a SCHED_RR probe (so the probe's own
  preemption is not booked to the dispatcher); in the same run, interleaved, the same dispatcher
  left in SCHED_OTHER (the baseline: the dispatcher before the fix), and the deployed dispatcher
  timed by a SCHED_OTHER probe, as a job pod sees it (its round trip includes its own wake-up).

Simulator (design tool, not the headline): the same arrivals with long kernels whole on a
non-preemptive GPU, on a prioritising GPU (short kernels on a high-priority stream, the long kernel
yields every --preempt-blocks blocks at no launch cost), and sliced by the optimiser.

Ends with one JSON line.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from edgeweave.api.gpujob import SchedulingPolicy
from edgeweave.gpu import dispatch_harness as harness
from edgeweave.gpu.optimiser import GpuLoad, OptimiserConfig
from edgeweave.gpu.sched_latency import request_realtime
from edgeweave.gpu.sim import compare, mixed_workload, offered_load, simulate


def _ci95(xs: list[float]) -> list[float]:
    """Distribution-free 95% interval of the median (order statistics; needs >= 6 runs)."""
    s = sorted(xs)
    n = len(s)
    k = max(0, int(np.floor(n / 2 - 0.98 * np.sqrt(n))))
    return [round(s[k], 4), round(s[min(n - 1, n - 1 - k)], 4)]


def policy_phase(root: Path) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for policy in harness.THREE_JOBS:
        with harness.dispatcher_node(root / f"policy-{policy}", policy) as node:
            r = harness.policy_check(node, policy)
        out[policy] = {"violations": r["violations"], "contested_grants": r["contested"],
                       "grants": len(r["decisions"]), "finished": r["finished"],
                       "service_us": [d["service_us"] for d in r["decisions"]]}
        print(f"{policy:14s} grants {len(r['decisions']):4d} contested {r['contested']:4d} "
              f"violations {r['violations']} finished {r['finished']}", flush=True)
    return out


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process (load-independent, unlike a round trip on a busy box)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _probe_run(node: Any, name: str, cycles: int) -> dict[str, list[float]]:
    """One job alone, `cycles` grants: `next` then `commit`, each stamped by the dispatcher with the
    time its answer left (the node's monotonic clock), so the dispatcher's part of the round trip —
    its wake-up, the decision and sizing, the journal hand-off, the write — is measured apart from
    the probe's own wake-up on a busy CPU."""
    job = node.job("ns-lat", name, harness.job_spec(cycles * 4, target_ms=0.04))  # 4 blocks per grant
    c = harness.Client(node, job, worker="probe")
    out: dict[str, list[float]] = {"grant": [], "grant_rtt": [], "commit": []}
    while True:
        t0, s0 = time.perf_counter(), time.monotonic_ns()
        reply = c.call({"op": "next", "stamp": True})
        out["grant_rtt"].append((time.perf_counter() - t0) * 1000.0)
        out["grant"].append((reply["sent_ns"] - s0) / 1e6)
        if "grant" not in reply:
            break
        g = reply["grant"]
        s0 = time.monotonic_ns()
        ack = c.call({"op": "commit", "id": g["id"], "lo": g["lo"], "hi": g["hi"], "ms": 0.04, "stamp": True})
        out["commit"].append((ack["sent_ns"] - s0) / 1e6)
    c.close()
    return out


@contextlib.contextmanager
def _probe_class(realtime: bool) -> Iterator[str]:
    """The probe's own scheduling class for one run. Measuring the dispatcher, the probe runs SCHED_RR
    too: a SCHED_OTHER probe preempted between taking its timestamp and its send (a timer tick lands
    in that window in a few % of requests at this load) would book its own wait to the dispatcher.
    What a SCHED_OTHER job pod sees end to end is measured apart (grant_rtt of the `pod` series)."""
    why = request_realtime(1) if realtime else "SCHED_OTHER"
    try:
        yield why
    finally:
        if realtime:
            os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))


def latency_phase(root: Path, runs: int, cycles: int) -> dict[str, Any]:
    """The dispatcher as deployed (commits fsynced, no decision log, SCHED_RR priority 1 as the chart
    runs it), and in the same run, interleaved, the same dispatcher left in SCHED_OTHER (the baseline:
    the dispatcher before this fix), both timed by a SCHED_RR probe; and the deployed dispatcher timed
    by a SCHED_OTHER probe, as a job pod would see it."""
    p99 = lambda xs: float(np.percentile(xs, 99))  # noqa: E731
    series = {"rr": ("rr", True), "other": ("other", True), "pod": ("rr", False)}
    res: dict[str, dict[str, list[float]]] = {k: {} for k in series}
    cpu_us: dict[str, float] = {}
    probe_class = {}
    with harness.dispatcher_node(root / "latency-rr", SchedulingPolicy.ShortestFirst.value, decisions=False,
                                 fsync=True) as rr, \
            harness.dispatcher_node(root / "latency-other", SchedulingPolicy.ShortestFirst.value, decisions=False,
                                    fsync=True, extra=("--rt-priority", "0")) as other:
        nodes = {"rr": rr, "other": other}
        cpu0: dict[str, float] = {}
        for r in range(-1, runs):  # run -1 warms up (lazy imports, first allocations): not counted
            for name, (mode, realtime) in series.items():
                with _probe_class(realtime) as why:
                    out = _probe_run(nodes[mode], f"lat-{name}{r + 1}", cycles)
                probe_class[name] = why
                if r < 0:
                    continue
                for k, xs in out.items():
                    res[name].setdefault(k + "_p99", []).append(p99(xs))
                    res[name].setdefault(k + "_p50", []).append(float(np.percentile(xs, 50)))
            if r < 0:
                cpu0 = {m: _cpu_s(n.dispatcher.pid) for m, n in nodes.items() if n.dispatcher is not None}
        for mode, node in nodes.items():
            assert node.dispatcher is not None
            per = 2 if mode == "rr" else 1  # the rr dispatcher served two series
            cpu_us[mode] = (_cpu_s(node.dispatcher.pid) - cpu0[mode]) * 1e6 / max(1, per * runs * cycles)
        sched = {mode: (node.root / "dispatcher.log").read_text().split("scheduling: ", 1)[-1].split("\n", 1)[0]
                 for mode, node in nodes.items()}
    med = lambda xs: round(statistics.median(xs), 4)  # noqa: E731
    return {"runs": runs, "cycles_per_run": cycles, "scheduling": sched, "probe": probe_class,
            "grant_p99_ms": med(res["rr"]["grant_p99"]), "grant_p99_ms_ci95": _ci95(res["rr"]["grant_p99"]),
            "grant_p99_ms_runs": [round(x, 3) for x in res["rr"]["grant_p99"]],
            "grant_p50_ms": med(res["rr"]["grant_p50"]),
            "grant_rtt_p99_ms": med(res["rr"]["grant_rtt_p99"]), "grant_rtt_p99_ms_ci95": _ci95(res["rr"]["grant_rtt_p99"]),
            "commit_p99_ms": med(res["rr"]["commit_p99"]),
            "pod_grant_rtt_p99_ms": med(res["pod"]["grant_rtt_p99"]),
            "pod_grant_rtt_p99_ms_ci95": _ci95(res["pod"]["grant_rtt_p99"]),
            "pod_grant_p99_ms": med(res["pod"]["grant_p99"]),
            "sched_other_grant_p99_ms": med(res["other"]["grant_p99"]),
            "sched_other_grant_p99_ms_ci95": _ci95(res["other"]["grant_p99"]),
            "sched_other_grant_rtt_p99_ms": med(res["other"]["grant_rtt_p99"]),
            "cpu_us_per_grant_and_commit": round(cpu_us["rr"], 1)}


def _cpu_pressure() -> float | None:
    """The kernel's CPU pressure (share of time some runnable task waited for a CPU), last 60 s."""
    try:
        line = Path("/proc/pressure/cpu").read_text().splitlines()[0]
    except (OSError, IndexError):
        return None
    return float(dict(kv.split("=") for kv in line.split()[1:])["avg60"])


def sim_row(seed: int, duration_ms: float, target_ms: float, preempt_blocks: int) -> dict[str, Any]:
    arrivals = mixed_workload(seed=seed, duration_ms=duration_ms, latency_target_ms=target_ms)
    load = GpuLoad.from_samples(offered_load(arrivals, 1) * 100)
    cfg = OptimiserConfig()
    whole = simulate(arrivals, 1, SchedulingPolicy.ShortestFirst, False, load, cfg)
    prio = simulate(arrivals, 1, SchedulingPolicy.Priority, False, load, cfg, preempt_blocks=preempt_blocks)
    sliced = simulate(arrivals, 1, SchedulingPolicy.ShortestFirst, True, load, cfg)
    best = min(whole.short_p99_ms, prio.short_p99_ms)
    per_policy = {pol: round(r["whole"].short_p99_ms / r["sliced"].short_p99_ms, 2)
                  for pol, r in compare(arrivals, 1, list(SchedulingPolicy), load, cfg).items()}
    return {"short_p99_ms_whole_nonpreemptive": round(whole.short_p99_ms, 3),
            "short_p99_ms_prioritised_gpu": round(prio.short_p99_ms, 3),
            "short_p99_ms_sliced": round(sliced.short_p99_ms, 3),
            "short_p99_ratio_vs_best_baseline": round(best / sliced.short_p99_ms, 3),
            "long_overhead": round((sliced.long_gpu_ms - whole.long_gpu_ms) / sliced.long_gpu_ms, 5),
            "preempt_blocks": preempt_blocks, "jobs": len(arrivals),
            "per_policy_short_p99_ratio_vs_nonpreemptive": per_policy}


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--latency-runs", type=int, default=10)
    p.add_argument("--latency-cycles", type=int, default=300)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--sim-duration-ms", type=float, default=60_000.0)
    p.add_argument("--latency-target-ms", type=float, default=2.0)
    p.add_argument("--preempt-blocks", type=int, default=10, help="prioritised-GPU baseline: yield granularity")
    p.add_argument("--keep", action="store_true", help="keep the scratch directory")
    ns = p.parse_args(argv)
    t0 = time.perf_counter()
    root = Path(tempfile.mkdtemp(prefix="ew-gpu-sched-"))
    try:
        pol = policy_phase(root)
        with harness.dispatcher_node(root / "resize", "Fifo", slots=2) as node:
            rs = harness.resize_scenario(node)
        resize_why = harness.resize_verdict(rs)
        print(f"resize: {rs} {resize_why}", flush=True)
        with harness.dispatcher_node(root / "kill", "ShortestFirst") as node:
            ks = harness.kill_scenario(node, root / "kill-whole")
        kill_why = harness.kill_verdict(ks)
        print(f"kills: commits={ks['commits']} (at dispatcher kill {ks['commits_at_kill']}) "
              f"reconnects={ks['reconnects']} discarded={ks['discarded']} {kill_why}", flush=True)
        lat = latency_phase(root, ns.latency_runs, ns.latency_cycles)
        print(f"grant latency: {lat}", flush=True)
    finally:
        if not ns.keep:
            shutil.rmtree(root, ignore_errors=True)
    service = [u for v in pol.values() for u in v.pop("service_us")]
    sim = sim_row(ns.seed, ns.sim_duration_ms, ns.latency_target_ms, ns.preempt_blocks)
    print(f"simulator: {sim}", flush=True)
    out = {
        "bench": "gpu_sched", "runtime": "cpu (real dispatcher and job-pod processes)",
        "policy_order_violations": sum(v["violations"] for v in pol.values()),
        "contested_grants": sum(v["contested_grants"] for v in pol.values()),
        "dynamic_resize_observed": resize_why == "",
        "resize": {k: (round(v, 4) if isinstance(v, float) else v) for k, v in rs.items()},
        "exactly_once_after_kills": kill_why == "",
        "kills": {k: ks[k] for k in ("commits", "commits_at_kill", "reconnects", "discarded", "error")},
        "grant_latency_p99_ms": lat["grant_p99_ms"], "grant_latency_p99_ms_ci95": lat["grant_p99_ms_ci95"],
        "grant_latency_p99_ms_runs": lat["grant_p99_ms_runs"],
        "grant_latency_p50_ms": lat["grant_p50_ms"], "grant_latency_runs": lat["runs"],
        "grant_rtt_p99_ms": lat["grant_rtt_p99_ms"], "grant_rtt_p99_ms_ci95": lat["grant_rtt_p99_ms_ci95"],
        "commit_latency_p99_ms": lat["commit_p99_ms"],
        "baseline_sched_other_grant_latency_p99_ms": lat["sched_other_grant_p99_ms"],
        "baseline_sched_other_grant_latency_p99_ms_ci95": lat["sched_other_grant_p99_ms_ci95"],
        "baseline_sched_other_grant_rtt_p99_ms": lat["sched_other_grant_rtt_p99_ms"],
        "pod_grant_rtt_p99_ms": lat["pod_grant_rtt_p99_ms"], "pod_grant_rtt_p99_ms_ci95": lat["pod_grant_rtt_p99_ms_ci95"],
        "pod_grant_p99_ms": lat["pod_grant_p99_ms"], "probe_scheduling": lat["probe"],
        "dispatcher_scheduling": lat["scheduling"],
        "dispatcher_cpu_us_per_grant_and_commit": lat["cpu_us_per_grant_and_commit"],
        "load_average_1m": round(os.getloadavg()[0], 1),
        "cpu_pressure_some_avg60": _cpu_pressure(),
        "dispatcher_service_p99_ms": round(float(np.percentile(service, 99)) / 1000.0, 4),
        "per_policy": pol, "simulator": sim, "wall_s": round(time.perf_counter() - t0, 1),
    }
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
