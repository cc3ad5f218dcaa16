"""Traffic with application structure, for training and a non-circular evaluation.

A site runs several applications. Each application has its own flow-size distribution,
destination port, a few source pods and one destination prefix per site, and how it
writes (one write of the whole object, or fixed chunks). Whether its pods run on the
edge node (so the tcp_sendmsg_locked hint sees their sockets) is part of the app.

Sizes: `search` draws from the published web-search CDF (shared/data/flows/websearch.cdf);
the others are of our own design (documented in docs/flows.md):
  backup     lognormal, median 40 MB, sigma 0.6, >= 2 MB    port 873   64 KiB writes  LAN host
  telemetry  log-uniform 500 B .. 8 kB                      port 4317  one write      pod
  camera     uniform 1.2 .. 3 MB (video segments)           port 1935  64 KiB writes  LAN host
  api        lognormal, median 30 kB, sigma 1.2 (medium)    port 8080  one write      pod
  logship    lognormal, median 300 kB, sigma 1.0            port 9200  one write      pod
  search     web-search CDF                                 port 443   16 KiB writes  pod
  pos        log-uniform 300 B .. 20 kB (till transactions) port 8443  4 KiB writes   LAN host
  fileshare  web-search CDF                                 port 445   64 KiB writes  LAN host
Packet features come from synth.first_packets (how Linux TCP sends S bytes; RTT, MSS,
timing drawn independently of S). History is learned online per site, causally: a flow
sees only flows that finished before it started. Nothing here writes the label into a feature.
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .features import DatapathFeatures, packet_features
from .history import History
from .synth import SizeCdf, first_packets

HINT_SNDBUF = 87380  # send backlog a new connection can queue before autotuning grows it


@dataclass(frozen=True)
class App:
    name: str
    port: int
    dist: str                  # "cdf", "lognormal", "loguniform", "uniform"
    a: float = 0.0
    b: float = 0.0
    floor: float = 1.0
    write: int | None = None   # None: the whole object in one write
    local: bool = True         # pods on the edge node (the send hint sees them)

    def sample(self, rng: np.random.Generator, n: int, cdf: SizeCdf | None) -> np.ndarray:
        if self.dist == "cdf":
            assert cdf is not None
            s = cdf.sample(rng, n).astype(float)
        elif self.dist == "lognormal":
            s = np.exp(rng.normal(np.log(self.a), self.b, n))
        elif self.dist == "loguniform":
            s = np.exp(rng.uniform(np.log(self.a), np.log(self.b), n))
        else:
            s = rng.uniform(self.a, self.b, n)
        return np.maximum(self.floor, np.round(s)).astype(np.int64)


APPS: tuple[App, ...] = (
    App("search", 443, "cdf", write=16384, local=True),
    App("backup", 873, "lognormal", 40e6, 0.6, floor=2e6, write=65536, local=False),
    App("telemetry", 4317, "loguniform", 500, 8000, local=True),
    App("camera", 1935, "uniform", 1.2e6, 3e6, write=65536, local=False),
    App("api", 8080, "lognormal", 30e3, 1.2, local=True),
    App("logship", 9200, "lognormal", 300e3, 1.0, local=True),
    App("pos", 8443, "loguniform", 300, 20000, write=4096, local=False),
    App("fileshare", 445, "cdf", write=65536, local=False),
)


@dataclass(frozen=True)
class Flow:
    site: int
    t: float
    app: str
    size: int
    pkts_ok: bool              # reached the decision packet (shorter flows keep the default route)
    feats: DatapathFeatures


def _hint(app: App, size: int) -> tuple[int, int] | None:
    if not app.local:
        return None
    write = size if app.write is None else min(size, app.write)
    return write, min(size, HINT_SNDBUF)


def site_trace(site: int, seconds: float, k: int, threshold: int, cdf: SizeCdf, seed: int,
               flows_per_s: float = 1.5, apps: Sequence[App] = APPS) -> list[Flow]:
    """One site's flows in start order, each with the features the datapath would see."""
    rng = np.random.default_rng([seed, site])
    chosen = [a for a in apps if rng.random() < 0.75] or [apps[0]]
    shares = rng.dirichlet(np.ones(len(chosen)))
    starts: list[tuple[float, App, str, str]] = []
    for app, share in zip(chosen, shares, strict=True):
        n = rng.poisson(flows_per_s * seconds * share)
        pods = [f"10.{site}.{i}.{rng.integers(2, 250)}" for i in range(int(rng.integers(2, 5)))]
        dst = f"172.{16 + site % 16}.{rng.integers(0, 255)}.0"
        for t in rng.uniform(0, seconds, n):
            starts.append((float(t), app, str(rng.choice(pods)), dst))
    starts.sort(key=lambda x: x[0])
    hist = History(threshold)
    pending: list[tuple[float, int, object, int]] = []  # (end time, seq, key, size)
    out: list[Flow] = []
    for seq, (t, app, src, dst) in enumerate(starts):
        while pending and pending[0][0] <= t:
            _, _, key, size = heapq.heappop(pending)
            hist.observe(key, size, t)  # type: ignore[arg-type]
        size = int(app.sample(rng, 1, cdf)[0])
        key = hist.key(src, dst, app.port, 6)
        rec = first_packets(size, rng, k, write=app.write if app.write is not None else 1 << 30)
        feats = packet_features(rec, k, hist.estimate(key), _hint(app, size))
        out.append(Flow(site, t, app.name, size, rec.pkts >= k, feats))
        # finish time: the flow at ~20 Mbit/s plus a round trip
        heapq.heappush(pending, (t + 0.05 + size * 8 / 20e6, seq, key, size))
    return out


def trace(sites: int, seconds: float, k: int, threshold: int, cdf_path: str | Path, seed: int,
          flows_per_s: float = 1.5) -> list[Flow]:
    cdf = SizeCdf.load(cdf_path)
    out: list[Flow] = []
    for s in range(sites):
        out += site_trace(s, seconds, k, threshold, cdf, seed, flows_per_s)
    return out
