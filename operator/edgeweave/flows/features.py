"""What the datapath knows about a flow when it decides, as the feature vector the tree reads.

Three signals, in the order the datapath gets them:
  history  (packet 1)  share of elephants among finished flows with the same source,
                       destination prefix and port (flows/history.py, learned by the agent);
  hint     (packet k)  the largest write the application handed to TCP and the largest
                       unacknowledged backlog, from the tcp_sendmsg_locked program — only for
                       sockets on this host;
  packets  (packet k)  aggregates of the first k LAN->WAN packets: sizes, payload count,
                       PSH, FIN/RST, and how fast the payload packets left.
The vector is integers in the datapath's own units (gaps in 1.024 us), computed the same
way in bpf/flows.bpf.c (F_* in bpf/flows.h, same order as DATAPATH_FEATURES) and here, so a
tree exported from Python takes the same branches in the kernel.
"""

from __future__ import annotations

from dataclasses import astuple, dataclass

K_MAX = 8  # most packets a decision may wait for

_FIN, _SYN, _RST, _PSH = 0x01, 0x02, 0x04, 0x08
# IP length of a packet with no TCP payload is 40..60 bytes (header + options).
_PURE_MAX = 80
HIST_UNKNOWN = 500  # permille a flow without history reads (bpf/flows.h EWF_HIST_UNKNOWN)

DATAPATH_FEATURES = ("bytes_k", "max_size", "data_pkts", "min_data", "psh", "end", "burst",
                     "hist_p", "hist_n", "hint_write", "hint_backlog", "hint_seen")
PACKET_FEATURES = DATAPATH_FEATURES[:7]
U32 = 0xFFFFFFFF


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


@dataclass(frozen=True, slots=True)
class DatapathFeatures:
    bytes_k: int
    max_size: int
    data_pkts: int
    min_data: int
    psh: int
    end: int
    burst: int          # 1.024 us units
    hist_p: int = HIST_UNKNOWN
    hist_n: int = 0
    hint_write: int = 0
    hint_backlog: int = 0
    hint_seen: int = 0

    def vector(self) -> list[int]:
        return [min(int(x), U32) for x in astuple(self)]


def packet_features(rec: FlowRecord, k: int, hist: tuple[int, int] | None = None,
                    hint: tuple[int, int] | None = None) -> DatapathFeatures:
    """The vector the datapath computes after the first k packets of `rec`; `hist` is
    (permille, n) at the flow's first packet, `hint` (write, backlog) at its k-th."""
    n = min(k, rec.pkts)
    sizes, flags = rec.sizes[:n], rec.flags[:n]
    gaps = [int(g / 1.024) for g in rec.gaps_us[:n]]
    data = [i for i, s in enumerate(sizes) if s > _PURE_MAX]
    burst = sum(gaps[i] for i in data[1:])
    hp, hn = hist if hist is not None else (HIST_UNKNOWN, 0)
    hw, hb = hint if hint is not None else (0, 0)
    return DatapathFeatures(bytes_k=sum(sizes), max_size=max(sizes, default=0), data_pkts=len(data),
                            min_data=min((sizes[i] for i in data), default=0),
                            psh=sum(1 for f in flags if f & _PSH),
                            end=int(any(f & (_FIN | _RST) for f in flags)), burst=burst,
                            hist_p=hp, hist_n=hn, hint_write=hw, hint_backlog=hb,
                            hint_seen=int(hint is not None))
