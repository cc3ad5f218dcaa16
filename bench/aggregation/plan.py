"""Aggregation benchmark, plan time only: the 1,000-device / 10,000-pod fleet of run.py, planned
--repeat times each way (first interval: maxMovesPerInterval per group; uncapped), wall and CPU seconds
per plan, median and a distribution-free 95% interval of the median (order statistics), and the load
average before and after. The plans must be identical on every repetition (the planner is
deterministic); their moves and traffic are printed so a change to the planner that alters its
results shows here.

`plan_seconds_1000_devices` is the median wall time of the slower of the two plans, as in run.py.
Progress goes to stderr; the last stdout line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

from edgeweave.api.workloadgroup import ActuationLimits, AggregationPolicy
from edgeweave.placement.aggregate import plan_aggregation
from edgeweave.sim.workloads import FleetSpec, generate_fleet

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from stats import median_interval  # noqa: E402 - bench/ is a script dir

BYTES_PER_REQUEST = 2048.0


def figure(xs: list[float]) -> dict:
    med, lo, hi = median_interval(xs)
    return {"median": round(med, 4) if med is not None else None,
            "ci95": [round(lo, 4) if lo is not None else None, round(hi, 4) if hi is not None else None],
            "min": round(min(xs), 4), "max": round(max(xs), 4)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--devices", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--repeat", type=int, default=12)
    ap.add_argument("--out", help="also write the JSON object here")
    args = ap.parse_args(argv)
    load_before = os.getloadavg()
    t = time.perf_counter()
    fleet = generate_fleet(FleetSpec(devices=args.devices, seed=args.seed))
    print(f"[plan] {args.devices} devices, {len(fleet.workloads)} pods generated in {time.perf_counter() - t:.1f}s",
          file=sys.stderr, flush=True)
    policy, limits = AggregationPolicy(), ActuationLimits()
    kinds = {"one_interval": {"max_moves_per_group": limits.max_moves_per_interval}, "uncapped": {}}
    out: dict = {}
    for name, kw in kinds.items():
        walls, cpus, first = [], [], None
        for i in range(args.repeat):
            t, c = time.perf_counter(), time.process_time()
            plan = plan_aggregation(fleet.devices, fleet.workloads, fleet.edges, policy,
                                    requirements_ok=fleet.requirements_ok, bytes_per_request=BYTES_PER_REQUEST, **kw)
            walls.append(time.perf_counter() - t)
            cpus.append(time.process_time() - c)
            if first is None:
                first = plan
            elif plan != first:
                raise AssertionError(f"{name}: plan {i} differs from the first")
            print(f"[plan] {name} {i}: wall {walls[-1]:.3f}s cpu {cpus[-1]:.3f}s load {os.getloadavg()[0]:.1f}",
                  file=sys.stderr, flush=True)
        assert first is not None
        out[name] = {"wall_s": figure(walls), "cpu_s": figure(cpus), "moves": len(first.moves),
                     "traffic_before": round(first.traffic_before, 3), "traffic_after": round(first.traffic_after, 3),
                     "wall_s_each": [round(x, 4) for x in walls], "cpu_s_each": [round(x, 4) for x in cpus]}
    slow = max(out.values(), key=lambda r: r["wall_s"]["median"])
    result = {"bench": "aggregation-plan", "devices": args.devices, "pods": len(fleet.workloads), "seed": args.seed,
              "repeat": args.repeat, "cpu_count": os.cpu_count(),
              "plan_seconds_1000_devices": slow["wall_s"]["median"],
              "plan_seconds_1000_devices_ci95": slow["wall_s"]["ci95"],
              "plan_cpu_seconds_1000_devices": max(r["cpu_s"]["median"] for r in out.values()),
              "load_average_before": [round(x, 2) for x in load_before],
              "load_average_after": [round(x, 2) for x in os.getloadavg()],
              "target_seconds": 1.0, "plans": out}
    line = json.dumps(result, separators=(",", ":"))
    if args.out:
        os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)  # a fresh clone has no bench/out
        with open(args.out, "w") as f:
            f.write(line + "\n")
    print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
