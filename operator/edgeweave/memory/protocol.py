"""Wire format of the page server (TCP; also the control channel of the RDMA transport).

Every message: a 16-byte header (type, flags, request id, body length) and a body made of a
4-byte JSON length, the JSON, then raw bytes (a dirty bitmap, checksums, pages). Requests on
one connection are answered in order, so a client may pipeline as many as it likes.

Handshake (per connection, per region): the server sends HELLO with a nonce; the client
answers AUTH with the region name, its own nonce and HMAC-SHA256(token, ...); the server
answers OK with the region's geometry and its own HMAC over the client's nonce (so the client
knows it talks to an agent that holds the same token), or ERR and closes. The token itself
never crosses the wire.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import socket
import struct
from enum import IntEnum

HDR = struct.Struct("!BBHIQ")
JLEN = struct.Struct("!I")
MAX_JSON = 1 << 20


class Msg(IntEnum):
    HELLO = 1
    AUTH = 2
    OK = 3
    ERR = 4
    DIRTY = 6
    PAGES = 7
    RDMA = 8


class ProtocolError(Exception):
    pass


class AuthError(ProtocolError):
    pass


def client_mac(token: bytes, server_nonce: bytes, client_nonce: bytes, region: str) -> str:
    return hmac.new(token, b"ewm-client\0" + server_nonce + client_nonce + region.encode(),
                    hashlib.sha256).hexdigest()


def server_mac(token: bytes, server_nonce: bytes, client_nonce: bytes, region: str) -> str:
    return hmac.new(token, b"ewm-server\0" + client_nonce + server_nonce + region.encode(),
                    hashlib.sha256).hexdigest()


def pack(kind: Msg, req_id: int, meta: dict, payload_len: int = 0) -> bytes:
    """Header + JSON part of a message; `payload_len` raw bytes are sent after it by the caller."""
    j = json.dumps(meta, separators=(",", ":")).encode()
    return HDR.pack(int(kind), 0, 0, req_id, JLEN.size + len(j) + payload_len) + JLEN.pack(len(j)) + j


class Conn:
    """A socket with exact reads and a count of bytes received (what 'bytes read' reports)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.rx = 0
        self.tx = 0

    def send(self, *parts: bytes | memoryview) -> None:
        for p in parts:
            self.sock.sendall(p)
            self.tx += len(p)

    def recv_into(self, mv: memoryview) -> None:
        got = 0
        while got < len(mv):
            n = self.sock.recv_into(mv[got:])
            if n == 0:
                raise ConnectionError("peer closed the connection")
            got += n
        self.rx += got

    def recv_exact(self, n: int) -> bytes:
        b = bytearray(n)
        self.recv_into(memoryview(b))
        return bytes(b)

    def recv_head(self) -> tuple[Msg, int, dict, int]:
        """Read a message up to its payload; returns (type, req_id, meta, payload_len)."""
        kind, _, _, req_id, length = HDR.unpack(self.recv_exact(HDR.size))
        (jl,) = JLEN.unpack(self.recv_exact(JLEN.size))
        if jl > MAX_JSON or JLEN.size + jl > length:
            raise ProtocolError("bad frame")
        meta = json.loads(self.recv_exact(jl)) if jl else {}
        try:
            k = Msg(kind)
        except ValueError as exc:
            raise ProtocolError(f"unknown message type {kind}") from exc
        return k, req_id, meta, length - JLEN.size - jl

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass
