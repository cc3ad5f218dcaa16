"""`edgeweave slice-run`: what a GpuJob pod executes.

Reads the job spec (env EDGEWEAVE_GPUJOB or --spec-file) and its slice list (env EDGEWEAVE_SLICES or
--slices, format in plan.py), builds the kernel on the chosen backend, runs the slices in order and,
after each one completes, prints a JSON progress line and appends it to <out>/progress.jsonl. At the
end it writes <out>/output.npy (this pod's output array; the elements of its slices are valid) and
<out>/result.json. SIGTERM stops it after the slice in flight, with the progress of finished slices
kept, so the operator can reassign the rest (plan.reassign).

Kernels given as source must have the signature
    (float* out, const float* in, unsigned long long n)
with n = problemSize; `in` holds n seeded random floats, `out` n zeros. They need the CUDA backend.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..api.gpujob import GpuJobSpec
from .builtins import make_kernel
from .plan import ENV_SLICES, ENV_SPEC, SliceList, SliceRange, block_of, decode_slices, grid_of
from .runtime_cpu import CpuSliceRunner


def _parse(argv: Sequence[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="edgeweave slice-run", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--spec-file", type=Path, help=f"GpuJob spec as JSON or YAML (default: env {ENV_SPEC})")
    p.add_argument("--slices", help=f"slice list (default: env {ENV_SLICES}; 'all' = whole grid, one slice)")
    p.add_argument("--backend", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--out", type=Path, default=None, help="directory for progress.jsonl, output.npy, result.json")
    p.add_argument("--seed", type=int, default=0, help="seed of the generated inputs (same in every pod)")
    p.add_argument("--verify", action="store_true",
                   help="compare the slices' output elements with the unsliced reference (built-ins)")
    return p.parse_args(list(argv))


def load_spec(spec_file: Path | None) -> GpuJobSpec:
    if spec_file is not None:
        import yaml

        data = yaml.safe_load(spec_file.read_text())
        if isinstance(data, dict) and "spec" in data and "kind" in data:
            data = data["spec"]  # a whole GpuJob manifest
        return GpuJobSpec.model_validate(data)
    raw = os.environ.get(ENV_SPEC)
    if not raw:
        raise ValueError(f"no job spec: pass --spec-file or set {ENV_SPEC}")
    return GpuJobSpec.model_validate_json(raw)


def load_slices(arg: str | None, spec: GpuJobSpec) -> list[SliceRange] | SliceList:
    text = arg if arg is not None else os.environ.get(ENV_SLICES)
    if not text:
        raise ValueError(f"no slice list: pass --slices or set {ENV_SLICES}")
    if text == "all":
        return [SliceRange(index=0, start=0, end=grid_of(spec).blocks)]
    slices = decode_slices(text)
    total = grid_of(spec).blocks
    if slices.max_end > total:
        raise ValueError(f"slice list goes past the job's grid of {total} blocks")
    return slices


def build_runner(spec: GpuJobSpec, backend: str, seed: int) -> tuple[Any, Any]:
    """(runner, cpu_twin_or_None). The CPU twin is the built-in kernel whose inputs the runner uses."""
    grid, block = grid_of(spec), block_of(spec)
    use_cuda = backend == "cuda"
    if backend == "auto":
        from .runtime_cuda import cuda_available

        use_cuda = cuda_available()
    if spec.kernel.builtin is not None:
        twin = make_kernel(spec.kernel.builtin.value, spec.kernel.problem_size, grid, block, seed)
        if not use_cuda:
            return CpuSliceRunner(twin), twin
        import cupy as cp

        from .runtime_cuda import CudaSliceRunner

        args, out, options = twin.cuda_args(cp)
        return CudaSliceRunner(twin.source, twin.name, grid, block, args, out, options), twin
    if not use_cuda:
        raise RuntimeError("a kernel given as source needs the CUDA backend (no CUDA device/CuPy here)")
    import cupy as cp

    from .runtime_cuda import CudaSliceRunner

    n = spec.kernel.problem_size
    inp = np.random.default_rng(seed).standard_normal(n, dtype=np.float32)
    out = cp.zeros(n, dtype=np.float32)
    runner = CudaSliceRunner(spec.kernel.source or "", spec.kernel.entry or "", grid, block,
                             [out, cp.asarray(inp), np.uint64(n)], out)
    return runner, None


class _Stop:
    def __init__(self) -> None:
        self.requested = False

    def __call__(self, signum: int, frame: object) -> None:
        self.requested = True


def main(argv: Sequence[str]) -> int:
    ns = _parse(argv)
    try:
        spec = load_spec(ns.spec_file)
        slices = load_slices(ns.slices, spec)
        runner, twin = build_runner(spec, ns.backend, ns.seed)
    except Exception as exc:  # noqa: BLE001 - every set-up failure is a clear message and exit 2
        print(json.dumps({"event": "error", "error": f"{type(exc).__name__}: {exc}"}), flush=True)
        return 2
    stop = _Stop()
    previous = signal.signal(signal.SIGTERM, stop)
    progress = None
    if ns.out is not None:
        ns.out.mkdir(parents=True, exist_ok=True)
        progress = (ns.out / "progress.jsonl").open("a")
    done: list[int] = []
    t0 = time.perf_counter()
    try:
        for s in slices:
            if stop.requested:
                break
            ts = time.perf_counter()
            runner.run_slice(s.start, s.end)
            record = {"event": "slice-done", "slice": s.index, "blocks": [s.start, s.end],
                      "ms": round((time.perf_counter() - ts) * 1000, 3)}
            line = json.dumps(record)
            print(line, flush=True)
            if progress is not None:
                progress.write(line + "\n")
                progress.flush()
            done.append(s.index)
        runner.synchronize()
    finally:
        signal.signal(signal.SIGTERM, previous)
        if progress is not None:
            progress.close()
    result: dict[str, Any] = {
        "event": "stopped" if stop.requested else "finished", "backend": runner.backend,
        "slices_done": len(done), "slices_total": len(slices),
        "elapsed_ms": round((time.perf_counter() - t0) * 1000, 3),
    }
    out = runner.output()
    if ns.verify and twin is not None:
        finished = set(done)
        result["verified"] = _verify(twin, [s for s in slices if s.index in finished], out)
    if ns.out is not None:
        np.save(ns.out / "output.npy", out)
        (ns.out / "result.json").write_text(json.dumps(result) + "\n")
    print(json.dumps(result), flush=True)
    if stop.requested:
        return 143
    return 0 if result.get("verified", True) else 1


def _verify(twin: Any, slices: list[SliceRange], out: np.ndarray) -> bool:
    from .grid import unlinearise

    if not slices:
        return True
    lin = np.concatenate([np.arange(s.start, s.end, dtype=np.uint64) for s in slices])
    idx = twin.output_elements(unlinearise(lin, twin.grid))
    expected = np.asarray(twin.expected()).ravel()[idx]
    got = np.asarray(out).ravel()[idx]
    return bool(np.allclose(got, expected, rtol=1e-4, atol=1e-3 * max(1.0, float(np.abs(expected).max(initial=0)))))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

