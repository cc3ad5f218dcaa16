"""A workload that writes known patterns and acknowledges each write (for e2e tests and the benchmark).

It creates a region, registers it with the agent, fills every page with version 0, takes
baseline epoch 1, then writes `--dirty-pages` distinct random pages (version +1 each), then
keeps writing random pages at `--rate` until killed. Each write is acknowledged by appending
(page, version) to the ack log *after* the store completed; the ack log is what a client
would have been told, so the recovered region must contain every acknowledged write.
"""

from __future__ import annotations

import argparse
import json
import os
import struct
import sys
import time

import numpy as np

from .patterns import pattern
from .region import Region
from .store import open_store

ACK = struct.Struct("<II")


def read_acks(path: str, npages: int) -> np.ndarray:
    """Last acknowledged version of each page (0 = the initial fill)."""
    acked = np.zeros(npages, dtype=np.int64)
    raw = open(path, "rb").read()
    usable = len(raw) - len(raw) % ACK.size
    recs = np.frombuffer(raw[:usable], dtype="<u4").reshape(-1, 2)
    if len(recs):
        # Versions of a page only grow, so the maximum is the last acknowledged one.
        np.maximum.at(acked, recs[:, 0].astype(np.int64), recs[:, 1].astype(np.int64))
    return acked


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="edgeweave memory writer", description=__doc__)
    ap.add_argument("--name", required=True)
    ap.add_argument("--size", type=int, required=True)
    ap.add_argument("--page-size", type=int, default=4096)
    ap.add_argument("--backing", default="memfd", help="memfd, or a path in /dev/shm or on hugetlbfs")
    ap.add_argument("--control", required=True, help="agent control socket")
    ap.add_argument("--token-file", required=True)
    ap.add_argument("--store", required=True)
    ap.add_argument("--ack", required=True, help="acknowledgement log")
    ap.add_argument("--track", default="auto", choices=["auto", "uffd", "explicit"])
    ap.add_argument("--scan-interval", type=float, default=0.5)
    ap.add_argument("--dirty-pages", type=int, default=0)
    ap.add_argument("--second-baseline-after", type=int, default=0,
                    help="take baseline epoch 2 after this many of the dirty-page writes (0 = never)")
    ap.add_argument("--rate", type=float, default=0.0, help="writes/s after the dirty phase, until killed")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--namespace", default="default")
    ap.add_argument("--pod-uid", default="0")
    ap.add_argument("--baseline-every", type=float, default=0.0,
                    help="take a baseline every N seconds while writing (prints 'SNAP' when one starts)")
    a = ap.parse_args(argv)

    token = open(a.token_file, "rb").read().strip()
    r = Region.create(a.name, a.size, a.page_size, a.backing, a.track, namespace=a.namespace, pod_uid=a.pod_uid)
    words = a.page_size // 8
    arr = r.array.view(np.uint64).reshape(r.npages, words)
    explicit = r.tracker is None
    for lo in range(0, r.npages, 8192):
        hi = min(r.npages, lo + 8192)
        arr[lo:hi] = pattern(np.arange(lo, hi), np.zeros(hi - lo, np.int64), words)
    if explicit:
        r.mark_dirty(0, a.size)
    r.register(a.control, token)
    store = open_store(a.store)
    m = r.baseline(store)
    ack = os.open(a.ack, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_TRUNC, 0o644)
    r.start(store=store if a.baseline_every else None, scan_interval=a.scan_interval,
            baseline_interval=a.baseline_every or None, on_error=lambda e: print(f"ERROR {e}", flush=True),
            on_baseline_start=lambda: print("SNAP", flush=True))
    rng = np.random.default_rng(a.seed)
    version = np.zeros(r.npages, dtype=np.int64)

    def write(p: int) -> None:
        v = version[p] + 1
        arr[p] = pattern(np.array([p]), np.array([v]), words)[0]
        if explicit:
            r.mark_dirty(p * a.page_size, a.page_size)
        version[p] = v
        os.write(ack, ACK.pack(p, v))

    t = time.perf_counter()
    dirty = rng.choice(r.npages, size=min(a.dirty_pages, r.npages), replace=False)
    for i, p in enumerate(dirty.tolist()):
        write(p)
        if a.second_baseline_after and i + 1 == a.second_baseline_after:
            m = r.baseline(store)
    dt = time.perf_counter() - t
    print("READY " + json.dumps({"epoch": m.epoch, "region": r.rid.key, "store_name": r.rid.store_name, "tracking": r.tracking_mode, "pid": os.getpid(),
                                 "dirty_writes": len(dirty), "dirty_seconds": round(dt, 4)}), flush=True)
    if a.rate <= 0:
        while True:
            time.sleep(3600)
    period = 1.0 / a.rate
    nxt = time.monotonic()
    while True:
        write(int(rng.integers(r.npages)))
        nxt += period
        delay = nxt - time.monotonic()
        if delay > 0:
            time.sleep(delay)


def lazy_check_main(argv: list[str]) -> int:
    """The replacement workload of a lazy restore: attach, then serve requests at once.

    Each request reads one page (user-space access: a missing page faults and is served by the
    recovery process) and checks it against the acknowledgement log. Prints one JSON line with
    monotonic timestamps (comparable with the recovery's t0: one clock for the machine).
    """
    from .lazy import LazyRegion

    ap = argparse.ArgumentParser(prog="edgeweave memory lazy-check")
    ap.add_argument("--dest", required=True)
    ap.add_argument("--size", type=int, required=True)
    ap.add_argument("--helper", required=True, help="the recovery's lazy socket")
    ap.add_argument("--ack", required=True)
    ap.add_argument("--requests", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=7)
    a = ap.parse_args(argv)
    npages = a.size // 4096
    acked = read_acks(a.ack, npages)
    rng = np.random.default_rng(a.seed)
    # half the requests go to pages with acknowledged writes (dirty: from the source), half anywhere
    written = np.flatnonzero(acked > 0)
    pick = np.where(rng.random(a.requests) < 0.5, rng.choice(written, a.requests) if len(written) else 0,
                    rng.integers(0, npages, a.requests))
    while not os.path.exists(a.dest):
        time.sleep(0.001)
    r = LazyRegion.attach(a.dest, a.size, a.helper)
    attached = time.monotonic()
    words = np.frombuffer(r.map, dtype=np.uint64).reshape(npages, 512)
    first = 0.0
    lat = []
    wrong = 0
    for p in pick.tolist():
        t = time.monotonic()
        page = words[p].copy()  # the touch: faults if the page is missing
        want = pattern(np.array([p, p]), np.array([acked[p], acked[p] + 1]), 512)
        wrong += not (np.array_equal(page, want[0]) or np.array_equal(page, want[1]))
        now = time.monotonic()
        lat.append(now - t)
        if not first:
            first = now
    last = time.monotonic()
    resident = r.wait_resident(timeout=600)
    print(json.dumps({"attached_at": attached, "first_served_at": first, "last_served_at": last,
                      "resident": resident.get("resident"), "resident_at": resident.get("at"),
                      "requests": len(pick), "wrong": wrong,
                      "request_ms_p50": round(float(np.percentile(lat, 50)) * 1e3, 3),
                      "request_ms_p99": round(float(np.percentile(lat, 99)) * 1e3, 3)}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
