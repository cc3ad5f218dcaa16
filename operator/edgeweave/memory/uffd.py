"""Kernel-assisted write tracking: userfaultfd write-protect in async mode + PAGEMAP_SCAN.

With UFFD_FEATURE_WP_ASYNC the kernel resolves write-protect faults by itself (no fault
handler thread): the first write to a protected page just clears the protection and the
page shows up as PAGE_IS_WRITTEN in /proc/self/pagemap. PAGEMAP_SCAN with
PM_SCAN_WP_MATCHING reports those pages and write-protects them again in the same walk,
so "get and re-protect" is one atomic step per page: a write racing the scan is either
reported now or faults again and is reported by the next scan.

Linux 6.7+. A userfaultfd only covers the process that created it, so this runs inside
the workload (the region library), never in the agent.
"""

from __future__ import annotations

import ctypes
import os
import platform
from dataclasses import dataclass

# --- ABI constants (include/uapi/linux/userfaultfd.h, fs.h) -------------------------------

_NR_USERFAULTFD = {"x86_64": 323, "aarch64": 282}
UFFD_USER_MODE_ONLY = 1
O_CLOEXEC = 0o2000000
O_NONBLOCK = 0o4000
UFFD_API = 0xAA

UFFD_FEATURE_WP_HUGETLBFS_SHMEM = 1 << 12
UFFD_FEATURE_WP_UNPOPULATED = 1 << 13
UFFD_FEATURE_WP_ASYNC = 1 << 15
UFFDIO_REGISTER_MODE_WP = 1 << 1
UFFDIO_WRITEPROTECT_MODE_WP = 1 << 0

PM_SCAN_WP_MATCHING = 1 << 0
PM_SCAN_CHECK_WPASYNC = 1 << 1
PAGE_IS_WPALLOWED = 1 << 0
PAGE_IS_WRITTEN = 1 << 1


def _iowr(kind: int, nr: int, size: int) -> int:
    return (3 << 30) | (size << 16) | (kind << 8) | nr


class _UffdioApi(ctypes.Structure):
    _fields_ = [("api", ctypes.c_uint64), ("features", ctypes.c_uint64), ("ioctls", ctypes.c_uint64)]


class _UffdioRange(ctypes.Structure):
    _fields_ = [("start", ctypes.c_uint64), ("len", ctypes.c_uint64)]


class _UffdioRegister(ctypes.Structure):
    _fields_ = [("range", _UffdioRange), ("mode", ctypes.c_uint64), ("ioctls", ctypes.c_uint64)]


class _UffdioWriteprotect(ctypes.Structure):
    _fields_ = [("range", _UffdioRange), ("mode", ctypes.c_uint64)]


class _PmScanArg(ctypes.Structure):
    _fields_ = [(n, ctypes.c_uint64) for n in (
        "size", "flags", "start", "end", "walk_end", "vec", "vec_len", "max_pages",
        "category_inverted", "category_mask", "category_anyof_mask", "return_mask")]


class _PageRegion(ctypes.Structure):
    _fields_ = [("start", ctypes.c_uint64), ("end", ctypes.c_uint64), ("categories", ctypes.c_uint64)]


UFFDIO_API = _iowr(0xAA, 0x3F, ctypes.sizeof(_UffdioApi))
UFFDIO_REGISTER = _iowr(0xAA, 0x00, ctypes.sizeof(_UffdioRegister))
UFFDIO_UNREGISTER = (2 << 30) | (ctypes.sizeof(_UffdioRange) << 16) | (0xAA << 8) | 0x01  # _IOR
UFFDIO_WRITEPROTECT = _iowr(0xAA, 0x06, ctypes.sizeof(_UffdioWriteprotect))
PAGEMAP_SCAN = _iowr(ord("f"), 16, ctypes.sizeof(_PmScanArg))

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long
_libc.ioctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_void_p]
_libc.ioctl.restype = ctypes.c_int


class UffdUnavailable(OSError):
    """The kernel (or its settings) does not give this process async write-protect tracking."""


def _ioctl(fd: int, req: int, arg: ctypes.Structure) -> int:
    rc = _libc.ioctl(fd, req, ctypes.byref(arg))
    if rc < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"ioctl {req:#x}: {os.strerror(err)}")
    return rc


def _open_uffd() -> tuple[int, str]:
    """Open a userfaultfd; returns (fd, how). Tries the unprivileged user-mode-only flavour first."""
    nr = _NR_USERFAULTFD.get(platform.machine())
    if nr is None:
        raise UffdUnavailable(0, f"userfaultfd syscall number unknown on {platform.machine()}")
    errors = []
    # UFFD_USER_MODE_ONLY is allowed to unprivileged processes even with vm.unprivileged_userfaultfd=0;
    # it is all we need, since only user-space writes matter.
    for flags, how in ((O_CLOEXEC | O_NONBLOCK | UFFD_USER_MODE_ONLY, "syscall(user-mode-only)"),
                       (O_CLOEXEC | O_NONBLOCK, "syscall")):
        fd = _libc.syscall(nr, flags)
        if fd >= 0:
            return int(fd), how
        errors.append(os.strerror(ctypes.get_errno()))
    raise UffdUnavailable(0, f"userfaultfd: {'; '.join(errors)}")


@dataclass(frozen=True)
class ScanStats:
    regions: int
    pages: int


class WriteTracker:
    """Async write-protect tracking of one mapping [addr, addr+length) of this process."""

    def __init__(self, addr: int, length: int, page_size: int = 4096, vec_len: int = 4096) -> None:
        if addr % page_size or length % page_size:
            raise ValueError("range must be page aligned")
        self.addr, self.length, self.page_size = addr, length, page_size
        self.fd, self.how = _open_uffd()
        try:
            api = _UffdioApi(api=UFFD_API, features=(
                UFFD_FEATURE_WP_ASYNC | UFFD_FEATURE_WP_UNPOPULATED | UFFD_FEATURE_WP_HUGETLBFS_SHMEM))
            _ioctl(self.fd, UFFDIO_API, api)
            reg = _UffdioRegister(range=_UffdioRange(addr, length), mode=UFFDIO_REGISTER_MODE_WP)
            _ioctl(self.fd, UFFDIO_REGISTER, reg)
            wp = _UffdioWriteprotect(range=_UffdioRange(addr, length), mode=UFFDIO_WRITEPROTECT_MODE_WP)
            _ioctl(self.fd, UFFDIO_WRITEPROTECT, wp)
            self.pagemap = os.open("/proc/self/pagemap", os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:
            os.close(self.fd)
            raise UffdUnavailable(exc.errno or 0, f"uffd write-protect async setup failed: {exc}") from exc
        self._vec = (_PageRegion * vec_len)()
        self._vec_len = vec_len
        self.mode = f"uffd-wp-async+PAGEMAP_SCAN ({self.how})"

    def scan(self, reprotect: bool = True) -> list[tuple[int, int]]:
        """Pages written since the last scan, as (first_page, end_page) index ranges; re-protects them."""
        out: list[tuple[int, int]] = []
        start, end = self.addr, self.addr + self.length
        flags = PM_SCAN_CHECK_WPASYNC | (PM_SCAN_WP_MATCHING if reprotect else 0)
        while start < end:
            arg = _PmScanArg(
                size=ctypes.sizeof(_PmScanArg), flags=flags, start=start, end=end,
                vec=ctypes.addressof(self._vec), vec_len=self._vec_len,
                category_mask=PAGE_IS_WRITTEN, return_mask=PAGE_IS_WRITTEN)
            n = _ioctl(self.pagemap, PAGEMAP_SCAN, arg)
            for i in range(n):
                r = self._vec[i]
                out.append(((r.start - self.addr) // self.page_size, (r.end - self.addr) // self.page_size))
            if arg.walk_end <= start:  # no progress: should not happen, but never spin
                break
            start = arg.walk_end
        return out

    def close(self) -> None:
        for fd in (getattr(self, "pagemap", -1), self.fd):
            if fd >= 0:
                try:
                    os.close(fd)
                except OSError:
                    pass
        self.fd = -1
        self.pagemap = -1


def probe() -> str:
    """Say which tracking mode works here, by really tracking a write on a shared mapping."""
    import mmap

    fd = os.memfd_create("edgeweave-probe", os.MFD_CLOEXEC)
    try:
        os.ftruncate(fd, 8 * 4096)
        m = mmap.mmap(fd, 8 * 4096)
        addr = ctypes.addressof(ctypes.c_char.from_buffer(m))
        try:
            t = WriteTracker(addr, 8 * 4096)
        except UffdUnavailable as exc:
            del addr
            m.close()
            return f"explicit-only ({exc})"
        try:
            t.scan()
            m[3 * 4096] = 1
            m[5 * 4096 + 7] = 1
            got = t.scan()
            again = t.scan()
            ok = got == [(3, 4), (5, 6)] and again == []
            return t.mode if ok else f"explicit-only (scan returned {got}, then {again})"
        finally:
            t.close()
            del addr
            m.close()
    finally:
        os.close(fd)
