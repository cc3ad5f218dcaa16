"""The BPF flow table as Python values: the struct layouts shared with bpf/flows.bpf.c."""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass

from ..flows.features import K_MAX, FlowRecord

# struct flow_key { u32 saddr, daddr; u16 sport, dport; u8 proto; u8 pad[3]; } (addresses and
# ports in network byte order, exactly as the program copies them from the packet)
KEY = struct.Struct("=4s4s2s2sB3x")
# struct flow_val, see flows.bpf.c
VAL = struct.Struct(f"=QQQII{K_MAX}H{K_MAX}I{K_MAX}BB7x")
CFG = struct.Struct("=II")
assert KEY.size == 16 and VAL.size == 96

TCP_FIN, TCP_SYN, TCP_RST, TCP_PSH, TCP_ACK = 0x01, 0x02, 0x04, 0x08, 0x10


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
        import zlib

        return zlib.crc32(self.pack())

    def __str__(self) -> str:
        return f"{self.proto}:{self.saddr}:{self.sport}->{self.daddr}:{self.dport}"


@dataclass(frozen=True, slots=True)
class FlowEntry:
    first_ns: int
    last_ns: int
    bytes: int
    pkts: int
    mark: int
    sizes: tuple[int, ...]
    gaps: tuple[int, ...]
    flags: tuple[int, ...]
    flags_or: int

    @classmethod
    def unpack(cls, raw: bytes) -> FlowEntry:
        f = VAL.unpack(raw)
        k = K_MAX
        return cls(first_ns=f[0], last_ns=f[1], bytes=f[2], pkts=f[3], mark=f[4],
                   sizes=tuple(f[5:5 + k]), gaps=tuple(f[5 + k:5 + 2 * k]),
                   flags=tuple(f[5 + 2 * k:5 + 3 * k]), flags_or=f[5 + 3 * k])

    def pack(self) -> bytes:
        return VAL.pack(self.first_ns, self.last_ns, self.bytes, self.pkts, self.mark,
                        *self.sizes, *self.gaps, *self.flags, self.flags_or)

    def with_mark(self, mark: int) -> FlowEntry:
        return FlowEntry(self.first_ns, self.last_ns, self.bytes, self.pkts, mark, self.sizes,
                         self.gaps, self.flags, self.flags_or)

    @property
    def ended(self) -> bool:
        return bool(self.flags_or & (TCP_FIN | TCP_RST))

    def record(self, key: FlowKey) -> FlowRecord:
        """The classifier's view of this entry (gaps converted to microseconds)."""
        n = min(self.pkts, K_MAX)
        return FlowRecord(sizes=self.sizes[:n], gaps_us=tuple(g * 1.024 for g in self.gaps[:n]),
                          flags=self.flags[:n], sport=key.sport, dport=key.dport, proto=key.proto)
