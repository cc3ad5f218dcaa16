"""The few bpf(2) commands the agent needs, through ctypes (no libbpf binding required)."""

from __future__ import annotations

import ctypes
import errno
import os
import struct
from collections.abc import Iterator

_SYS_BPF = {"x86_64": 321, "aarch64": 280}[os.uname().machine]
_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long

BPF_MAP_LOOKUP_ELEM = 1
BPF_MAP_UPDATE_ELEM = 2
BPF_MAP_DELETE_ELEM = 3
BPF_MAP_GET_NEXT_KEY = 4
BPF_OBJ_PIN = 6
BPF_OBJ_GET = 7
BPF_RAW_TRACEPOINT_OPEN = 17
BPF_MAP_LOOKUP_AND_DELETE_ELEM = 21
BPF_MAP_LOOKUP_BATCH = 24

BPF_ANY = 0
BPF_NOEXIST = 1
BPF_EXIST = 2

_ATTR_SIZE = 128


def _call(cmd: int, attr: bytes) -> int:
    buf = ctypes.create_string_buffer(attr.ljust(_ATTR_SIZE, b"\0"), _ATTR_SIZE)
    ret = _libc.syscall(_SYS_BPF, cmd, buf, _ATTR_SIZE)
    if ret < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return int(ret)


def _call_buf(cmd: int, buf: ctypes.Array[ctypes.c_char]) -> int:
    ret = _libc.syscall(_SYS_BPF, cmd, buf, _ATTR_SIZE)
    if ret < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return int(ret)


def _addr(b: ctypes.Array[ctypes.c_char] | None) -> int:
    return 0 if b is None else ctypes.addressof(b)


def obj_get(path: str) -> int:
    """Open a pinned map or program; returns a file descriptor (close it with os.close)."""
    p = ctypes.create_string_buffer(path.encode())
    return _call(BPF_OBJ_GET, struct.pack("=QII", ctypes.addressof(p), 0, 0))


def obj_pin(fd: int, path: str) -> None:
    p = ctypes.create_string_buffer(path.encode())
    _call(BPF_OBJ_PIN, struct.pack("=QII", ctypes.addressof(p), fd, 0))


def raw_tracepoint_open(prog_fd: int) -> int:
    """Attach a tp_btf program (its tracepoint is in its BTF attach target); returns the link fd."""
    return _call(BPF_RAW_TRACEPOINT_OPEN, struct.pack("=QII", 0, prog_fd, 0))


class Map:
    """A pinned BPF map with fixed key/value sizes (bytes in, bytes out)."""

    def __init__(self, path: str, key_size: int, value_size: int) -> None:
        self.path = path
        self.key_size = key_size
        self.value_size = value_size
        self.fd = obj_get(path)
        self._k = ctypes.create_string_buffer(max(key_size, 1))
        self._k2 = ctypes.create_string_buffer(max(key_size, 1))
        self._v = ctypes.create_string_buffer(value_size)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> Map:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _elem(self, cmd: int, key: bytes | None, value_buf: int, flags: int = 0) -> None:
        if key is not None:
            ctypes.memmove(self._k, key, self.key_size)
        _call(cmd, struct.pack("=IIQQQ", self.fd, 0, _addr(self._k) if key is not None else 0,
                               value_buf, flags))

    def lookup(self, key: bytes) -> bytes | None:
        try:
            self._elem(BPF_MAP_LOOKUP_ELEM, key, _addr(self._v))
        except OSError as e:
            if e.errno == errno.ENOENT:
                return None
            raise
        return self._v.raw

    def update(self, key: bytes, value: bytes, flags: int = BPF_ANY) -> None:
        v = ctypes.create_string_buffer(value, self.value_size)
        self._elem(BPF_MAP_UPDATE_ELEM, key, ctypes.addressof(v), flags)

    def delete(self, key: bytes) -> bool:
        try:
            self._elem(BPF_MAP_DELETE_ELEM, key, 0)
        except OSError as e:
            if e.errno == errno.ENOENT:
                return False
            raise
        return True

    def pop(self) -> bytes | None:
        """Queue maps: take the oldest value, or None when empty."""
        try:
            _call(BPF_MAP_LOOKUP_AND_DELETE_ELEM,
                  struct.pack("=IIQQQ", self.fd, 0, 0, _addr(self._v), 0))
        except OSError as e:
            if e.errno == errno.ENOENT:
                return None
            raise
        return self._v.raw

    def keys(self) -> Iterator[bytes]:
        prev: bytes | None = None
        while True:
            if prev is not None:
                ctypes.memmove(self._k, prev, self.key_size)
            try:
                _call(BPF_MAP_GET_NEXT_KEY, struct.pack("=IIQQQ", self.fd, 0,
                                                         _addr(self._k) if prev is not None else 0,
                                                         _addr(self._k2), 0))
            except OSError as e:
                if e.errno == errno.ENOENT:
                    return
                raise
            prev = self._k2.raw
            yield prev

    def items(self, batch: int = 1024) -> list[tuple[bytes, bytes]]:
        """All entries, read with BPF_MAP_LOOKUP_BATCH (one syscall per `batch` entries)."""
        out: list[tuple[bytes, bytes]] = []
        keys = ctypes.create_string_buffer(self.key_size * batch)
        vals = ctypes.create_string_buffer(self.value_size * batch)
        in_tok = ctypes.create_string_buffer(8)
        out_tok = ctypes.create_string_buffer(8)
        first = True
        while True:
            attr = ctypes.create_string_buffer(
                struct.pack("=QQQQIIQQ", 0 if first else ctypes.addressof(in_tok), ctypes.addressof(out_tok),
                            ctypes.addressof(keys), ctypes.addressof(vals), batch, self.fd, 0, 0),
                _ATTR_SIZE)
            done = False
            try:
                _call_buf(BPF_MAP_LOOKUP_BATCH, attr)
            except OSError as e:
                if e.errno != errno.ENOENT:
                    raise
                done = True
            count = struct.unpack_from("=I", attr.raw, 32)[0]
            kr, vr = keys.raw, vals.raw
            for i in range(count):
                out.append((kr[i * self.key_size:(i + 1) * self.key_size],
                            vr[i * self.value_size:(i + 1) * self.value_size]))
            if done or count == 0:
                return out
            ctypes.memmove(in_tok, out_tok, 8)
            first = False
