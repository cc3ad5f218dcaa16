"""bench-gpu-sched: discrete-event simulation of one GPU shared by long batch kernels and a stream of
short requests. The same arrivals run under every policy, with long kernels whole (the baseline) and
sliced by the optimiser. Prints a table, then one JSON line.

short_p99_ratio = unsliced short-job p99 / sliced short-job p99 under the headline policy;
long_throughput_overhead = extra vGPU time the long jobs hold when sliced (launch overhead), as a
fraction of their sliced time.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from edgeweave.api.gpujob import SchedulingPolicy
from edgeweave.gpu.optimiser import GpuLoad, OptimiserConfig
from edgeweave.gpu.sim import compare, mixed_workload, offered_load


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--duration-ms", type=float, default=60_000.0)
    p.add_argument("--vgpus", type=int, default=1)
    p.add_argument("--latency-target-ms", type=float, default=2.0)
    p.add_argument("--headline", default=SchedulingPolicy.ShortestFirst.value,
                   choices=[x.value for x in SchedulingPolicy])
    ns = p.parse_args(argv)
    t0 = time.perf_counter()
    arrivals = mixed_workload(seed=ns.seed, duration_ms=ns.duration_ms, latency_target_ms=ns.latency_target_ms)
    load = offered_load(arrivals, ns.vgpus)
    res = compare(arrivals, ns.vgpus, list(SchedulingPolicy), GpuLoad.from_samples(load * 100), OptimiserConfig())
    per_policy = {}
    print(f"{len(arrivals)} jobs, offered load {load:.2f}, {ns.vgpus} vGPU(s), latency target "
          f"{ns.latency_target_ms} ms")
    print(f"{'policy':14s} {'mode':7s} {'short mean':>11s} {'short p99':>10s} {'long mean':>10s} "
          f"{'jobs/s':>7s} {'cap/s':>7s} {'util':>6s} {'slices':>7s} {'dl miss':>7s}")
    for policy, r in res.items():
        for mode in ("whole", "sliced"):
            x = r[mode]
            print(f"{policy:14s} {mode:7s} {x.short_mean_ms:11.2f} {x.short_p99_ms:10.2f} {x.long_mean_ms:10.1f} "
                  f"{x.jobs_per_s:7.1f} {x.capacity_jobs_per_s:7.1f} {x.useful_utilisation:6.3f} {x.slices:7d} {x.deadline_miss_rate:7.3f}")
        w, s = r["whole"], r["sliced"]
        per_policy[policy] = {
            "short_mean_ms_whole": round(w.short_mean_ms, 3), "short_mean_ms_sliced": round(s.short_mean_ms, 3),
            "short_p99_ms_whole": round(w.short_p99_ms, 3), "short_p99_ms_sliced": round(s.short_p99_ms, 3),
            "short_p99_ratio": round(w.short_p99_ms / s.short_p99_ms, 2),
            "jobs_per_s_whole": round(w.jobs_per_s, 2), "jobs_per_s_sliced": round(s.jobs_per_s, 2),
            "capacity_jobs_per_s_whole": round(w.capacity_jobs_per_s, 2),
            "capacity_jobs_per_s_sliced": round(s.capacity_jobs_per_s, 2),
            "useful_util_whole": round(w.useful_utilisation, 4), "useful_util_sliced": round(s.useful_utilisation, 4),
            "long_mean_ms_whole": round(w.long_mean_ms, 2), "long_mean_ms_sliced": round(s.long_mean_ms, 2),
        }
    head = res[ns.headline]
    w, s = head["whole"], head["sliced"]
    out = {
        "bench": "gpu_sched", "policy": ns.headline, "jobs": len(arrivals), "offered_load": round(load, 3),
        "short_p99_ratio": round(w.short_p99_ms / s.short_p99_ms, 2),
        "long_throughput_overhead": round((s.long_gpu_ms - w.long_gpu_ms) / s.long_gpu_ms, 5),
        "short_p99_ms_sliced": round(s.short_p99_ms, 3), "short_p99_ms_unsliced": round(w.short_p99_ms, 3),
        "short_mean_ms_sliced": round(s.short_mean_ms, 3), "short_mean_ms_unsliced": round(w.short_mean_ms, 3),
        "jobs_per_s_sliced": round(s.jobs_per_s, 2), "jobs_per_s_unsliced": round(w.jobs_per_s, 2),
        "capacity_jobs_per_s_sliced": round(s.capacity_jobs_per_s, 2),
        "capacity_jobs_per_s_unsliced": round(w.capacity_jobs_per_s, 2),
        "per_policy": per_policy, "wall_s": round(time.perf_counter() - t0, 2),
    }
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
