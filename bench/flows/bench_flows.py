"""Flows benchmark: class-aware pinning (the agent) vs hash multipath, same run, same topology.

Prints progress to stderr and, as the last stdout line, one JSON object.
"""

from __future__ import annotations

import json
import os
import statistics
import struct
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "hack"))
from flows_topo import SERVER, Topology, UplinkSpec  # noqa: E402

from edgeweave.agent.build import build  # noqa: E402
from edgeweave.flows.model import load  # noqa: E402
from edgeweave.flows.synth import SizeCdf, dataset  # noqa: E402
from edgeweave.flows.train import DEFAULT_CDF, predict, score  # noqa: E402

PY = sys.executable
TRAFFIC = str(ROOT / "hack" / "flows_traffic.py")
SECONDS = float(os.environ.get("EWF_BENCH_SECONDS", "20"))


def log(*a: object) -> None:
    print(*a, file=sys.stderr, flush=True)


def run_mix(t: Topology, out: Path, seed: int) -> dict:
    subprocess.run(["ip", "netns", "exec", t.client, PY, TRAFFIC, "mix", "--dst", SERVER, "--out", str(out),
                    "--elephants", "3", "--seconds", str(SECONDS), "--mice-rate", "20", "--resp", "4096",
                    "--seed", str(seed)], check=True, timeout=SECONDS + 120)
    res = json.loads(out.read_text())
    fct = sorted(m["fct"] for m in res["mice"])
    thr = sum(e["bytes_acked"] * 8 / e["seconds"] for e in res["elephants"]) / 1e6
    return {"mice": len(fct), "errors": len(res["errors"]),
            "mice_fct_p50_ms": 1000 * fct[len(fct) // 2], "mice_fct_p99_ms": 1000 * float(np.percentile(fct, 99)),
            "elephant_mbps": thr}


def packet() -> bytes:
    eth = b"\0" * 12 + b"\x08\x00"
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 1500, 0, 0x4000, 64, 6, 0, bytes([10, 231, 0, 2]),
                     bytes([10, 231, 100, 1]))
    tcp = struct.pack("!HHIIBBHHH", 40000, 5001, 1, 1, 0x50, 0x10, 65535, 0, 0)
    return eth + ip + tcp + b"x" * (1500 - 40)


def bpf_ns_per_packet(prog: str, tmp: Path) -> float:
    pkt = tmp / "pkt.bin"
    pkt.write_bytes(packet())
    runs = []
    for _ in range(5):
        out = subprocess.run(["bpftool", "prog", "run", "pinned", prog, "data_in", str(pkt), "repeat", "1000000"],
                             check=True, capture_output=True, text=True).stdout
        runs.append(float(out.split("duration (average):")[1].split("ns")[0]))
    return statistics.median(runs)


def veth_gbps(t: Topology) -> float:
    srv = subprocess.Popen(["ip", "netns", "exec", t.edge, "iperf3", "-s", "-1", "-B", "10.231.0.1"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(0.5)
        out = subprocess.run(["ip", "netns", "exec", t.client, "iperf3", "-c", "10.231.0.1", "-t", "3", "-J"],
                             check=True, capture_output=True, text=True, timeout=30).stdout
        return json.loads(out)["end"]["sum_received"]["bits_per_second"] / 1e9
    finally:
        srv.wait(10)


def classifier(k: int) -> dict:
    model = load()
    cdf = SizeCdf.load(os.environ.get("EWF_CDF", DEFAULT_CDF))
    recs, sizes = dataset(cdf, 20000, seed=424242)  # held apart: a seed training never used
    s = score(predict(model.tree(k), recs), sizes > model.threshold_bytes)
    return {"accuracy": s.accuracy, "precision": s.precision, "recall": s.recall}


def main() -> int:
    build()
    tmp = Path(os.environ.get("EWF_BENCH_OUT", ROOT / "bench" / "out" / "flows"))
    tmp.mkdir(parents=True, exist_ok=True)
    t = Topology(uuid.uuid4().hex[:4], [UplinkSpec("mpls", 10, 2), UplinkSpec("inet", 40, 10),
                                        UplinkSpec("lte", 30, 30)]).build()
    pin = f"/sys/fs/bpf/ewfb{t.tag}"
    site = tmp / "site.yaml"
    site.write_text(t.edgesite_yaml())
    agent_args = [PY, "-m", "edgeweave.cli", "agent", "--edgesite", str(site), "--lan-interface", "lan0",
                  "--netns", t.edge, "--pin-dir", pin, "--metrics-port", "0"]
    srv = subprocess.Popen(["ip", "netns", "exec", t.server, PY, TRAFFIC, "server", "--addr", SERVER])
    agent = None
    try:
        time.sleep(0.5)
        veth_without = veth_gbps(t)
        log(f"veth without program: {veth_without:.2f} Gbit/s")
        t.multipath_default()
        base = run_mix(t, tmp / "baseline.json", seed=11)
        log("baseline (hash multipath):", base)
        agent = subprocess.Popen(agent_args, stderr=open(tmp / "agent.log", "w"))
        time.sleep(3)
        ours = run_mix(t, tmp / "agent.json", seed=11)
        log("agent (class-aware):", ours)
        veth_with = veth_gbps(t)
        log(f"veth with program: {veth_with:.2f} Gbit/s")
        ns_pkt = bpf_ns_per_packet(f"{pin}/prog", tmp)
        log(f"bpf ns/packet (BPF_PROG_TEST_RUN, 1500 B TCP, steady state): {ns_pkt:.1f}")
    finally:
        if agent is not None:
            agent.terminate()
            agent.wait(10)
            subprocess.run([*agent_args, "--cleanup"], capture_output=True)
        srv.kill()
        srv.wait()
        t.destroy()
    k = 5
    clf = classifier(k)
    log(f"classifier (held-apart synthetic websearch flows, k={k}):", clf)
    result = {
        "mice_fct_p99_ratio": round(base["mice_fct_p99_ms"] / ours["mice_fct_p99_ms"], 2),
        "elephant_throughput_ratio": round(ours["elephant_mbps"] / base["elephant_mbps"], 3),
        "bpf_ns_per_packet": round(ns_pkt, 1),
        "elephant_recall": round(clf["recall"], 3),
        "elephant_precision": round(clf["precision"], 3),
        "classifier_accuracy": round(clf["accuracy"], 3),
        "decision_packets": k,
        "mice_fct_p99_ms": round(ours["mice_fct_p99_ms"], 2),
        "mice_fct_p50_ms": round(ours["mice_fct_p50_ms"], 2),
        "baseline_mice_fct_p99_ms": round(base["mice_fct_p99_ms"], 2),
        "baseline_mice_fct_p50_ms": round(base["mice_fct_p50_ms"], 2),
        "elephant_mbps": round(ours["elephant_mbps"], 2),
        "baseline_elephant_mbps": round(base["elephant_mbps"], 2),
        "mice": ours["mice"], "baseline_mice": base["mice"],
        "errors": ours["errors"] + base["errors"],
        "veth_gbps_with_bpf": round(veth_with, 2), "veth_gbps_without_bpf": round(veth_without, 2),
        "baseline": "ip route nexthop x3 (L4 hash, equal weights)",
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
