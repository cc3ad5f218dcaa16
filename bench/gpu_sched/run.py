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
- grant latency: `commit + next` round trips of an uncontended client (what a job pod waits between
  two sub-kernels), p50/p99 over --latency-runs runs; and the dispatcher's own service time p99.

Simulator (design tool, not the headline): the same arrivals with long kernels whole on a
non-preemptive GPU, on a prioritising GPU (short kernels on a high-priority stream, the long kernel
yields every --preempt-blocks blocks at no launch cost), and sliced by the optimiser.

Ends with one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from edgeweave.api.gpujob import SchedulingPolicy
from edgeweave.gpu.dispatch_harness import (
    THREE_JOBS,
    Client,
    Node,
    job_spec,
    kill_scenario,
    policy_violations,
    resize_scenario,
    run_three,
)
from edgeweave.gpu.optimiser import GpuLoad, OptimiserConfig
from edgeweave.gpu.sim import compare, mixed_workload, offered_load, simulate


def _ci95(xs: list[float]) -> list[float]:
    """Distribution-free 95% interval of the median (order statistics; needs >= 6 runs)."""
    s = sorted(xs)
    n = len(s)
    k = max(0, int(np.floor(n / 2 - 0.98 * np.sqrt(n))))
    return [round(s[k], 4), round(s[min(n - 1, n - 1 - k)], 4)]


def policy_phase(root: Path) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for policy, (specs, expected) in THREE_JOBS.items():
        node = Node(root / f"policy-{policy}", policy)
        try:
            node.start_dispatcher()
            finished, decisions = run_three(node, specs)
        finally:
            node.stop()
        contested = [d for d in decisions if len(d["candidates"]) > 1]
        order_ok = expected is None or finished == expected
        out[policy] = {"violations": policy_violations(decisions) + (0 if order_ok else 1),
                       "contested_grants": len(contested), "grants": len(decisions), "finished": finished,
                       "service_us": [d["service_us"] for d in decisions]}
        print(f"{policy:14s} grants {len(decisions):4d} contested {len(contested):4d} "
              f"violations {out[policy]['violations']} finished {finished}", flush=True)
    return out


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process (load-independent, unlike a round trip on a busy box)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def latency_phase(root: Path, runs: int, cycles: int) -> dict[str, Any]:
    """Round trips for one job alone, dispatcher as deployed (commits fsynced, no decision log):
    `next` (the grant: decision, sizing, journal record) and `commit` (journal record + fsync)."""
    node = Node(root / "latency", SchedulingPolicy.ShortestFirst.value, decisions=False, fsync=True)
    p50s, p99s, c99s = [], [], []
    grants = 0
    try:
        d = node.start_dispatcher()
        cpu0 = 0.0
        for r in range(-1, runs):  # run -1 warms up (lazy imports, first allocations): not counted
            job = node.job("ns-lat", f"lat{r + 1}", job_spec(cycles * 4, target_ms=0.04))  # 4 blocks per grant
            c = Client(node, job, worker="probe")
            rtts, crtts = [], []
            while True:
                t0 = time.perf_counter()
                reply = c.call({"op": "next"})
                rtts.append((time.perf_counter() - t0) * 1000.0)
                if "grant" not in reply:
                    break
                g = reply["grant"]
                t0 = time.perf_counter()
                c.call({"op": "commit", "id": g["id"], "lo": g["lo"], "hi": g["hi"], "ms": 0.04})
                crtts.append((time.perf_counter() - t0) * 1000.0)
            c.close()
            if r < 0:
                cpu0 = _cpu_s(d.pid)
                continue
            grants += len(crtts)
            p50s.append(float(np.percentile(rtts, 50)))
            p99s.append(float(np.percentile(rtts, 99)))
            c99s.append(float(np.percentile(crtts, 99)))
        cpu_us = (_cpu_s(d.pid) - cpu0) * 1e6 / max(1, grants)
    finally:
        node.stop()
    return {"cpu_us_per_grant_and_commit": round(cpu_us, 1), "runs": runs, "cycles_per_run": cycles, "p50_ms": round(statistics.median(p50s), 4),
            "p99_ms": round(statistics.median(p99s), 4), "p99_ms_ci95": _ci95(p99s),
            "commit_p99_ms": round(statistics.median(c99s), 4)}


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
        node = Node(root / "resize", "Fifo", slots=2)
        try:
            node.start_dispatcher()
            rs = resize_scenario(node)
        finally:
            node.stop()
        predicted = (1 - rs["load_after"]) / (1 - rs["load_before"])
        resized = bool(rs["load_after"] > rs["load_before"] + 0.05 and rs["size_after"] < rs["size_before"]
                       and abs(rs["size_after"] / rs["size_before"] - predicted) < 0.15)
        print(f"resize: {rs}", flush=True)
        node = Node(root / "kill", "ShortestFirst")
        try:
            node.start_dispatcher()
            ks = kill_scenario(node, root / "kill-whole")
        finally:
            node.stop()
        print(f"kills: identical={ks['identical']} commits={ks['commits']} (at dispatcher kill "
              f"{ks['commits_at_kill']}) reconnects={ks['reconnects']} discarded={ks['discarded']} {ks['error']}",
              flush=True)
        lat = latency_phase(root, ns.latency_runs, ns.latency_cycles)
        print(f"grant latency (`next` round trip; commit timed apart): {lat}", flush=True)
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
        "dynamic_resize_observed": resized,
        "resize": {k: (round(v, 4) if isinstance(v, float) else v) for k, v in rs.items()},
        "exactly_once_after_kills": bool(ks["identical"] and ks["exit_codes"] == [0, 0]),
        "kills": {k: ks[k] for k in ("commits", "commits_at_kill", "reconnects", "discarded", "error")},
        "grant_latency_p99_ms": lat["p99_ms"], "grant_latency_p99_ms_ci95": lat["p99_ms_ci95"],
        "grant_latency_p50_ms": lat["p50_ms"], "grant_latency_runs": lat["runs"],
        "commit_latency_p99_ms": lat["commit_p99_ms"],
        "dispatcher_cpu_us_per_grant_and_commit": lat["cpu_us_per_grant_and_commit"], "load_average_1m": round(os.getloadavg()[0], 1),
        "dispatcher_service_p99_ms": round(float(np.percentile(service, 99)) / 1000.0, 4),
        "per_policy": pol, "simulator": sim, "wall_s": round(time.perf_counter() - t0, 1),
    }
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
