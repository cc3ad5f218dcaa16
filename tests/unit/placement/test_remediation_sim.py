"""The remediation simulation on a small fleet: the properties the benchmark's headline depends on."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

# Loaded by path under a unique name: bench/ is not a package and other areas have their own sim.py.
_PATH = Path(__file__).resolve().parents[3] / "bench" / "remediation" / "sim.py"
_spec = importlib.util.spec_from_file_location("edgeweave_bench_remediation_sim", _PATH)
assert _spec and _spec.loader
_sim = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = _sim  # dataclasses look the module up while the class is built
_spec.loader.exec_module(_sim)
Params, simulate = _sim.Params, _sim.simulate


def test_small_fleet_remediates_without_false_or_invalid_moves() -> None:
    r = simulate(Params(sites=40, ticks=45, seed=3))
    assert r["devices"] == 80 and r["breaching_devices"] > 10
    assert r["detected_fraction"] == 1.0
    # Grace bounds detection: the longest grace is 30 s = 3 ticks, plus one tick of scrape lag.
    assert r["detection_ticks_max"] <= 4
    assert r["false_moves"] == 0 and r["invalid_targets"] == 0 and r["untaints_while_frozen"] == 0
    assert r["baseline_left_on_breaching_devices"] > 0
    assert r["left_on_breaching_devices"] < r["baseline_left_on_breaching_devices"]
    # Whatever stays behind stays for a stated reason (no room on a valid target), never silently.
    assert sum(r["left_because"].values()) >= r["left_on_breaching_devices"]
    # Without grace and hysteresis, blips move workloads and noisy batteries flap taints.
    naive = r["ablation_no_grace_no_hysteresis"]
    assert naive["false_moves"] > 0 and naive["taint_changes"] > r["taint_changes"]
