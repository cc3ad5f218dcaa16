"""The workload-side library: a shared memory region, its write tracking and its baselines.

    r = Region.create("sessions", 64 << 20, agent="/run/edgeweave/memory.sock", token=tok)
    r.array[...] = ...          # just write; uffd-wp tracks it (or r.mark_dirty(off, n))
    r.start(store=open_store("/baselines"), baseline_interval=300)

The memory is a memfd (or a file in /dev/shm or on hugetlbfs) that the node agent also
holds: the library hands both descriptors (memory and dirty-state) to the agent over a
unix socket, so the memory and its dirty lists outlive a crash of the workload.
"""

from __future__ import annotations

import ctypes
import json
import mmap
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from .hashing import DEFAULT_ALGO
from .naming import RegionId
from .snapshot import take_baseline
from .state import RegionState
from .store import BaselineStore, Manifest
from .uffd import UffdUnavailable, WriteTracker


def kernel_page_size(fd: int) -> int:
    """The page size the kernel tracks this mapping at (a huge page on hugetlbfs)."""
    try:
        return max(mmap.PAGESIZE, os.fstatvfs(fd).f_bsize)
    except OSError:
        return mmap.PAGESIZE


def open_backing(name: str, size: int, backing: str) -> int:
    """A memfd ("memfd") or a file at a path (in /dev/shm or on hugetlbfs); returns its fd."""
    if backing == "memfd":
        fd = os.memfd_create(f"edgeweave-{name}", os.MFD_CLOEXEC)
    else:
        fd = os.open(backing, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    if os.fstat(fd).st_size != size:
        os.ftruncate(fd, size)
    return fd


def runs_to_pages(runs: list[tuple[int, int]], kpage: int, page_size: int) -> np.ndarray:
    """Kernel-page index ranges -> tracking-page indices (a tracking page may span several)."""
    if not runs:
        return np.empty(0, dtype=np.int64)
    parts = [np.arange(a * kpage // page_size, -(-b * kpage // page_size)) for a, b in runs]
    return np.unique(np.concatenate(parts))


@dataclass
class Registration:
    sock: socket.socket


class Region:
    def __init__(self, rid: RegionId, mem_fd: int, state: RegionState, size: int, page_size: int,
                 track: str = "auto") -> None:
        self.rid = rid
        self.name, self.size, self.page_size = rid.name, size, page_size
        self.mem_fd = mem_fd
        self.state = state
        self.map = mmap.mmap(mem_fd, size)
        self.buf = memoryview(self.map)
        self.array = np.frombuffer(self.map, dtype=np.uint8)
        self.npages = size // page_size
        self.lock = threading.Lock()
        self.tracker: WriteTracker | None = None
        self.tracking_mode = "explicit"
        if track in ("auto", "uffd"):
            addr = ctypes.addressof(ctypes.c_char.from_buffer(self.map))
            try:
                self.tracker = WriteTracker(addr, size, kernel_page_size(mem_fd))
                self.tracking_mode = self.tracker.mode
            except UffdUnavailable:
                if track == "uffd":
                    raise
        self._agent: socket.socket | None = None
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.last_manifest: Manifest | None = None

    # --- construction ----------------------------------------------------------------------
    @classmethod
    def create(cls, name: str, size: int, page_size: int = 4096, backing: str = "memfd",
               track: str = "auto", algo: str = DEFAULT_ALGO, namespace: str = "default",
               pod_uid: str | None = None) -> Region:
        """`namespace`/`pod_uid` default to the pod's (POD_NAMESPACE/POD_UID from the downward API)."""
        rid = RegionId(os.environ.get("POD_NAMESPACE", namespace) if namespace == "default" else namespace,
                       pod_uid or os.environ.get("POD_UID", "0"), name)
        if size % page_size or page_size % mmap.PAGESIZE:
            raise ValueError("size must be a multiple of page_size, page_size of the system page size")
        mem_fd = open_backing(name, size, backing)
        if page_size % kernel_page_size(mem_fd):
            raise ValueError(f"page_size {page_size} is finer than the backing's pages")
        st_fd = os.memfd_create(f"edgeweave-{name}-state", os.MFD_CLOEXEC)
        state = RegionState(st_fd, size // page_size, page_size, algo)
        state.start(0)
        return cls(rid, mem_fd, state, size, page_size, track)

    # --- tracking --------------------------------------------------------------------------
    def mark_dirty(self, offset: int, length: int) -> None:
        """The explicit path, for writes the kernel cannot see (DMA, other processes). Call after writing."""
        first, end = offset // self.page_size, -(-(offset + length) // self.page_size)
        with self.lock:
            self.state.slots[self.state.active][first:end] = 1

    def collect(self) -> int:
        """Move kernel-tracked writes into the shared dirty list; returns how many pages were new."""
        if self.tracker is None:
            return 0
        with self.lock:
            pages = runs_to_pages(self.tracker.scan(), self.tracker.page_size, self.page_size)
            if len(pages):
                self.state.slots[self.state.active][pages] = 1
        return len(pages)

    def baseline(self, store: BaselineStore, source: str = "",
                 on_start: Callable[[], None] | None = None) -> Manifest:
        # The lock is held only for collect+flip (inside take_baseline), not for the copy, so
        # explicit markers and scans go on while the region is written out.
        self.last_manifest = take_baseline(self.rid.store_name, self.buf, self.page_size, self.state, store,
                                           self._collect_locked, self.lock, source=source, on_start=on_start)
        return self.last_manifest

    def _collect_locked(self) -> None:
        if self.tracker is not None:
            pages = runs_to_pages(self.tracker.scan(), self.tracker.page_size, self.page_size)
            if len(pages):
                self.state.slots[self.state.active][pages] = 1

    # --- the agent -------------------------------------------------------------------------
    def register(self, agent_socket: str, token: bytes, timeout: float = 10.0) -> None:
        """Hand the memory and state descriptors to the node agent; it serves them from now on."""
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(timeout)
        s.connect(agent_socket)
        msg = json.dumps({"op": "register", "namespace": self.rid.namespace, "pod_uid": self.rid.pod_uid,
                          "name": self.name, "size": self.size,
                          "page_size": self.page_size, "token": token.hex(), "pid": os.getpid(),
                          "tracking": self.tracking_mode}).encode()
        socket.send_fds(s, [msg], [self.mem_fd, self.state.fd])
        reply = json.loads(s.recv(65536) or b"{}")
        if not reply.get("ok"):
            s.close()
            raise RuntimeError(f"agent refused registration: {reply.get('error', 'connection closed')}")
        s.settimeout(None)
        self._agent = s

    def start(self, store: BaselineStore | None = None, scan_interval: float = 0.5,
              baseline_interval: float | None = None, on_error: Callable[[Exception], None] | None = None,
              source: str = "", on_baseline_start: Callable[[], None] | None = None) -> None:
        """Background scans (so the shared dirty list stays current) and periodic baselines."""
        def loop() -> None:
            next_base = time.monotonic() + (baseline_interval or 0)
            while not self._stop.wait(scan_interval):
                try:
                    self.collect()
                    if store is not None and baseline_interval and time.monotonic() >= next_base:
                        self.baseline(store, source, on_start=on_baseline_start)
                        next_base = time.monotonic() + baseline_interval
                except Exception as exc:  # keep tracking even if one baseline failed
                    if on_error:
                        on_error(exc)
        t = threading.Thread(target=loop, name=f"ewm-{self.name}", daemon=True)
        t.start()
        self._threads.append(t)

    def close(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=10)
        if self.tracker:
            self.tracker.close()
        if self._agent:
            self._agent.close()
        del self.array
        self.buf.release()
        self.map.close()
        self.state.close()
        os.close(self.mem_fd)
        os.close(self.state.fd)
