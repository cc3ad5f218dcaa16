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


@pytest.fixture
def shm_dir():  # type: ignore[no-untyped-def]
    import shutil
    import tempfile

    d = Path(tempfile.mkdtemp(prefix="ewm-unit-", dir="/dev/shm"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


def test_a_verified_prestaged_copy_is_adopted_by_rename_and_consumed(tmp_path: Path, shm_dir: Path) -> None:
    shared, local = DirStore(tmp_path / "shared"), DirStore(shm_dir / "prestaged")
    _publish(shared, "ns.r", 3)
    prestage_once(shared, local, "ns.r", None)
    m = local.manifest("ns.r")
    data = local.epoch_dir("ns.r", m.epoch) / "data"
    ino = data.stat().st_ino
    dest = shm_dir / "region"
    mark = local.adopt(m, str(dest))
    assert mark is not None and mark["sums_sha256"] == m.sums_sha256
    assert dest.stat().st_ino == ino and set(dest.read_bytes()) == {3}  # moved, not copied
    assert (dest.stat().st_mode & 0o777) == 0o600
    # consumed: no manifest without data is left for a later reader, and the next pull re-fetches
    assert local.current("ns.r") is None and not local.epoch_dir("ns.r", m.epoch).exists()
    assert prestage_once(shared, local, "ns.r", None)["pulled"] is True


def test_adoption_needs_the_prestage_mark_and_one_filesystem(tmp_path: Path, shm_dir: Path) -> None:
    shared = DirStore(tmp_path / "shared")
    _publish(shared, "ns.r", 4)
    # written by a snapshot, not pulled and checked by pre-staging: no mark, never adopted
    assert shared.adopt(shared.manifest("ns.r"), str(shm_dir / "a")) is None
    assert not (shm_dir / "a").exists() and shared.current("ns.r") == 1
    # pulled onto disk, the region on tmpfs: a rename cannot cross the mount, nothing is consumed
    disk = DirStore(tmp_path / "disk-cache")
    prestage_once(shared, disk, "ns.r", None)
    m = disk.manifest("ns.r")
    assert disk.adopt(m, str(shm_dir / "b")) is None
    assert disk.current("ns.r") == m.epoch and (disk.epoch_dir("ns.r", m.epoch) / "data").exists()
    # a mark for other checksums (the epoch was replaced under the same number) is not trusted
    other = DirStore(shm_dir / "c")
    prestage_once(shared, other, "ns.r", None)
    (other.epoch_dir("ns.r", 1) / "verified.json").write_text('{"sums_sha256": "00"}')
    assert other.adopt(other.manifest("ns.r"), str(shm_dir / "d")) is None


def test_the_source_answers_for_the_prestaged_epoch_so_the_store_is_not_asked(tmp_path: Path) -> None:
    from edgeweave.memory.protocol import ProtocolError
    from edgeweave.memory.recovery import choose_baseline

    shared, local = DirStore(tmp_path / "shared"), DirStore(tmp_path / "local")
    _publish(shared, "ns.r", 1)
    prestage_once(shared, local, "ns.r", None)
    _publish(shared, "ns.r", 2)  # the store moved on to epoch 2; the local copy holds 1
    asked: list[int] = []

    def dirty_of(e: int) -> str:
        asked.append(e)
        return f"dirty since {e}"

    gone = DirStore(tmp_path / "gone")  # the store is not even asked: an unreachable one changes nothing
    for s in (shared, gone):
        used, label, m, note, early = choose_baseline(s, local, "ns.r", None, dirty_of)
        assert (label, m.epoch, early) == ("local", 1, "dirty since 1") and used is local
        assert "store was not asked" in note
    assert asked == [1, 1]

    def too_old(e: int) -> str:
        raise ProtocolError(f"dirty list refused: no dirty list reaches back to epoch {e}")

    used, label, m, note, early = choose_baseline(shared, local, "ns.r", None, too_old)
    assert (label, m.epoch, early) == ("store", 2, None) and "cannot answer for pre-staged epoch 1" in note
    # no source at all: the store decides (newest published epoch), as before
    used, label, m, note, early = choose_baseline(shared, local, "ns.r", None, None)
    assert (label, m.epoch) == ("store", 2) and "not the store's current" in note
    used, label, m, note, _ = choose_baseline(gone, local, "ns.r", None, too_old)
    assert (label, m.epoch) == ("local", 1) and "unreachable" in note


def test_prestage_checks_pages_as_they_arrive_even_across_pieces(tmp_path: Path) -> None:
    """2 MiB pages and 1 MiB rate-limited pieces: every page is still checked, a bad one refused."""
    shared, local = DirStore(tmp_path / "shared"), DirStore(tmp_path / "local")
    ps = 2 << 20
    buf = np.arange(4 * ps, dtype=np.uint64).view(np.uint8)[:4 * ps].copy()
    shared.write("ns.h", 1, memoryview(buf), ps, DEFAULT_ALGO)
    assert prestage_once(shared, local, "ns.h", 1e12)["pulled"]
    data = shared.epoch_dir("ns.h", 1) / "data"
    raw = bytearray(data.read_bytes())
    raw[3 * ps + 5] ^= 1
    data.write_bytes(bytes(raw))
    import shutil

    shutil.rmtree(local.region_dir("ns.h"))
    with pytest.raises(Exception, match=r"1 page\(s\).*\[3\]"):
        prestage_once(shared, local, "ns.h", 1e12)
