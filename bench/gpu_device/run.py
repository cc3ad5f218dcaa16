"""bench-gpu-device: a long kernel and a stream of short kernels on one real GPU.

The long kernel (compute-bound, millions of short blocks) runs on stream A, whole (one launch of the
rewritten kernel over the full grid: the baseline) or sliced (the optimiser's slice size, every slice
enqueued at once on stream A). Short kernels arrive on stream B at Poisson times while it runs; each
short latency is event-timed on stream B from its submission to its completion. Reported: short p50/p99
with the long kernel whole vs sliced, and the long kernel's time alone, whole vs sliced (the overhead).

Without CUDA it prints {"skipped": "no CUDA device", ...} and exits 3.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from typing import Any

import numpy as np

LONG_SRC = r"""
extern "C" __global__ void spin(float* out, unsigned int iters) {
    const unsigned long long lb = blockIdx.x + (unsigned long long)gridDim.x * blockIdx.y;
    float a = (float)((lb * blockDim.x + threadIdx.x) & 1023) * 1e-3f, b = 1.0001f;
    for (unsigned int k = 0; k < iters; ++k) { a = a * b + 1e-7f; b = b * 0.99999f + 1e-6f; }
    const float r = a + b;
    if (threadIdx.x == 0 || r == -1.0f) out[lb] = r;  // keeps the loop live without a big output
}
"""

SHORT_SRC = r"""
extern "C" __global__ void tick(float* out, unsigned int iters) {
    float a = (float)threadIdx.x * 1e-3f, b = 1.0001f;
    for (unsigned int k = 0; k < iters; ++k) { a = a * b + 1e-7f; b = b * 0.99999f + 1e-6f; }
    const float r = a + b;
    if (threadIdx.x == 0 || r == -1.0f) out[blockIdx.x] = r;
}
"""

THREADS = 256


def _skip(reason: str) -> int:
    print(f"bench-gpu-device: no usable GPU here ({reason}); this benchmark needs CUDA and CuPy", file=sys.stderr)
    print(json.dumps({"skipped": "no CUDA device", "reason": reason}))
    return 3


def _pct(xs: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(xs), q))


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--long-ms", type=float, default=300.0, help="target duration of the whole long kernel")
    p.add_argument("--block-us", type=float, default=40.0, help="target duration of one long-kernel block")
    p.add_argument("--latency-target-ms", type=float, default=2.0)
    p.add_argument("--short-every-ms", type=float, default=4.0, help="mean gap between short kernels")
    p.add_argument("--rounds", type=int, default=5, help="long-kernel runs per mode")
    p.add_argument("--seed", type=int, default=1)
    ns = p.parse_args(argv)

    from edgeweave.gpu.optimiser import GpuLoad, OptimiserConfig, SliceProblem, decide
    from edgeweave.gpu.runtime_cuda import CudaSliceRunner, cuda_status

    ok, why = cuda_status()
    if not ok:
        return _skip(why)
    import cupy as cp

    dev = cp.cuda.Device()
    props = cp.cuda.runtime.getDeviceProperties(dev.id)
    name = props["name"].decode() if isinstance(props["name"], bytes) else str(props["name"])
    sms = int(dev.attributes["MultiProcessorCount"])
    per_sm = min(32, int(dev.attributes["MaxThreadsPerMultiProcessor"]) // THREADS)
    wave = sms * per_sm

    def ev_time(fn: Any, stream: Any) -> float:
        a, b = cp.cuda.Event(), cp.cuda.Event()
        a.record(stream)
        fn()
        b.record(stream)
        b.synchronize()
        return float(cp.cuda.get_elapsed_time(a, b))

    stream_a = cp.cuda.Stream(non_blocking=True)
    stream_b = cp.cuda.Stream(non_blocking=True)

    # Calibrate the per-block time, then size the grid so the whole kernel lasts about --long-ms.
    iters = np.uint32(256)
    probe_blocks = wave * 32
    out = cp.zeros(probe_blocks, dtype=np.float32)

    def runner(blocks: int, it: np.uint32, buf: Any) -> CudaSliceRunner:
        from edgeweave.gpu.grid import Grid

        return CudaSliceRunner(LONG_SRC, "spin", Grid(blocks), Grid(THREADS), [buf, it], buf, stream=stream_a)

    r = runner(probe_blocks, iters, out)
    r.run_slice(0, probe_blocks)  # warm-up (module load)
    for _ in range(3):
        t = ev_time(lambda r=r: r.launch(0, probe_blocks), stream_a)
        iters = np.uint32(max(16, int(iters * (ns.block_us / 1000.0) / (t / 32))))
        r = runner(probe_blocks, iters, out)
    t_probe = ev_time(lambda r=r: r.launch(0, probe_blocks), stream_a)
    waves = max(64, int(ns.long_ms / (t_probe / 32)))
    blocks = waves * wave
    out = cp.zeros(blocks, dtype=np.float32)
    long_r = runner(blocks, iters, out)
    long_r.run_slice(0, wave)
    t_whole_probe = ev_time(lambda: long_r.launch(0, blocks), stream_a)
    tpb_us = t_whole_probe * 1000.0 / blocks

    # Launch overhead as slicing sees it: N one-wave slices back to back vs one launch of N waves.
    n = 200

    def many() -> None:
        for i in range(n):
            long_r.launch(i * wave, (i + 1) * wave)

    t_many = min(ev_time(many, stream_a) for _ in range(3))
    t_one = min(ev_time(lambda: long_r.launch(0, n * wave), stream_a) for _ in range(3))
    overhead_us = max(1.0, (t_many - t_one) * 1000.0 / n)

    problem = SliceProblem(total_blocks=blocks, time_per_block_us=tpb_us, launch_overhead_us=overhead_us,
                           latency_target_ms=ns.latency_target_ms)
    decision = decide(problem, GpuLoad(utilisation=0.0), OptimiserConfig(wave_blocks=wave))
    s = decision.slice_blocks
    ranges = [(a, min(a + s, blocks)) for a in range(0, blocks, s)]

    def run_long(sliced: bool) -> None:
        if sliced:
            for a, b in ranges:
                long_r.launch(a, b)
        else:
            long_r.launch(0, blocks)

    # The long kernel alone: throughput whole vs sliced (alternating, median of rounds).
    alone: dict[bool, list[float]] = {False: [], True: []}
    for _ in range(ns.rounds):
        for sliced in (False, True):
            alone[sliced].append(ev_time(lambda sliced=sliced: run_long(sliced), stream_a))
    long_whole = statistics.median(alone[False])
    long_sliced = statistics.median(alone[True])

    tick = cp.RawKernel(SHORT_SRC, "tick")
    tick_out = cp.zeros(sms, dtype=np.float32)
    tick_iters = np.uint32(max(16, int(iters) // 2))
    with stream_b:
        tick((sms,), (THREADS,), (tick_out, tick_iters))
    stream_b.synchronize()

    rng = random.Random(ns.seed)

    def shorts_during_long(sliced: bool | None) -> tuple[list[float], float]:
        """Short latencies (ms) while the long kernel runs (None: no long kernel), and its duration."""
        pending: list[tuple[Any, Any]] = []
        la, lb = cp.cuda.Event(), cp.cuda.Event()
        la.record(stream_a)
        if sliced is not None:
            run_long(sliced)
        lb.record(stream_a)
        horizon = time.perf_counter() + (ns.long_ms / 1000.0 if sliced is None else 60.0)
        while time.perf_counter() < horizon and (sliced is None or not lb.done):
            gap = rng.expovariate(1.0 / ns.short_every_ms) / 1000.0
            until = time.perf_counter() + gap
            while time.perf_counter() < until:
                pass  # busy-wait: sleep() granularity would bunch the arrivals
            e0, e1 = cp.cuda.Event(), cp.cuda.Event()
            e0.record(stream_b)
            with stream_b:
                tick((sms,), (THREADS,), (tick_out, tick_iters))
            e1.record(stream_b)
            pending.append((e0, e1))
        stream_b.synchronize()
        lb.synchronize()
        return [float(cp.cuda.get_elapsed_time(a, b)) for a, b in pending], float(cp.cuda.get_elapsed_time(la, lb))

    lat: dict[str, list[float]] = {"alone": [], "whole": [], "sliced": []}
    mixed_long: dict[str, list[float]] = {"whole": [], "sliced": []}
    lat["alone"] = shorts_during_long(None)[0]
    for _ in range(ns.rounds):
        for mode in ("whole", "sliced"):
            xs, t_long = shorts_during_long(mode == "sliced")
            lat[mode].extend(xs)
            mixed_long[mode].append(t_long)

    p99_whole, p99_sliced = _pct(lat["whole"], 99), _pct(lat["sliced"], 99)
    result = {
        "bench": "gpu_device", "device": name, "sms": sms, "wave_blocks": wave,
        "long_blocks": blocks, "time_per_block_us": round(tpb_us, 5), "launch_overhead_us": round(overhead_us, 2),
        "slice_blocks": s, "slices": len(ranges), "latency_target_ms": ns.latency_target_ms,
        "short_samples": {k: len(v) for k, v in lat.items()},
        "short_p50_ms_alone": round(_pct(lat["alone"], 50), 4), "short_p99_ms_alone": round(_pct(lat["alone"], 99), 4),
        "short_p50_ms_whole": round(_pct(lat["whole"], 50), 4), "short_p99_ms_whole": round(p99_whole, 4),
        "short_p50_ms_sliced": round(_pct(lat["sliced"], 50), 4), "short_p99_ms_sliced": round(p99_sliced, 4),
        "long_ms_whole": round(long_whole, 3), "long_ms_sliced": round(long_sliced, 3),
        "long_ms_whole_with_shorts": round(statistics.median(mixed_long["whole"]), 3),
        "long_ms_sliced_with_shorts": round(statistics.median(mixed_long["sliced"]), 3),
        "short_p99_ratio": round(p99_whole / p99_sliced, 2),
        "long_throughput_overhead": round(1.0 - long_whole / long_sliced, 5),
    }
    result["targets_met"] = result["short_p99_ratio"] >= 5 and result["long_throughput_overhead"] <= 0.05
    print(f"{name}: short p99 {p99_whole:.3f} ms (long whole) vs {p99_sliced:.3f} ms (sliced, {len(ranges)} "
          f"slices of {s} blocks); long kernel {long_whole:.1f} ms whole vs {long_sliced:.1f} ms sliced")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
