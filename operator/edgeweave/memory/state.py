"""The region state shared by the workload library and the node agent: dirty bitmaps + sums.

One small shared file (a memfd the agent also holds), so the dirty lists outlive the
workload process. Layout (little endian):

    header  (4096 bytes)   magic, version, npages, page_size, seq (seqlock), active slot,
                           slot labels, published epoch, owner pid, algorithm
    slot 0  dirty bytes    one byte per page (a byte, not a bit: stores are atomic and
    slot 1  dirty bytes    numpy can OR them without a read-modify-write race on neighbours)
    sums 0  16 B per page  checksums of the baseline whose epoch labels slot 0
    sums 1  16 B per page  ... slot 1

A slot labelled X holds the pages written since the start of snapshot X (its "t0"); the
baseline of epoch X holds every write made before t0(X). So the pages dirty since the
published epoch E are the union of the slots labelled >= E. Two slots suffice because a
snapshot only starts once the previous one is published (or aborted).
"""

from __future__ import annotations

import mmap
import os
import struct
import time

import numpy as np

from .hashing import DIGEST

MAGIC = b"EWMSTATE"
VERSION = 1
HEADER = 4096
# magic, version, npages, page_size, seq, active, label0, label1, published, owner_pid, algo(16s)
_HDR = struct.Struct("<8sIQQQIqqqq16s")
NO_EPOCH = -1


def state_size(npages: int) -> int:
    return HEADER + 2 * npages + 2 * npages * DIGEST


class RegionState:
    """A view of the state file. The workload writes it; the agent reads it (and writes after death)."""

    def __init__(self, fd: int, npages: int | None = None, page_size: int | None = None,
                 algo: str | None = None) -> None:
        self.fd = fd
        if npages is not None:  # create
            assert page_size is not None and algo is not None
            os.ftruncate(fd, state_size(npages))
            self.map = mmap.mmap(fd, state_size(npages))
            self.map[:_HDR.size] = _HDR.pack(MAGIC, VERSION, npages, page_size, 0, 0, 0, NO_EPOCH,
                                             NO_EPOCH, os.getpid(), algo.encode())
        else:
            head = os.pread(fd, _HDR.size, 0)
            if head[:8] != MAGIC:
                raise ValueError("not an edgeweave region state file")
            npages = _HDR.unpack(head)[2]
            self.map = mmap.mmap(fd, state_size(npages))
        self.npages = npages
        h = _HDR.unpack(self.map[:_HDR.size])
        self.page_size = h[3]
        self.algo = h[10].rstrip(b"\0").decode()
        n = npages
        self.slots = [np.frombuffer(self.map, np.uint8, n, HEADER), np.frombuffer(self.map, np.uint8, n, HEADER + n)]
        base = HEADER + 2 * n
        self.sums = [np.frombuffer(self.map, np.uint8, n * DIGEST, base).reshape(n, DIGEST),
                     np.frombuffer(self.map, np.uint8, n * DIGEST, base + n * DIGEST).reshape(n, DIGEST)]

    # --- header fields ---------------------------------------------------------------------
    def _get(self) -> tuple:
        return _HDR.unpack(self.map[:_HDR.size])

    def _put(self, **kw: int) -> None:
        h = list(self._get())
        names = ["magic", "version", "npages", "page_size", "seq", "active", "label0", "label1",
                 "published", "owner_pid", "algo"]
        for k, v in kw.items():
            h[names.index(k)] = v
        self.map[:_HDR.size] = _HDR.pack(*h)

    def header(self) -> dict:
        """A consistent read of the header (seqlock: retry while a flip is in progress)."""
        for _ in range(10000):
            h1 = self._get()
            if h1[4] % 2 == 0 and self._get() == h1:
                return {"seq": h1[4], "active": h1[5], "labels": (h1[6], h1[7]), "published": h1[8],
                        "owner_pid": h1[9]}
            time.sleep(0.0001)
        raise TimeoutError("region state header stays mid-update (writer died during a flip?)")

    @property
    def active(self) -> int:
        return self.header()["active"]

    # --- writers (workload side, under the library's lock) ---------------------------------
    def start(self, label: int) -> None:
        """First use: the active slot collects everything since `label` (0 = since creation)."""
        self._put(active=0, label0=label, label1=NO_EPOCH)

    def mark(self, pages: np.ndarray | slice) -> None:
        self.slots[self.active][pages] = 1

    def flip(self, new_label: int) -> int:
        """Open a new active slot labelled `new_label` (the epoch being snapshotted); returns its index."""
        h = self._get()
        new = 1 - h[5]
        self._put(seq=h[4] + 1)  # odd: readers wait
        self.slots[new][:] = 0
        labels = [h[6], h[7]]
        labels[new] = new_label
        self._put(active=new, label0=labels[0], label1=labels[1], seq=h[4] + 2)
        return new

    def abort_flip(self) -> None:
        """A snapshot failed: fold the new slot back into the old one and make the old one active."""
        h = self._get()
        cur, old = h[5], 1 - h[5]
        self._put(seq=h[4] + 1)
        np.bitwise_or(self.slots[old], self.slots[cur], out=self.slots[old])
        labels = [h[6], h[7]]
        labels[cur] = NO_EPOCH
        self._put(active=old, label0=labels[0], label1=labels[1], seq=h[4] + 2)

    def publish(self, epoch: int) -> None:
        h = self._get()
        self._put(seq=h[4] + 1)
        self._put(published=epoch, seq=h[4] + 2)

    def set_owner(self, pid: int) -> None:
        self._put(owner_pid=pid)

    # --- readers (agent side) --------------------------------------------------------------
    def dirty_since(self, epoch: int) -> np.ndarray:
        """Bool array: pages written since the start of snapshot `epoch`."""
        for _ in range(100):
            h = self.header()
            out = np.zeros(self.npages, dtype=bool)
            for i, label in enumerate(h["labels"]):
                if label != NO_EPOCH and label >= epoch:
                    out |= self.slots[i].astype(bool)
            if self.header()["seq"] == h["seq"]:
                if not any(lb != NO_EPOCH and lb <= epoch for lb in h["labels"]):
                    raise LookupError(f"no dirty list reaches back to epoch {epoch} (slots {h['labels']})")
                return out
        raise TimeoutError("region state kept changing while reading")

    def slot_of(self, epoch: int) -> int | None:
        labels = self.header()["labels"]
        return labels.index(epoch) if epoch in labels else None

    def close(self) -> None:
        self.slots = []
        self.sums = []
        try:
            self.map.close()
        except BufferError:
            pass
