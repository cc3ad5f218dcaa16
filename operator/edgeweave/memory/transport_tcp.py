"""TCP client of the page server: authenticated, pipelined, pages received straight into the region."""

from __future__ import annotations

import secrets
import socket
import ssl
import sys
import threading
from array import array
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .hashing import DIGEST, as_ints, mismatches, raw_sums
from .protocol import AuthError, Conn, Msg, ProtocolError, client_mac, pack, server_mac
from .store import runs_of

if TYPE_CHECKING:
    import numpy as np

# Page lists are plain sequences of ints here (numpy arrays work too): the recovery command
# does not import numpy on its fast path (see hashing.py).
_BITS = [tuple(j for j in range(8) if byte & (0x80 >> j)) for byte in range(256)]  # np.unpackbits order


def _u32le(pages: list[int]) -> bytes:
    a = array("I", pages)
    if a.itemsize != 4:  # pragma: no cover - every platform we run has a 4-byte unsigned int
        raise RuntimeError("array('I') is not 32-bit here")
    if sys.byteorder != "little":  # pragma: no cover
        a.byteswap()
    return a.tobytes()


@dataclass(frozen=True)
class Endpoint:
    host: str
    port: int

    @classmethod
    def parse(cls, s: str) -> Endpoint:
        host, _, port = s.rpartition(":")
        return cls(host.strip("[]"), int(port))


class ChecksumMismatch(Exception):
    def __init__(self, pages: list[int]) -> None:
        super().__init__(f"{len(pages)} page(s) arrived with a checksum that does not match: {pages[:8]}")
        self.pages = pages


class PageClient:
    def __init__(self, ep: Endpoint, region: str, token: bytes, timeout: float = 5.0,
                 tls: ssl.SSLContext | None = None) -> None:
        raw = socket.create_connection((ep.host, ep.port), timeout=timeout)
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        sock = tls.wrap_socket(raw, server_hostname=ep.host) if tls else raw
        self.conn = Conn(sock)
        self.region = region
        try:
            kind, _, hello, _ = self.conn.recv_head()
            if kind != Msg.HELLO:
                raise ProtocolError("expected HELLO")
            snonce = bytes.fromhex(hello["nonce"])
            cnonce = secrets.token_bytes(32)
            self.conn.send(pack(Msg.AUTH, 0, {"region": region, "nonce": cnonce.hex(),
                                              "mac": client_mac(token, snonce, cnonce, region)}))
            kind, _, info, _ = self.conn.recv_head()
            if kind == Msg.ERR:
                raise AuthError(f"page server refused region {region!r}: {info.get('error')}")
            if not secrets.compare_digest(str(info.get("mac", "")), server_mac(token, snonce, cnonce, region)):
                raise AuthError("page server could not prove it holds the region's token")
        except BaseException:
            self.conn.close()
            raise
        self.info = info
        self.page_size = int(info["page_size"])
        self.npages = int(info["npages"])
        self.algo = str(info["algo"])

    @property
    def rx(self) -> int:
        return self.conn.rx

    def _dirty_bits(self, epoch: int) -> tuple[bytes, dict]:
        self.conn.send(pack(Msg.DIRTY, 1, {"since": epoch}))
        kind, _, meta, plen = self.conn.recv_head()
        if kind == Msg.ERR:
            raise ProtocolError(f"dirty list refused: {meta.get('error')}")
        return self.conn.recv_exact(plen), meta

    def dirty_since(self, epoch: int) -> tuple[np.ndarray, dict]:
        """The pages written since `epoch` as a boolean array (one per page)."""
        import numpy as np

        bits, meta = self._dirty_bits(epoch)
        return np.unpackbits(np.frombuffer(bits, np.uint8), count=self.npages).astype(bool), meta

    def dirty_pages(self, epoch: int) -> tuple[list[int], dict]:
        """The pages written since `epoch`, ascending (what `dirty_since` marks, without numpy)."""
        bits, meta = self._dirty_bits(epoch)
        pages: list[int] = []
        for i, byte in enumerate(bits):
            if byte:
                pages.extend(8 * i + j for j in _BITS[byte])
        while pages and pages[-1] >= self.npages:  # the bitmap's padding
            pages.pop()
        return pages, meta

    def fetch(self, batches: Sequence[Sequence[int]], dest: memoryview, depth: int = 8,
              on_batch: Callable[[list[int]], None] | None = None) -> None:
        """Fetch each batch (ascending page indices) into dest, `depth` requests in flight.

        One thread sends and receives: an SSL connection must not be read and written from two
        threads at once (OpenSSL objects are not safe for that; it showed as spurious EOFs under
        load). Requests are small, so sending the next one after each reply keeps the pipe full.
        """
        ps = self.page_size
        sent = 0
        batches = [as_ints(b) for b in batches]

        def send_next() -> None:
            nonlocal sent
            body = _u32le(batches[sent])
            self.conn.send(pack(Msg.PAGES, sent, {}, len(body)), body)
            sent += 1

        while sent < min(depth, len(batches)):
            send_next()
        for b in batches:
            kind, _, meta, plen = self.conn.recv_head()
            if kind == Msg.ERR:
                raise ProtocolError(f"pages refused: {meta.get('error')}")
            n = len(b)
            if meta.get("n") != n or plen != n * (DIGEST + ps):
                raise ProtocolError("page reply does not match the request")
            if sent < len(batches):
                send_next()
            sums = self.conn.recv_exact(n * DIGEST)
            for _, first, count in runs_of(b):
                self.conn.recv_into(dest[first * ps:(first + count) * ps])
            got = raw_sums(dest, ps, b, algo=self.algo, threads=1)
            if got != sums:
                raise ChecksumMismatch([b[i] for i in mismatches(got, sums)])
            if on_batch:
                on_batch(b)

    def fetch_compact(self, pages: Sequence[int], dest: memoryview) -> None:
        """One request: `pages` (ascending) into dest one after another, each checked against its sum."""
        pages = as_ints(pages)
        ps, n = self.page_size, len(pages)
        body = _u32le(pages)
        self.conn.send(pack(Msg.PAGES, 0, {}, len(body)), body)
        kind, _, meta, plen = self.conn.recv_head()
        if kind == Msg.ERR:
            raise ProtocolError(f"pages refused: {meta.get('error')}")
        if meta.get("n") != n or plen != n * (DIGEST + ps):
            raise ProtocolError("page reply does not match the request")
        sums = self.conn.recv_exact(n * DIGEST)
        self.conn.recv_into(dest[:n * ps])
        got = raw_sums(dest, ps, range(n), algo=self.algo, threads=1)
        if got != sums:
            raise ChecksumMismatch([pages[i] for i in mismatches(got, sums)])

    def close(self) -> None:
        self.conn.close()


def batches_of(pages: Sequence[int], batch: int) -> list[Sequence[int]]:
    return [pages[i:i + batch] for i in range(0, len(pages), batch)]


def fetch_parallel(ep: Endpoint, region: str, token: bytes, pages: Sequence[int], dest: memoryview,
                   connections: int = 4, batch: int = 256, depth: int = 8, timeout: float = 10.0,
                   tls: ssl.SSLContext | None = None, first: PageClient | None = None) -> int:
    """Fetch `pages` over up to `connections` connections; returns bytes received. Raises on any failure."""
    if len(pages) == 0:
        return 0
    bs = batches_of(sorted(as_ints(pages)), batch)
    nconn = max(1, min(connections, len(bs)))
    # Interleave batches over connections so each connection works across the whole region.
    shares = [bs[i::nconn] for i in range(nconn)]
    clients: list[PageClient] = []
    errors: list[BaseException] = []
    lock = threading.Lock()
    total = [0]

    def run(i: int) -> None:
        try:
            c = first if (i == 0 and first is not None) else PageClient(ep, region, token, timeout, tls)
            with lock:
                clients.append(c)
            before = c.rx if c is first else 0  # count the handshake of new connections too
            c.fetch(shares[i], dest, depth)
            with lock:
                total[0] += c.rx - before
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(nconn)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for c in clients:
        if c is not first:
            c.close()
    if errors:
        raise errors[0]
    return total[0]
