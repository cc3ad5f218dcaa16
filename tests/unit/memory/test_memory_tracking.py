"""Kernel write tracking (uffd-wp async + PAGEMAP_SCAN) and the shared dirty state."""

from __future__ import annotations

import os

import numpy as np
import pytest

from edgeweave.memory.region import Region, runs_to_pages
from edgeweave.memory.state import RegionState
from edgeweave.memory.uffd import WriteTracker, probe


def test_scan_returns_exactly_the_written_pages_and_reprotects() -> None:
    r = Region.create("t-uffd", 256 * 4096, track="uffd")
    try:
        assert r.tracker is not None
        r.tracker.scan()
        written = [0, 1, 2, 77, 200, 255]
        for p in written:
            r.array[p * 4096 + 123] = 7
        runs = r.tracker.scan()
        assert runs_to_pages(runs, 4096, 4096).tolist() == written
        assert r.tracker.scan() == []  # re-protected: nothing new
        r.array[77 * 4096] = 1
        assert r.tracker.scan() == [(77, 78)]
    finally:
        r.close()


def test_reads_are_not_writes() -> None:
    r = Region.create("t-read", 64 * 4096, track="uffd")
    try:
        r.tracker.scan()
        assert int(r.array[::4096].sum()) == 0
        assert r.tracker.scan() == []
    finally:
        r.close()


def test_tracking_pages_coarser_than_kernel_pages() -> None:
    # 16 KiB tracking pages over 4 KiB kernel pages: a write to kernel page 5 dirties page 1.
    assert runs_to_pages([(5, 6), (8, 13)], 4096, 16384).tolist() == [1, 2, 3]
    r = Region.create("t-coarse", 64 * 16384, page_size=16384, track="uffd")
    try:
        r.collect()
        r.array[5 * 4096] = 1
        r.array[63 * 16384 + 9000] = 1
        r.collect()
        assert np.flatnonzero(r.state.slots[r.state.active]).tolist() == [1, 63]
    finally:
        r.close()


def test_probe_reports_async_mode() -> None:
    assert probe().startswith("uffd-wp-async+PAGEMAP_SCAN"), probe()


def test_explicit_mark_dirty() -> None:
    r = Region.create("t-explicit", 32 * 4096, track="explicit")
    try:
        assert r.tracker is None and r.tracking_mode == "explicit"
        r.mark_dirty(4096 * 3 + 10, 5000)  # spans pages 3 and 4
        assert np.flatnonzero(r.state.slots[0]).tolist() == [3, 4]
    finally:
        r.close()


def test_dirty_since_spans_both_slots_until_publish() -> None:
    fd = os.memfd_create("t-state")
    st = RegionState(fd, 16, 4096, "xxh3-128")
    try:
        st.start(0)
        st.mark(np.array([1, 2]))
        st.flip(1)                     # snapshot 1 starts
        st.mark(np.array([3]))
        assert np.flatnonzero(st.dirty_since(0)).tolist() == [1, 2, 3]
        assert np.flatnonzero(st.dirty_since(1)).tolist() == [3]
        st.publish(1)
        st.mark(np.array([4]))
        st.flip(2)                     # the slot of epoch 0 is reused for 2
        st.mark(np.array([5]))
        assert np.flatnonzero(st.dirty_since(1)).tolist() == [3, 4, 5]
        assert np.flatnonzero(st.dirty_since(2)).tolist() == [5]
        with pytest.raises(LookupError):
            st.dirty_since(0)         # nothing reaches back that far any more
        st.abort_flip()                # snapshot 2 failed: its writes fold back into epoch 1's list
        assert np.flatnonzero(st.dirty_since(1)).tolist() == [3, 4, 5]
        assert st.header()["labels"] in ((-1, 1), (1, -1))
        # a second process sees the same state through the same file
        other = RegionState(os.dup(fd))
        assert np.flatnonzero(other.dirty_since(1)).tolist() == [3, 4, 5]
        other.close()
    finally:
        st.close()
        os.close(fd)


def test_tracker_rejects_unaligned() -> None:
    with pytest.raises(ValueError):
        WriteTracker(4096 + 1, 4096)
