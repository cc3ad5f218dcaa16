"""Training flows: sizes from a published CDF, first packets from how TCP sends them.

A flow of S bytes is a TCP connection whose LAN-side host sends S bytes and closes.
The first packets are what Linux TCP emits for that: SYN, the handshake ACK one RTT
later, then data segments of min(MSS, remaining) bytes back to back within the initial
window, PSH on the last segment of each application write, and a FIN after the last
byte. Everything that is not a consequence of S (RTT, MSS, write size, think time,
jitter) is drawn independently of S, so the only information about the size in the
first packets is what TCP itself reveals. The label is never written into a feature.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .features import K_MAX, FlowRecord

_SYN, _ACK, _PSH, _FIN = 0x02, 0x10, 0x08, 0x01
_IW = 10  # Linux initial congestion window (segments)


@dataclass(frozen=True)
class SizeCdf:
    sizes: np.ndarray     # bytes, increasing
    cum: np.ndarray       # cumulative probability in [0, 1]

    @classmethod
    def load(cls, path: str | Path) -> SizeCdf:
        rows = []
        for line in Path(path).read_text().splitlines():
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            a, b = line.split()[:2]
            rows.append((float(a), float(b)))
        arr = np.array(rows)
        cum = arr[:, 1] / arr[-1, 1]
        return cls(sizes=arr[:, 0], cum=cum)

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        # piecewise-linear inverse CDF, as the pFabric/HPCC simulators read these files
        u = rng.random(n)
        s = np.interp(u, self.cum, self.sizes)
        return np.maximum(1, np.round(s)).astype(np.int64)

    def fraction_above(self, threshold: float) -> float:
        return float(1 - np.interp(threshold, self.sizes, self.cum))


def first_packets(size: int, rng: np.random.Generator, k: int = K_MAX, write: int | None = None) -> FlowRecord:
    """The first k LAN->WAN packets of a TCP flow that sends `size` bytes (in writes of
    `write` bytes; drawn at random when None)."""
    rtt_us = float(np.exp(rng.uniform(np.log(2_000), np.log(120_000))))
    ts_opt = rng.random() < 0.9                      # TCP timestamps (12 bytes per segment)
    mss = int(rng.choice([1460, 1448, 1400, 1360, 1380])) - (12 if ts_opt else 0)
    hdr = 40 + (12 if ts_opt else 0)
    drawn = int(rng.choice([1024, 4096, 16384, 65536, 1 << 30]))  # app write size
    write = drawn if write is None else write
    think_us = float(rng.exponential(300.0))        # app delay between connect and first write
    link_bps = float(rng.choice([100e6, 1e9, 10e9]))  # LAN speed: spacing of back-to-back segments
    sizes: list[int] = [60 if ts_opt else 44]
    gaps: list[float] = [0.0]
    flags: list[int] = [_SYN]
    sizes.append(hdr)
    gaps.append(rtt_us + float(rng.exponential(50.0)))
    flags.append(_ACK)
    sent, segs, first = 0, 0, True
    while sent < size and len(sizes) < k:
        seg = min(mss, size - sent)
        in_write = (sent % write) + seg
        end_of_write = in_write >= write or sent + seg >= size
        if first:
            gap = think_us
        elif segs % _IW == 0:
            gap = rtt_us  # wait for ACKs before the next window
        else:
            gap = (seg + hdr) * 8 / link_bps * 1e6 + float(rng.exponential(2.0))
        sizes.append(seg + hdr)
        gaps.append(gap)
        flags.append(_ACK | (_PSH if end_of_write else 0))
        sent += seg
        segs += 1
        first = False
    if sent >= size and len(sizes) < k:
        sizes.append(hdr)
        gaps.append(float(rng.exponential(100.0)))
        flags.append(_FIN | _ACK)
    return FlowRecord(sizes=tuple(sizes[:k]), gaps_us=tuple(gaps[:k]), flags=tuple(flags[:k]),
                      sport=int(rng.integers(32768, 61000)), dport=443, proto=6)


def dataset(cdf: SizeCdf, n: int, seed: int) -> tuple[list[FlowRecord], np.ndarray]:
    rng = np.random.default_rng(seed)
    sizes = cdf.sample(rng, n)
    return [first_packets(int(s), rng) for s in sizes], sizes
