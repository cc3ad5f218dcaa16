"""The BPF maps as Python values: the struct layouts shared with bpf/flows.h."""

from __future__ import annotations

import socket
import struct
import zlib
from dataclasses import astuple, dataclass, replace
from enum import IntEnum

from ..flows.features import DatapathFeatures

# struct flow_key { u32 saddr, daddr; u16 sport, dport; u8 proto; u8 pad[3]; } (addresses and
# ports in network byte order, exactly as the program copies them from the packet)
KEY = struct.Struct("=4s4s2s2sB3x")
# struct flow_val, see flows.h
VAL = struct.Struct("=QQQII10I5B3x")
# struct cfg
CFG = struct.Struct("=12I")
TREE_NODE = struct.Struct("=IIHHI")
HIST_KEY = struct.Struct("=4s4s2sBx")
HIST_VAL = struct.Struct("=III")
HINT_VAL = struct.Struct("=QQQ")
assert KEY.size == 16 and VAL.size == 80 and CFG.size == 48 and TREE_NODE.size == 16
assert HIST_KEY.size == 12 and HIST_VAL.size == 12 and HINT_VAL.size == 24

TREE_NODES = 256
SLOTS = 32
LEAF = 0xFFFFFFFF
HIST_UNKNOWN = 500
MODE_USER, MODE_DATAPATH = 0, 1

TCP_FIN, TCP_SYN, TCP_RST, TCP_PSH, TCP_ACK = 0x01, 0x02, 0x04, 0x08, 0x10


class Cls(IntEnum):
    Undecided = 0
    Mouse = 1
    Elephant = 2
    Medium = 3


class DecidedBy(IntEnum):
    Nothing = 0
    History = 1
    Tree = 2
    TreeHint = 3
    User = 4


@dataclass(frozen=True, slots=True)
class FlowKey:
    saddr: str
    daddr: str
    sport: int
    dport: int
    proto: int

    def pack(self) -> bytes:
        return KEY.pack(socket.inet_aton(self.saddr), socket.inet_aton(self.daddr),
                        self.sport.to_bytes(2, "big"), self.dport.to_bytes(2, "big"), self.proto)

    @classmethod
    def unpack(cls, raw: bytes) -> FlowKey:
        s, d, sp, dp, proto = KEY.unpack(raw)
        return cls(socket.inet_ntoa(s), socket.inet_ntoa(d), int.from_bytes(sp, "big"),
                   int.from_bytes(dp, "big"), proto)

    def hash(self) -> int:
        """A stable 5-tuple hash (for the Hash strategy and tie-breaks), unlike Python's salted hash()."""
        return zlib.crc32(self.pack())

    def __str__(self) -> str:
        return f"{self.proto}:{self.saddr}:{self.sport}->{self.daddr}:{self.dport}"


@dataclass(frozen=True, slots=True)
class FlowEntry:
    first_ns: int
    last_ns: int
    bytes: int
    pkts: int
    mark: int = 0
    f_bytes: int = 0
    f_max_size: int = 0
    f_data_pkts: int = 0
    f_min_data: int = 0
    f_psh: int = 0
    f_burst: int = 0
    hist_p: int = HIST_UNKNOWN
    hist_n: int = 0
    hint_write: int = 0
    hint_backlog: int = 0
    flags_or: int = 0
    cls: int = 0
    decided_by: int = 0
    decided_at: int = 0
    hint_seen: int = 0

    @classmethod
    def unpack(cls, raw: bytes) -> FlowEntry:
        return cls(*VAL.unpack(raw))

    def pack(self) -> bytes:
        return VAL.pack(*astuple(self))

    def with_mark(self, mark: int) -> FlowEntry:
        return replace(self, mark=mark)

    def decided(self, cls: Cls, mark: int, by: DecidedBy) -> FlowEntry:
        return replace(self, cls=int(cls), mark=mark, decided_by=int(by), decided_at=min(self.pkts, 255))

    @property
    def ended(self) -> bool:
        return bool(self.flags_or & (TCP_FIN | TCP_RST))

    def features(self, hint: tuple[int, int] | None = None) -> DatapathFeatures:
        """What the tree reads; `hint` (write, backlog) overrides the entry's own when the
        user-space fallback looks the hint up itself."""
        seen = bool(self.hint_seen) or hint is not None
        w, b = hint if hint is not None else (self.hint_write, self.hint_backlog)
        return DatapathFeatures(bytes_k=self.f_bytes, max_size=self.f_max_size, data_pkts=self.f_data_pkts,
                                min_data=self.f_min_data, psh=self.f_psh, end=int(self.ended),
                                burst=self.f_burst, hist_p=self.hist_p, hist_n=self.hist_n,
                                hint_write=w, hint_backlog=b, hint_seen=int(seen))


def cfg_pack(mode: int, decision_packets: int, threshold: int, mice_mark: int, slot_count: int,
             dst_mask: int, hist_min_n: int, hist_hi: int, hist_lo: int, mice_bytes: int = 0,
             medium_hi: int = 500) -> bytes:
    """struct cfg; dst_mask is a prefix length, stored as the network-order mask the program ANDs."""
    mask = (0xFFFFFFFF << (32 - dst_mask)) & 0xFFFFFFFF if dst_mask else 0
    mask_ne = struct.unpack("=I", struct.pack("!I", mask))[0]
    return CFG.pack(mode, decision_packets, min(threshold, 0xFFFFFFFF), mice_mark, slot_count, 0, mask_ne,
                    hist_min_n, hist_hi, hist_lo, mice_bytes, medium_hi)


def hist_key(saddr: str, dprefix: str, dport: int, proto: int = 6) -> bytes:
    return HIST_KEY.pack(socket.inet_aton(saddr), socket.inet_aton(dprefix), dport.to_bytes(2, "big"), proto)
