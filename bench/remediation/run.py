"""bench-remediation: context-breach remediation on a simulated 500-device fleet, edgeweave vs Kubernetes'
own taint-based eviction, in one run. Prints a short table, then one JSON line (the last line).

--cluster-result FILE merges a JSON object (the file's content, or its last JSON line) measured on a
real cluster into the output, so simulated and real figures travel together.
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
        result["cluster"] = load_cluster_result(ns.cluster_result)
    rows = [
        ("devices / pods", f"{result['devices']} / {result['pods']}", ""),
        ("devices breaching a hosted workload's requirements", result["breaching_devices"], ""),
        ("detected (fraction)", result["detected_fraction"], result["baseline_detected_fraction"]),
        ("detection ticks p50 / p95 / max",
         f"{result['detection_ticks_p50']} / {result['detection_ticks_p95']} / {result['detection_ticks_max']}",
         "never"),
        ("pods left on breaching devices at end", result["left_on_breaching_devices"],
         result["baseline_left_on_breaching_devices"]),
        ("pod-ticks on breaching devices", result["pod_ticks_on_breaching_devices"],
         result["baseline_pod_ticks_on_breaching_devices"]),
        ("moves / false moves / invalid targets",
         f"{result['moves']} / {result['false_moves']} / {result['invalid_targets']}", "0"),
        ("taint changes (ablation: no grace, no hysteresis)",
         f"{result['taint_changes']} ({result['ablation_no_grace_no_hysteresis']['taint_changes']})", ""),
    ]
    print(f"{'':52} {'edgeweave':>20} {'kubernetes':>12}", file=sys.stderr)
    for name, ours, base in rows:
        print(f"{name:52} {ours!s:>20} {base!s:>12}", file=sys.stderr)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
