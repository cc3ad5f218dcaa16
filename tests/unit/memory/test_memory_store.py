"""Baseline store: atomic epochs, checksums, and the snapshot ordering that loses no write."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgeweave.memory.region import Region
from edgeweave.memory.store import DirStore, StoreError


def test_write_publish_read(tmp_path: Path) -> None:
    store = DirStore(tmp_path)
    data = np.random.default_rng(1).integers(0, 255, 16 * 4096, dtype=np.uint8)
    m = store.write("r", store.next_epoch("r"), memoryview(data), 4096, "xxh3-128")
    assert (m.epoch, store.current("r"), store.next_epoch("r")) == (1, 1, 2)
    out = bytearray(len(data))
    store.read_into(store.manifest("r"), memoryview(out))
    assert bytes(out) == data.tobytes()
    assert store.sums(m).shape == (16, 16)
    # a second and third epoch; only two are kept
    store.write("r", 2, memoryview(data), 4096, "xxh3-128")
    store.write("r", 3, memoryview(data), 4096, "xxh3-128")
    assert store.epochs("r") == [2, 3] and store.current("r") == 3
    assert not list(tmp_path.glob("r/.tmp-*"))


def test_corrupt_sums_file_is_refused(tmp_path: Path) -> None:
    store = DirStore(tmp_path)
    m = store.write("r", 1, memoryview(bytes(8 * 4096)), 4096, "xxh3-128")
    p = store.epoch_dir("r", 1) / "sums"
    raw = bytearray(p.read_bytes())
    raw[5] ^= 1
    p.write_bytes(raw)
    with pytest.raises(StoreError):
        store.sums(m)
    with pytest.raises(StoreError):
        DirStore(tmp_path / "empty").manifest("r")


class _WritesDuringCopy(DirStore):
    """A store whose write() lets the workload write a page after the flip, mid-snapshot."""

    def __init__(self, root: Path, region: Region) -> None:
        super().__init__(root)
        self.region = region

    def write(self, name, epoch, buf, page_size, algo, **kw):  # type: ignore[no-untyped-def]
        self.region.array[9 * 4096] = 42      # tracked by the kernel, not yet scanned
        self.region.mark_dirty(0, 0)          # (no-op) the explicit path must not deadlock mid-copy
        return super().write(name, epoch, buf, page_size, algo, **kw)


def test_write_during_snapshot_is_in_the_new_dirty_list(tmp_path: Path) -> None:
    r = Region.create("t-snap", 32 * 4096, track="uffd")
    try:
        r.array[3 * 4096] = 1                  # before the snapshot: unscanned
        store = _WritesDuringCopy(tmp_path, r)
        m = r.baseline(store)
        assert m.epoch == 1
        r.collect()
        since1 = np.flatnonzero(r.state.dirty_since(1)).tolist()
        assert 9 in since1                     # written after t0: must be dirty relative to epoch 1
        assert 3 not in since1                 # written before t0: it is in the baseline
        assert 3 in np.flatnonzero(r.state.dirty_since(0)).tolist()
        assert r.state.header()["published"] == 1
    finally:
        r.close()


def test_init_container_command() -> None:
    from edgeweave.api.workloadgroup import MemoryRecovery
    from edgeweave.memory.initcontainer import recover_command

    s = MemoryRecovery(enabled=True, store_claim="baselines", token_secret="mem-token")
    argv = recover_command(s, "sessions", "10.0.0.7")
    assert argv[:2] == ["edgeweave", "memory-recover"]
    assert argv[argv.index("--source") + 1] == "10.0.0.7:7470"
    assert "--require-source" not in argv
    assert argv[argv.index("--tls-ca") + 1].endswith("/ca.crt")  # TLS is the page server's default
    from edgeweave.memory.initcontainer import source_region

    key = source_region("shop", "0f1e2d3c-aaaa-bbbb-cccc-000011112222", "sessions")
    argv = recover_command(s, key, "10.0.0.7", local_cache="/var/lib/edgeweave/prestaged")
    assert argv[argv.index("--region") + 1] == key and "/" not in argv[argv.index("--dest") + 1].split("/dev/shm/")[1]
    assert argv[argv.index("--local-cache") + 1] == "/var/lib/edgeweave/prestaged"
    with pytest.raises(ValueError):
        recover_command(MemoryRecovery(enabled=False), "sessions", None)


def test_recovery_patch_reads_the_prestaged_copy_and_runs_lazily_when_the_app_says_so() -> None:
    from edgeweave.api.workloadgroup import MemoryRecovery
    from edgeweave.memory.initcontainer import PRESTAGE_DIR, source_region
    from edgeweave.memory.podpatch import INIT_NAME, PRESTAGE_VOLUME, recovery_patch

    settings = MemoryRecovery(enabled=True, store_claim="base", token_secret="tok")
    region = source_region("shop", "0f1e2d3c-aaaa-bbbb-cccc-000011112222", "sessions")
    plain = recovery_patch({"containers": [{"name": "app"}]}, settings, region, "10.0.0.7", "img:1",
                           prestage_host_dir="")
    init = plain["initContainers"][0]
    assert "restartPolicy" not in init and "--lazy" not in init["command"][-1]
    assert "--local-cache" not in init["command"][-1] and PRESTAGE_VOLUME not in {v["name"] for v in plain["volumes"]}

    spec = {"containers": [{"name": "app", "env": [{"name": "EDGEWEAVE_MEMORY_LAZY_SOCKET",
                                                    "value": "/dev/shm/edgeweave-lazy.sock"}]}]}
    out = recovery_patch(spec, settings, region, "10.0.0.7", "img:1", prestage_host_dir="/dev/shm/edgeweave/prestaged")
    init = out["initContainers"][0]
    assert init["name"] == INIT_NAME and init["restartPolicy"] == "Always"  # a native sidecar: the app starts
    assert init["startupProbe"]["exec"]["command"] == ["test", "-S", "/dev/shm/edgeweave-lazy.sock"]
    script = init["command"][-1]
    assert "--lazy /dev/shm/edgeweave-lazy.sock" in script and script.endswith("exec sleep infinity")
    assert f"--local-cache {PRESTAGE_DIR}" in script
    mount = next(m for m in init["volumeMounts"] if m["name"] == PRESTAGE_VOLUME)
    # only this region's pre-staged directory, read-only
    assert mount == {"name": PRESTAGE_VOLUME, "mountPath": f"{PRESTAGE_DIR}/shop.sessions", "subPath": "shop.sessions",
                     "readOnly": True}
    vol = next(v for v in out["volumes"] if v["name"] == PRESTAGE_VOLUME)
    assert vol["hostPath"]["path"] == "/dev/shm/edgeweave/prestaged"
    # a socket outside the shared /dev/shm is not a lazy declaration
    odd = {"containers": [{"name": "app", "env": [{"name": "EDGEWEAVE_MEMORY_LAZY_SOCKET", "value": "/etc/x"}]}]}
    assert "restartPolicy" not in recovery_patch(odd, settings, region, None, "img:1", "")["initContainers"][0]
