"""Pure parts of the hardening and store work: region ids, pod cgroups, rates, runs, baseline choice."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from edgeweave.memory.hashing import DEFAULT_ALGO
from edgeweave.memory.naming import RegionId, pod_in_cgroup
from edgeweave.memory.prestage import parse_rate, prestage_once
from edgeweave.memory.recovery import pick_baseline, store_name_of
from edgeweave.memory.store import DirStore, runs_of
from edgeweave.memory.store_s3 import RateLimit

UID = "3f0c6a1e-2b7d-4c55-9a1e-77aa00bb11cc"


def test_region_ids_keep_namespaces_apart() -> None:
    a, b = RegionId("team-a", UID, "sessions"), RegionId("team-b", UID, "sessions")
    assert a.key != b.key and a.store_name != b.store_name
    assert RegionId.parse(a.key) == a and store_name_of(a.key) == "team-a.sessions"
    for bad in (("Team", UID, "x"), ("a.b", UID, "x"), ("ns", "not a uid", "x"), ("ns", UID, "../x"),
                ("ns", UID, "a/b")):
        with pytest.raises(ValueError):
            RegionId(*bad)
    with pytest.raises(ValueError):
        RegionId.parse("ns/sessions")


def test_pod_cgroup_forms() -> None:
    cgroupfs = f"0::/kubepods/burstable/pod{UID}/0123abcd\n"
    systemd = f"0::/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{UID.replace('-', '_')}.slice/cri-x\n"
    v1 = f"8:pids:/kubepods/pod{UID}/abc\n0::/\n"
    for text in (cgroupfs, systemd, v1):
        assert pod_in_cgroup(UID, text)
    other = UID[:-1] + "d"
    assert not pod_in_cgroup(other, cgroupfs) and not pod_in_cgroup(UID, "0::/user.slice\n")
    assert not pod_in_cgroup(UID, f"0::/kubepods/pod{UID}x/c\n")  # a longer UID is another pod


def test_rates_and_runs() -> None:
    assert parse_rate("200mbit") == 25e6 and parse_rate("25MB") == 25e6 and parse_rate("1e3") == 1e3
    with pytest.raises(ValueError):
        parse_rate("fast")
    assert runs_of(np.array([1, 2, 3, 7, 9, 10])) == [(0, 1, 3), (3, 7, 1), (4, 9, 2)]
    assert runs_of(np.array([], dtype=np.int64)) == []


def test_rate_limit_holds_the_rate() -> None:
    lim = RateLimit(20e6, burst=1 << 20)
    t = time.monotonic()
    for _ in range(5):
        lim.take(1 << 20)  # 5 MiB at 20 MB/s with a 1 MiB burst: at least ~0.2 s
    assert time.monotonic() - t >= 0.19


def _publish(store: DirStore, name: str, fill: int, npages: int = 64) -> None:
    buf = np.full(npages * 4096, fill, dtype=np.uint8)
    store.write(name, store.next_epoch(name), memoryview(buf), 4096, DEFAULT_ALGO)


def test_prestaged_copy_is_used_only_when_it_is_the_current_epoch(tmp_path: Path) -> None:
    shared, local = DirStore(tmp_path / "shared"), DirStore(tmp_path / "local")
    _publish(shared, "ns.r", 1)
    used, label, m, note = pick_baseline(shared, local, "ns.r", None)
    assert label == "store" and "nothing pre-staged" in note
    out = prestage_once(shared, local, "ns.r", None)
    assert out["pulled"] and prestage_once(shared, local, "ns.r", None)["pulled"] is False
    used, label, m, _ = pick_baseline(shared, local, "ns.r", None)
    assert label == "local" and used is local and m.epoch == 1
    got = bytearray(m.size_bytes)
    assert local.read_into(m, memoryview(got)) == m.size_bytes and set(got) == {1}
    part = bytearray(3 * 4096)
    assert local.read_pages(m, np.array([2, 3, 9]), memoryview(part)) == 3 * 4096
    _publish(shared, "ns.r", 2)  # a newer epoch in the store: the local copy is stale
    used, label, m, note = pick_baseline(shared, local, "ns.r", None)
    assert label == "store" and m.epoch == 2 and "not the store's current" in note
    # shared store gone: the pre-staged epoch is used, and the note says so
    used, label, m, note = pick_baseline(DirStore(tmp_path / "gone"), local, "ns.r", None)
    assert label == "local" and m.epoch == 1 and "unreachable" in note


def test_prestage_refuses_a_corrupt_copy(tmp_path: Path) -> None:
    shared, local = DirStore(tmp_path / "shared"), DirStore(tmp_path / "local")
    _publish(shared, "ns.r", 5)
    data = shared.epoch_dir("ns.r", 1) / "data"
    raw = bytearray(data.read_bytes())
    raw[4096 * 7 + 3] ^= 0xFF
    data.write_bytes(bytes(raw))
    with pytest.raises(Exception, match="failed their checksum"):
        prestage_once(shared, local, "ns.r", None)
    assert local.current("ns.r") is None  # nothing half-published
