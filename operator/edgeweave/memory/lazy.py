"""Lazy restore: the replacement serves before every page is in place.

The replacement workload maps its (empty) region file and registers the mapping with a
userfaultfd in MISSING mode, then hands the userfaultfd to the recovery process over a unix
socket (SCM_RIGHTS) and starts serving at once. The recovery process (`memory-recover --lazy`)
already knows the baseline manifest and the source's dirty list, and
  * answers every fault first: the page from the source if it is dirty, otherwise from the
    baseline (pre-staged copy or the store), checked against its checksum, placed with
    UFFDIO_COPY (atomic: a page is never overwritten once present);
  * fills the rest in the background: the dirty pages from the source first (the source may
    die), then the baseline, run by run, skipping pages a fault already placed.
A page the workload wrote after its fault is never touched again (UFFDIO_COPY refuses with
EEXIST). Faults are handled by another process, so a workload holding a lock (or Python's
GIL) while it touches a missing page still makes progress. Only user-space accesses fault
(UFFD_USER_MODE_ONLY); a read(2)/write(2) by the kernel into a missing page would fail with
EFAULT, so the workload must touch its region from user space until the fill is done.
"""

from __future__ import annotations

import ctypes
import errno
import json
import mmap
import os
import select
import socket
import struct
import threading
import time
from dataclasses import dataclass, field

import numpy as np

from .hashing import page_sums
from .store import runs_of
from .uffd import (
    UFFD_API,
    UFFDIO_API,
    UFFDIO_REGISTER,
    _ioctl,
    _open_uffd,
    _UffdioApi,
    _UffdioRange,
    _UffdioRegister,
)

UFFDIO_REGISTER_MODE_MISSING = 1 << 0
UFFDIO_REGISTER_MODE_MINOR = 1 << 2
UFFD_FEATURE_MINOR_SHMEM = 1 << 10
UFFD_PAGEFAULT_FLAG_MINOR = 1 << 2
UFFD_EVENT_PAGEFAULT = 0x12
_MSG = struct.Struct("<B3xI QQI4x")  # event, reserved; pagefault: flags, address, ptid (32 bytes)


class _UffdioCopy(ctypes.Structure):
    _fields_ = [("dst", ctypes.c_uint64), ("src", ctypes.c_uint64), ("len", ctypes.c_uint64),
                ("mode", ctypes.c_uint64), ("copy", ctypes.c_int64)]


def _iowr(kind: int, nr: int, size: int) -> int:
    return (3 << 30) | (size << 16) | (kind << 8) | nr


class _UffdioContinue(ctypes.Structure):
    _fields_ = [("range", _UffdioRange), ("mode", ctypes.c_uint64), ("mapped", ctypes.c_int64)]


UFFDIO_COPY = _iowr(0xAA, 0x03, ctypes.sizeof(_UffdioCopy))
UFFDIO_CONTINUE = _iowr(0xAA, 0x07, ctypes.sizeof(_UffdioContinue))
UFFDIO_WAKE = (2 << 30) | (ctypes.sizeof(_UffdioRange) << 16) | (0xAA << 8) | 0x02  # _IOR
_libc = ctypes.CDLL(None, use_errno=True)
_libc.ioctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_void_p]
_libc.ioctl.restype = ctypes.c_int
_libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE = 0x01, 0x02


def _punch(fd: int, off: int, length: int) -> None:
    """Drop [off, off+length) from the file (shmem: the pages are gone; a MISSING fault brings them)."""
    if _libc.fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, off, length) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"fallocate(PUNCH_HOLE): {os.strerror(err)}")


# --- the workload side --------------------------------------------------------------------------
def _register(addr: int, size: int) -> tuple[int, bool]:
    """A userfaultfd for [addr, addr+size): MISSING (holes) and, where the kernel has it for shmem,
    MINOR too (pages already in the file but not yet mapped here: an adopted baseline), so the
    recovery decides page by page without punching the dirty pages out first."""
    for features, mode in ((UFFD_FEATURE_MINOR_SHMEM, UFFDIO_REGISTER_MODE_MISSING | UFFDIO_REGISTER_MODE_MINOR),
                           (0, UFFDIO_REGISTER_MODE_MISSING)):
        ufd, _ = _open_uffd()
        try:
            _ioctl(ufd, UFFDIO_API, _UffdioApi(api=UFFD_API, features=features))
            _ioctl(ufd, UFFDIO_REGISTER, _UffdioRegister(range=_UffdioRange(addr, size), mode=mode))
            return ufd, bool(features)
        except OSError:
            os.close(ufd)
            if not features:
                raise
    raise AssertionError("unreachable")



@dataclass
class LazyRegion:
    """The replacement's view: a mapping whose pages arrive on first touch."""

    path: str
    size: int
    fd: int
    map: mmap.mmap
    addr: int
    helper_sock: socket.socket | None = None

    @classmethod
    def attach(cls, path: str, size: int, helper: str, timeout: float = 30.0) -> LazyRegion:
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        mp = mmap.mmap(fd, size)
        addr = ctypes.addressof(ctypes.c_char.from_buffer(mp))
        ufd, minor = _register(addr, size)
        try:
            deadline = time.monotonic() + timeout
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            while True:
                try:
                    s.connect(helper)
                    break
                except (FileNotFoundError, ConnectionRefusedError):
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.002)
            socket.send_fds(s, [json.dumps({"addr": addr, "size": size, "pid": os.getpid(),
                                            "minor": minor}).encode()], [ufd])
            s.settimeout(timeout)
            reply = json.loads(s.recv(4096) or b"{}")
            if not reply.get("ok"):
                s.close()
                raise RuntimeError(f"lazy restore helper refused: {reply.get('error')}")
        finally:
            os.close(ufd)  # the helper holds it now; the registration lives while it does
        r = cls(path, size, fd, mp, addr)
        r.helper_sock = s
        return r

    def wait_resident(self, timeout: float | None = None) -> dict:
        """Block until the helper says every page is in place (it then drops the userfaultfd)."""
        self.helper_sock.settimeout(timeout)
        msg = json.loads(self.helper_sock.recv(4096) or b"{}")
        self.helper_sock.close()
        return msg


# --- the recovery side ----------------------------------------------------------------------------
@dataclass
class LazyStats:
    t0: float
    attached_at: float = 0.0
    first_fault_served_at: float = 0.0
    resident_at: float = 0.0
    faults: int = 0
    fault_pages_from_source: int = 0
    fault_seconds: list[float] = field(default_factory=list)
    filled_from_source: int = 0
    filled_from_baseline: int = 0
    already_present: int = 0


class LazyServer:
    """Serves the faults of one attached region and fills it in the background."""

    def __init__(self, ufd: int, addr: int, npages: int, ps: int, algo: str, ref: np.ndarray,
                 dirty: np.ndarray, read_baseline, read_source, stats: LazyStats,  # type: ignore[no-untyped-def]
                 fill_baseline=None, fill_source=None) -> None:  # type: ignore[no-untyped-def]
        self.ufd, self.addr, self.npages, self.ps = ufd, addr, npages, ps
        self.algo, self.ref, self.dirty = algo, ref, dirty
        self.read_baseline = read_baseline  # (pages ndarray, dest memoryview) -> None
        self.read_source = read_source  # (pages ndarray, dest memoryview) -> None (checked)
        # the fill runs in its own thread with its own connections
        self.fill_baseline = fill_baseline or read_baseline
        self.fill_source = fill_source or read_source
        self.stats = stats
        # MINOR mode (adopted baseline): every page is in the file; a page is mapped into the
        # replacement only by UFFDIO_CONTINUE, after a dirty page's bytes are written through `own`
        self.minor = False
        self.own: memoryview | None = None
        self.present = np.zeros(npages, dtype=bool)
        self.lock = threading.Lock()
        self.error: BaseException | None = None
        self._stop = threading.Event()

    def _partial(self, done: int, op: str) -> int:
        """After a failed UFFDIO_COPY/CONTINUE that placed `done` pages: how many pages to step over (the
        errno says why it stopped), or raise when the region can no longer be filled."""
        err = ctypes.get_errno()
        if err == errno.EEXIST:
            self.stats.already_present += 1
            return done + 1  # that page is there already (a fault or the workload): never overwrite
        if err == errno.EAGAIN:
            return done
        if err == errno.ESRCH:
            raise OSError(err, "the replacement process exited before its region was resident")
        raise OSError(err, f"{op}: {os.strerror(err)}")

    def _copy(self, first: int, n: int, src: int) -> int:
        """UFFDIO_COPY n pages from address src to [first, ...); returns pages placed (EEXIST ones skipped)."""
        placed, i = 0, 0
        while i < n:
            arg = _UffdioCopy(dst=self.addr + (first + i) * self.ps, src=src + i * self.ps,
                              len=(n - i) * self.ps, mode=0, copy=0)
            rc = _libc.ioctl(self.ufd, UFFDIO_COPY, ctypes.byref(arg))
            done = max(0, arg.copy) // self.ps
            placed += done
            if rc == 0:
                i = n
                break
            i += self._partial(done, "UFFDIO_COPY")
        with self.lock:
            self.present[first:first + n] = True
        return placed

    def _continue(self, first: int, n: int) -> None:
        """UFFDIO_CONTINUE [first, first+n): map the file's pages into the replacement (EEXIST: mapped)."""
        i = 0
        while i < n:
            arg = _UffdioContinue(range=_UffdioRange(self.addr + (first + i) * self.ps, (n - i) * self.ps),
                                  mode=0, mapped=0)
            rc = _libc.ioctl(self.ufd, UFFDIO_CONTINUE, ctypes.byref(arg))
            done = max(0, arg.mapped) // self.ps
            if rc == 0:
                return
            i += self._partial(done, "UFFDIO_CONTINUE")

    def _place_minor(self, pages: np.ndarray, content: memoryview | None) -> int:
        """Write (dirty pages: `content`, one after another) and map `pages` that are not mapped yet.
        Under the lock: a page is written only before its CONTINUE, never after (the replacement may
        have written it since)."""
        ps = self.ps
        assert self.own is not None
        with self.lock:
            todo = ~self.present[pages]
            idx = np.flatnonzero(todo)
            if len(idx) == 0:
                return 0
            if content is not None:
                for j in idx.tolist():
                    p = int(pages[j])
                    self.own[p * ps:(p + 1) * ps] = content[j * ps:(j + 1) * ps]
            for _pos, first, count in runs_of(pages[idx]):
                self._continue(first, count)
            self.present[pages[idx]] = True
        return len(idx)

    def _page_content(self, pages: np.ndarray, dest: memoryview, fill: bool = False) -> None:
        """Fill dest with `pages` (ascending, one after another): dirty from the source, else the baseline."""
        src, base = (self.fill_source, self.fill_baseline) if fill else (self.read_source, self.read_baseline)
        d = self.dirty[pages]
        if d.all():
            src(pages, dest)
        elif not d.any():
            base(pages, dest)
        else:
            ps = self.ps
            for j, p in enumerate(pages.tolist()):
                (src if d[j] else base)(np.array([p]), dest[j * ps:(j + 1) * ps])

    def serve_faults(self) -> None:
        ps = self.ps
        buf = mmap.mmap(-1, ps)
        anchor = ctypes.c_char.from_buffer(buf)
        base = ctypes.addressof(anchor)
        view = memoryview(buf)
        poller = select.poll()
        poller.register(self.ufd, select.POLLIN)
        try:
            while not self._stop.is_set():
                if not poller.poll(100):
                    continue
                try:
                    raw = os.read(self.ufd, _MSG.size * 16)
                except BlockingIOError:
                    continue
                for off in range(0, len(raw) - _MSG.size + 1, _MSG.size):
                    event, _, _flags, address, _ = _MSG.unpack_from(raw, off)
                    if event != UFFD_EVENT_PAGEFAULT:
                        continue
                    t = time.monotonic()
                    p = (address - self.addr) // ps
                    one = np.array([p], dtype=np.int64)
                    if _flags & UFFD_PAGEFAULT_FLAG_MINOR:
                        if self.dirty[p]:
                            self.read_source(one, view)
                        if self._place_minor(one, view if self.dirty[p] else None) == 0:
                            _libc.ioctl(self.ufd, UFFDIO_WAKE, ctypes.byref(_UffdioRange(self.addr + p * ps, ps)))
                    else:
                        self._page_content(one, view)
                        if self._copy(p, 1, base) == 0:
                            _libc.ioctl(self.ufd, UFFDIO_WAKE, ctypes.byref(_UffdioRange(self.addr + p * ps, ps)))
                    now = time.monotonic()
                    self.stats.faults += 1
                    self.stats.fault_pages_from_source += int(self.dirty[p])
                    self.stats.fault_seconds.append(now - t)
                    if not self.stats.first_fault_served_at:
                        self.stats.first_fault_served_at = now
        except BaseException as exc:
            self.error = exc
        finally:
            view.release()
            del anchor

    def fill(self, run_pages: int = 256, baseline_run_pages: int = 2048) -> None:
        """Background fill: dirty pages (source) first, then the baseline, skipping placed pages."""
        ps = self.ps
        buf = mmap.mmap(-1, max(run_pages, baseline_run_pages) * ps)
        anchor = ctypes.c_char.from_buffer(buf)
        base = ctypes.addressof(anchor)
        view = memoryview(buf)
        try:
            for want_dirty in (True, False):
                todo = np.flatnonzero(self.dirty == want_dirty)
                step = run_pages if want_dirty else baseline_run_pages  # 8 MiB reads from the baseline
                if self.minor and not want_dirty:
                    step = 1 << 15  # nothing to read: map 128 MiB per pass
                for i in range(0, len(todo), step):
                    if self._stop.is_set():
                        return
                    chunk = todo[i:i + step]
                    with self.lock:
                        chunk = chunk[~self.present[chunk]]
                    if len(chunk) == 0:
                        continue
                    if self.minor:
                        if want_dirty:
                            self.fill_source(chunk, view)
                        n = self._place_minor(chunk, view if want_dirty else None)
                        if want_dirty:
                            self.stats.filled_from_source += n
                        continue
                    self._page_content(chunk, view, fill=True)
                    # place contiguous runs of the chunk with one ioctl each
                    brk = np.flatnonzero(np.diff(chunk) != 1) + 1
                    pos = 0
                    for run in np.split(chunk, brk):
                        self._copy(int(run[0]), len(run), base + pos * ps)
                        pos += len(run)
                    if want_dirty:
                        self.stats.filled_from_source += len(chunk)
                    else:
                        self.stats.filled_from_baseline += len(chunk)
            self.stats.resident_at = time.monotonic()
        except BaseException as exc:
            self.error = exc
        finally:
            view.release()
            del anchor

    def stop(self) -> None:
        self._stop.set()


def verified_reader(read_raw, ref: np.ndarray, ps: int, algo: str, what: str):  # type: ignore[no-untyped-def]
    """Wrap a (pages, dest) reader so every page it delivers is checked against `ref`."""
    def read(pages: np.ndarray, dest: memoryview) -> None:
        read_raw(pages, dest)
        got = page_sums(dest, ps, list(range(len(pages))), algo=algo, threads=1)
        bad = np.flatnonzero(np.any(got != ref[pages], axis=1))
        if len(bad):
            raise ValueError(f"{len(bad)} {what} page(s) fail their checksum: {pages[bad][:8].tolist()}")
    return read


def recover_lazy(store, region: str, dest: str, source, token: bytes, helper: str,  # type: ignore[no-untyped-def]
                 tls=None, local=None, timeout: float = 5.0, attach_timeout: float = 60.0,
                 on_listening=None):
    """Lazy counterpart of recovery.recover: returns a RecoveryReport once the region is fully resident."""
    from .protocol import ProtocolError
    from .recovery import RecoveryFailed, RecoveryReport, choose_baseline, local_current, store_name_of
    from .store import DirStore
    from .transport_tcp import PageClient

    t0 = time.monotonic()
    stats = LazyStats(t0)
    phases: dict[str, float] = {}
    name = store_name_of(region)
    # Listen first: the replacement connects (and registers its userfaultfd) while the baseline is
    # prepared; it is answered only when the region is ready to serve from.
    if os.path.exists(helper):
        os.unlink(helper)
    ls = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    ls.bind(helper)
    ls.listen(1)
    ls.settimeout(attach_timeout)
    if on_listening:
        on_listening()
    clients: list[PageClient] = []
    reason = ""

    def connect() -> None:
        nonlocal reason
        try:
            clients.append(PageClient(source, region, token, timeout, tls))
        except OSError as exc:
            reason = f"source {source.host}:{source.port} unreachable: {exc}"
        phases["connect_s"] = round(time.monotonic() - t0, 4)

    # with a pre-staged copy the source decides at once; else after the store (no idle connection)
    early = source is not None and local_current(local, name) is not None
    if early:
        connect()
    # with a pre-staged copy the source is asked for the pages dirty since its epoch and the shared
    # store is not asked at all (recovery.choose_baseline): nothing but the source on the way to serving
    used, label, m, note, answer = choose_baseline(store, local, name, None,
                                                   clients[0].dirty_since if clients else None)
    if source is not None and not early:
        connect()
    ref = used.sums(m)
    ps, n = m.page_size_bytes, m.npages
    phases["manifest_s"] = round(time.monotonic() - t0, 4)
    dirty = np.zeros(n, dtype=bool)
    meta: dict = {}
    if clients:
        try:
            dirty, meta = answer if answer is not None else clients[0].dirty_since(m.epoch)  # type: ignore[misc]
        except (OSError, ProtocolError) as exc:
            reason = f"source {source.host}:{source.port} failed: {exc}"
            for c in clients:
                c.close()
            clients = []
    phases["dirty_list_s"] = round(time.monotonic() - t0, 4)
    sources: dict = {"baseline": {"from": label, "url": used.url, "epoch": m.epoch, "note": note}}

    def source_reader(idx: int):  # type: ignore[no-untyped-def]
        def read(pages: np.ndarray, dst: memoryview) -> None:
            if not clients:
                raise RuntimeError("page needs the source, which is unreachable")
            if idx >= len(clients):
                # the fill's own connection, opened by the fill thread: not on the path to first serve
                clients.append(PageClient(source, region, token, timeout, tls))
            for i in range(0, len(pages), 4096):
                try:
                    clients[idx].fetch_compact(pages[i:i + 4096], dst[i * ps:])
                except (OSError, ProtocolError):
                    # the page server closes connections idle past its timeout: reconnect once
                    clients[idx].close()
                    clients[idx] = PageClient(source, region, token, timeout, tls)
                    clients[idx].fetch_compact(pages[i:i + 4096], dst[i * ps:])
        return read

    def baseline_reader(idx: int):  # type: ignore[no-untyped-def]
        def read(pages: np.ndarray, dst: memoryview) -> None:
            used.read_pages(m, pages, dst)
            got = page_sums(dst, ps, list(range(len(pages))), algo=m.checksum_algo, threads=1)
            bad = np.flatnonzero(np.any(got != ref[pages], axis=1))
            for j in bad.tolist():  # a corrupt baseline page is repaired from the source, or fatal
                source_reader(idx)(pages[j:j + 1], dst[j * ps:(j + 1) * ps])
        return read

    # A pre-staged, verified copy on this filesystem is adopted (renamed into place) and only the
    # dirty pages are punched out: they are the only pages that fault, from the source. Otherwise
    # the file starts empty and every page arrives by fault or by the fill.
    t = time.monotonic()
    mark = used.adopt(m, dest, cleanup=False) if label == "local" and isinstance(used, DirStore) else None
    if mark is not None:
        phases["adopt_s"] = round(time.monotonic() - t, 4)
    else:
        fd = os.open(dest, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        os.ftruncate(fd, m.size_bytes)
        os.close(fd)
    sources["baseline"].update(adopted=mark is not None,
                               verified=f"when pre-staged ({mark.get('verified_at')})" if mark else "per page, on use")
    try:
        c, _ = ls.accept()
        msg, fds, _, _ = socket.recv_fds(c, 4096, 1)
        req = json.loads(msg)
        if len(fds) != 1 or int(req["size"]) != m.size_bytes:
            c.sendall(json.dumps({"ok": False, "error": "expected one userfaultfd for the whole region"}).encode())
            raise ValueError("bad attach")
        ufd = fds[0]
        minor = bool(req.get("minor")) and mark is not None
        own_map = None
        if mark is not None and not minor:
            # the kernel maps an adopted file's pages without asking: take the dirty ones out first
            t = time.monotonic()
            fd = os.open(dest, os.O_RDWR | os.O_CLOEXEC)
            try:
                for _pos, first, count in runs_of(np.flatnonzero(dirty)):
                    _punch(fd, first * ps, count * ps)
            finally:
                os.close(fd)
            phases["punch_s"] = round(time.monotonic() - t, 4)
        elif minor:
            fd = os.open(dest, os.O_RDWR | os.O_CLOEXEC)
            own_map = mmap.mmap(fd, m.size_bytes)  # our own mapping: not registered, writes never fault
            os.close(fd)
        c.sendall(json.dumps({"ok": True}).encode())
    finally:
        ls.close()
        os.unlink(helper)
    stats.attached_at = time.monotonic()
    srv = LazyServer(ufd, int(req["addr"]), n, ps, m.checksum_algo, ref, dirty, baseline_reader(0),
                     source_reader(0), stats, baseline_reader(1 if clients else 0), source_reader(1))
    if mark is not None and not minor:
        srv.present |= ~dirty  # the adopted baseline pages are in place; only the punched ones fault
    if own_map is not None:
        srv.minor, srv.own = True, memoryview(own_map)
    faults = threading.Thread(target=srv.serve_faults, name="ewm-lazy-faults", daemon=True)
    faults.start()
    if mark is not None:
        used.forget(m)
    srv.fill()
    srv.stop()
    faults.join(timeout=5)
    os.close(ufd)
    if own_map is not None:
        assert srv.own is not None
        srv.own.release()
        own_map.close()
    try:
        c.sendall(json.dumps({"resident": srv.error is None, "at": stats.resident_at}).encode())
    except OSError:
        pass
    c.close()
    for c in clients:
        c.close()
    err = srv.error
    fs = np.array(stats.fault_seconds) if stats.fault_seconds else np.zeros(1)
    lazy = {"attach_s": round(stats.attached_at - t0, 4), "minor_mode": srv.minor,
            "first_fault_served_s": round(stats.first_fault_served_at - t0, 4) if stats.first_fault_served_at else None,
            "fully_resident_s": round((stats.resident_at or time.monotonic()) - t0, 4),
            "faults": stats.faults, "fault_pages_from_source": stats.fault_pages_from_source,
            "fault_ms_p50": round(float(np.percentile(fs, 50)) * 1e3, 3),
            "fault_ms_p99": round(float(np.percentile(fs, 99)) * 1e3, 3),
            "filled_from_source": stats.filled_from_source, "filled_from_baseline": stats.filled_from_baseline,
            "t0_monotonic": t0}
    phases.update({k: v for k, v in lazy.items() if k.endswith("_s") and v is not None})
    sources["source_agent"] = {"addr": None if source is None else f"{source.host}:{source.port}",
                               "reachable": bool(clients), "pages": int(dirty.sum()), "error": reason or None}
    common = dict(region=region, epoch=m.epoch, size_bytes=m.size_bytes, page_size_bytes=ps, dest=dest,
                  phases=phases, sources=sources, source_sweep={**(meta.get("sweep") or {}), "lazy": lazy})
    if err is not None:
        raise RecoveryFailed(RecoveryReport(ok=False, mode="failed", source_reachable=bool(clients), pages=0,
                                            bytes=0, duration_s=round(time.monotonic() - t0, 4),
                                            message=f"lazy restore failed: {err}", **common))  # type: ignore[arg-type]
    mode = "lazy:baseline+dirty" if clients else "lazy:baseline-only"
    msg = (f"lazy: baseline epoch {m.epoch} ({label}) + {int(dirty.sum())} dirty page(s) from the source; "
           f"first fault served {lazy['first_fault_served_s']} s, fully resident {lazy['fully_resident_s']} s")
    if not clients:
        msg = (f"HOST FAILURE: {reason or 'no source given'}: lazily restored baseline epoch {m.epoch} only; "
               f"writes made after epoch {m.epoch} are lost")
    return RecoveryReport(ok=True, mode=mode, source_reachable=bool(clients), pages=int(dirty.sum()),
                          bytes=sum(c.rx for c in clients), dirty_pages=int(dirty.sum()),
                          duration_s=round(time.monotonic() - t0, 4), message=msg, **common)  # type: ignore[arg-type]
