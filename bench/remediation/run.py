"""bench-remediation: context-breach remediation on a simulated 500-device fleet, edgeweave vs Kubernetes'
own taint-based eviction, in one run. Prints a short table, then one JSON line (the last line).

--cluster-result FILE merges a JSON object (the file's content, or its last JSON line) measured on a
real cluster (bench/remediation/cluster.py) into the output under "cluster", so simulated and real figures
travel together. The headline keys the issue names (breach_to_running_p95_s, left_on_breaching_devices and
their baseline_* twins) then come from the real cluster; the simulation's own values of those keys move to
sim_<key>. Without a cluster result they come from the simulation, and breach_to_running_p95_s is null
(the simulation does not model eviction and rescheduling time).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from sim import Params, simulate  # noqa: E402


def load_cluster_result(path: str) -> dict[str, Any]:
    text = Path(path).read_text()
    try:
        obj = json.loads(text)
    except json.JSONDecodeError:
        lines = [ln for ln in text.splitlines() if ln.strip().startswith("{")]
        if not lines:
            raise ValueError(f"{path}: no JSON object found") from None
        obj = json.loads(lines[-1])
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: expected a JSON object")
    return obj


# Figures the issue asks for at the top level; when a real-cluster run is given, they are its figures.
HEADLINE = ("detection_p50_s", "detection_p95_s", "detection_p99_s",
            "breach_to_running_p50_s", "breach_to_running_p95_s", "breach_to_running_p99_s",
            "left_on_breaching_devices", "baseline", "baseline_detection_p95_s",
            "baseline_breach_to_running_p95_s", "baseline_left_on_breaching_devices",
            "baseline_notready_detection_p95_s", "baseline_notready_breach_to_running_lower_bound_s")


def promote_cluster(result: dict[str, Any], cluster: dict[str, Any]) -> dict[str, Any]:
    """Top-level headline keys from the real cluster; the simulation's value of a replaced key -> sim_<key>."""
    out = dict(result)
    for key in HEADLINE:
        if key in cluster:
            if key in out:
                out[f"sim_{key}"] = out[key]
            out[key] = cluster[key]
    out["headline_source"] = "cluster"
    out["cluster"] = cluster
    return out


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--sites", type=int, default=250, help="2 devices per site")
    p.add_argument("--ticks", type=int, default=90)
    p.add_argument("--cluster-result", metavar="FILE", default=None,
                   help="JSON from a real-cluster run, merged under the key 'cluster'")
    ns = p.parse_args(argv)
    result = simulate(Params(sites=ns.sites, ticks=ns.ticks, seed=ns.seed))
    if ns.cluster_result:
        result = promote_cluster(result, load_cluster_result(ns.cluster_result))
    else:
        result = {**result, "headline_source": "simulation", "breach_to_running_p95_s": None,
                  "baseline_breach_to_running_p95_s": None}
    rows = [
        ("devices / pods", f"{result['devices']} / {result['pods']}", ""),
        ("devices breaching a hosted workload's requirements", result["breaching_devices"], ""),
        ("detected (fraction)", result["detected_fraction"], result["baseline_detected_fraction"]),
        ("detection ticks p50 / p95 / max",
         f"{result['detection_ticks_p50']} / {result['detection_ticks_p95']} / {result['detection_ticks_max']}",
         "never"),
        ("pods left on breaching devices at end", result.get("sim_left_on_breaching_devices",
                                                             result["left_on_breaching_devices"]),
         result.get("sim_baseline_left_on_breaching_devices", result["baseline_left_on_breaching_devices"])),
        ("pod-ticks on breaching devices", result["pod_ticks_on_breaching_devices"],
         result["baseline_pod_ticks_on_breaching_devices"]),
        ("moves / false moves / invalid targets",
         f"{result['moves']} / {result['false_moves']} / {result['invalid_targets']}", "0"),
        ("taint changes (ablation: no grace, no hysteresis)",
         f"{result['taint_changes']} ({result['ablation_no_grace_no_hysteresis']['taint_changes']})", ""),
    ]
    if "cluster" in result:
        c = result["cluster"]
        rows += [
            ("REAL CLUSTER: devices / injected / edgeweave workloads",
             f"{c.get('devices')} / {c.get('injected_devices')} / {c.get('edgeweave_workloads')}", ""),
            ("detection s p50 / p95 / p99",
             f"{c.get('detection_p50_s')} / {c.get('detection_p95_s')} / {c.get('detection_p99_s')}", "never"),
            ("breach-to-Running s p50 / p95 / p99",
             f"{c.get('breach_to_running_p50_s')} / {c.get('breach_to_running_p95_s')} / "
             f"{c.get('breach_to_running_p99_s')}",
             c.get("baseline_breach_to_running_p95_s") or f"never ({c.get('observation_window_s')} s)"),
            ("left on breaching devices at end of window",
             f"{c.get('left_on_breaching_devices')}/{c.get('edgeweave_workloads')}",
             f"{c.get('baseline_left_on_breaching_devices')}/{c.get('baseline_workloads')}"),
            ("NotReady path: unreachable taint s p95 (+40 s grace) / moved / bound s", "",
             f"{c.get('baseline_notready_taint_p95_s')} / {c.get('baseline_notready_moved_count')} / "
             f">={c.get('baseline_notready_breach_to_running_lower_bound_s')}"),
        ]
    print(f"{'':52} {'edgeweave':>20} {'kubernetes':>12}", file=sys.stderr)
    for name, ours, base in rows:
        print(f"{name:52} {ours!s:>20} {base!s:>12}", file=sys.stderr)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
