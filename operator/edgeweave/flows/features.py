"""What a flow shows in its first packets, and the feature vector the classifier reads.

Only things the datapath records for the first packets of a flow in the LAN->WAN
direction: IP packet sizes, inter-arrival gaps, TCP flags. Ports are recorded too but
are not model features: the training flows come from a size distribution that carries
no port information, so any port rule would be learned from whatever a generator made up.
"""

from __future__ import annotations

from dataclasses import dataclass

K_MAX = 8  # feature slots in the BPF flow entry (EWF_K in flows.bpf.c)

_FIN, _SYN, _RST, _PSH = 0x01, 0x02, 0x04, 0x08
# IP length of a packet with no TCP payload is 40..60 bytes (header + options).
_PURE_MAX = 80


@dataclass(frozen=True, slots=True)
class FlowRecord:
    """The first min(pkts, K_MAX) packets of a flow, LAN->WAN direction."""

    sizes: tuple[int, ...]        # IP total length
    gaps_us: tuple[float, ...]    # since the previous packet of the flow; gaps_us[0] == 0
    flags: tuple[int, ...]        # TCP flags byte (0 for UDP)
    sport: int = 0
    dport: int = 0
    proto: int = 6

    @property
    def pkts(self) -> int:
        return len(self.sizes)


def feature_names(k: int) -> list[str]:
    return ([f"size_{i}" for i in range(k)] + [f"gap_us_{i}" for i in range(1, k)]
            + ["bytes_k", "max_size", "data_pkts", "min_data_size", "psh_count", "fin_or_rst",
               "burst_us"])


def feature_vector(rec: FlowRecord, k: int) -> list[float]:
    """Features after the first k packets; missing packets (a flow shorter than k) read as 0."""
    sizes = list(rec.sizes[:k]) + [0] * (k - min(k, rec.pkts))
    gaps = list(rec.gaps_us[:k]) + [0.0] * (k - min(k, rec.pkts))
    flags = list(rec.flags[:k])
    data = [s for s in sizes if s > _PURE_MAX]
    # time the data packets took to leave: a bulk sender emits its initial window back to back
    data_idx = [i for i, s in enumerate(sizes) if s > _PURE_MAX]
    burst = sum(gaps[i] for i in data_idx[1:]) if len(data_idx) > 1 else 0.0
    return ([float(s) for s in sizes] + [float(g) for g in gaps[1:]]
            + [float(sum(sizes)), float(max(sizes) if sizes else 0), float(len(data)),
               float(min(data) if data else 0), float(sum(1 for f in flags if f & _PSH)),
               float(any(f & (_FIN | _RST) for f in flags)), float(burst)])
