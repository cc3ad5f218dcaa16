"""Failover between network-namespace hosts, baselines in a real S3 server on its own host.

Host "src" runs the node agent (page server, mutual TLS) and a writer workload that writes
known patterns and acknowledges each write; "store" runs `rclone serve s3`; "dst" runs
`edgeweave memory-recover`. The recovered region must hold every acknowledged write whenever
the source agent lives; when it does not, the report must say which epoch it fell back to.
"""

from __future__ import annotations

import json
import secrets
import shutil
from pathlib import Path

import numpy as np
import pytest
from memhelpers import NPAGES, SIZE, Stack, kill9, region_words, wait_for

from edgeweave.memory.loadgen import read_acks
from edgeweave.memory.patterns import check

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]


@pytest.mark.parametrize("track", ["auto", "explicit"])
def test_kill_under_steady_writes_keeps_every_acknowledged_write(stack: Stack, track: str) -> None:
    stack.start_agent()
    w, ready = stack.start_writer("sessions", "--track", track, "--dirty-pages", "1500",
                                  "--rate", "800", "--scan-interval", "0.3")
    if track == "auto":
        assert ready["tracking"].startswith("uffd-wp-async+PAGEMAP_SCAN")
    ack = stack.dir / "sessions.ack"
    # keep writing (each write acknowledged) until 400 more acks are in, then kill mid-stream
    wait_for(lambda: ack.stat().st_size >= (1500 + 400) * 8, 30, "writer acks")
    kill9(w)
    rc, rep, dest = stack.recover("sessions")
    assert rc == 0, rep
    assert rep["mode"] == "baseline+dirty" and rep["source_reachable"] and rep["epoch"] == 1
    assert rep["sources"]["baseline"]["from"] == "store" and rep["sources"]["baseline"]["url"].startswith("s3://")
    acked = read_acks(str(ack), NPAGES)
    ahead, wrong = check(region_words(dest), acked)
    assert len(wrong) == 0, f"lost or corrupt pages: {wrong[:10]}"
    assert len(ahead) <= 1  # at most the one write in flight when the writer died
    written = int((acked > 0).sum())
    assert written >= 1500 and rep["dirty_pages"] >= written
    assert rep["dirty_pages"] <= written + 1  # only the changed pages crossed the link
    assert rep["sources"]["source_agent"]["pages"] == rep["pages"]


def test_writes_after_the_last_scan_are_found_by_the_sweep(stack: Stack) -> None:
    stack.start_agent()
    # No scan ever runs after the baseline: every write since is found only by checksum sweep.
    w, _ = stack.start_writer("cache", "--track", "uffd", "--dirty-pages", "700", "--scan-interval", "3600")
    kill9(w)
    rc, rep, dest = stack.recover("cache")
    assert rc == 0, rep
    assert rep["source_sweep"] and rep["source_sweep"]["found"] == 700, rep
    ahead, wrong = check(region_words(dest), read_acks(str(stack.dir / "cache.ack"), NPAGES))
    assert len(wrong) == 0 and len(ahead) == 0
    assert rep["pages"] == 700


def test_kill_during_a_snapshot(stack: Stack) -> None:
    """SIGKILL while a baseline is being uploaded: the half-written epoch is never used, no ack lost."""
    stack.start_agent()
    w, ready = stack.start_writer("orders", "--dirty-pages", "200", "--rate", "600", "--baseline-every", "1")
    objs = stack.env.store_root / "baselines" / f"{stack.ns}.orders"

    def partial() -> list[Path]:
        return [p for p in objs.iterdir() if p.name.startswith("epoch-") and not (p / "manifest.json").exists()
                and any((p / "data").glob("0*"))]

    # slow the src-store link so the 32 MiB upload takes seconds, then kill once one object is stored
    stack.env.topo.shape("B", "40mbit")
    try:
        abandoned = wait_for(partial, 60, "a snapshot upload in progress", interval=0.02)
        kill9(w)
    finally:
        stack.env.topo.shape("B", None)
    ack = stack.dir / "orders.ack"
    published = int((objs / "CURRENT").read_text())
    assert all(int(p.name[6:]) > published for p in abandoned)
    rc, rep, dest = stack.recover("orders")
    assert rc == 0, rep
    assert rep["mode"] == "baseline+dirty" and rep["epoch"] == published
    ahead, wrong = check(region_words(dest), read_acks(str(ack), NPAGES))
    assert len(wrong) == 0, f"lost acknowledged writes: {len(wrong)}"
    assert len(ahead) <= 1


def test_host_failure_falls_back_to_the_baseline_and_says_which(stack: Stack) -> None:
    agent = stack.start_agent()
    w, ready = stack.start_writer("state", "--dirty-pages", "300", "--second-baseline-after", "100")
    assert ready["epoch"] == 2
    kill9(w)
    kill9(agent)  # the whole source host is gone
    rc, rep, dest = stack.recover("state")
    assert rc == 0, rep
    assert rep["mode"] == "baseline-only" and rep["source_reachable"] is False and rep["epoch"] == 2
    assert "HOST FAILURE" in rep["message"] and "after epoch 2 are lost" in rep["message"]
    assert rep["sources"]["source_agent"]["reachable"] is False and rep["pages"] == 0
    # exactly epoch 2: the first 100 dirty writes are in it, the 200 after it are not
    acks = np.frombuffer((stack.dir / "state.ack").read_bytes(), dtype="<u4").reshape(-1, 2)
    at_epoch2 = np.zeros(NPAGES, dtype=np.int64)
    at_epoch2[acks[:100, 0]] = acks[:100, 1]
    ahead, wrong = check(region_words(dest), at_epoch2)
    assert len(wrong) == 0 and len(ahead) == 0
    rc, rep, dest = stack.recover("state", "--require-source")
    assert rc == 3 and not rep["ok"] and not dest.exists()


def test_wrong_token_and_unknown_region_are_refused_alike(stack: Stack) -> None:
    stack.start_agent()
    w, _ = stack.start_writer("secret", "--dirty-pages", "10")
    bad = stack.dir / "bad-token"
    bad.write_text("ff" * 32)
    rc, rep, dest = stack.recover("secret", token_file=bad)
    assert rc == 3 and not rep["ok"] and rep["mode"] == "failed"
    assert "refused" in rep["message"] and rep["bytes"] == 0
    assert not dest.exists()
    rc, rep, _ = stack.recover("secret")
    assert rc == 0 and rep["mode"] == "baseline+dirty"
    # same store name, another pod UID on the agent: refused like a wrong token
    rc, rep, _ = stack.recover("secret", key=f"{stack.ns}/{'ab' * 8}/secret")
    assert rc == 3 and "refused" in rep["message"]
    kill9(w)


def test_corrupt_baseline_object_is_detected_and_repaired(stack: Stack) -> None:
    agent = stack.start_agent()
    w, _ = stack.start_writer("model", "--dirty-pages", "50")
    kill9(w)
    # flip one byte of page 17 in the object the S3 server stores
    data = stack.env.store_root / "baselines" / f"{stack.ns}.model" / "epoch-000001" / "data" / "000000"
    with open(data, "r+b") as f:
        f.seek(17 * 4096 + 100)
        b = f.read(1)
        f.seek(17 * 4096 + 100)
        f.write(bytes([b[0] ^ 0xFF]))
    rc, rep, dest = stack.recover("model")
    assert rc == 0 and rep["corrupt_baseline_pages"] == [17]
    assert "repaired" in rep["message"]
    ahead, wrong = check(region_words(dest), read_acks(str(stack.dir / "model.ack"), NPAGES))
    assert len(wrong) == 0 and len(ahead) == 0
    kill9(agent)
    rc, rep, dest = stack.recover("model")
    assert rc == 3 and not rep["ok"] and rep["corrupt_baseline_pages"] == [17]
    assert not dest.exists()


def test_prestaged_baseline_is_read_locally(stack: Stack) -> None:
    """The dst node agent pulls each new baseline in the background; recovery then reads it locally."""
    stack.start_agent()
    cache = stack.dir / "prestaged"
    w, ready = stack.start_writer("feed", "--dirty-pages", "100", "--rate", "300", "--baseline-every", "2")
    dst_agent = stack.start_agent("--prestage", ready["store_name"], "--prestage-cache", str(cache), "--prestage-rate",
                      "400mbit", "--prestage-interval", "0.3", role="dst", control=stack.dir / "dst.sock")
    # wait until the pre-staged copy has caught up with an epoch after the first
    wait_for(lambda: (cache / ready["store_name"] / "CURRENT").exists()
             and int((cache / ready["store_name"] / "CURRENT").read_text()) >= 2, 60, "pre-staged epoch >= 2")
    kill9(w)
    objs = stack.env.store_root / "baselines" / ready["store_name"]
    published = int((objs / "CURRENT").read_text())
    wait_for(lambda: int((cache / ready["store_name"] / "CURRENT").read_text()) == published, 30,
             "pre-staged copy of the last epoch")
    rc, rep, dest = stack.recover("feed", "--local-cache", str(cache))
    assert rc == 0, rep
    assert rep["sources"]["baseline"]["from"] == "local" and rep["epoch"] == published
    ahead, wrong = check(region_words(dest), read_acks(str(stack.dir / "feed.ack"), NPAGES))
    assert len(wrong) == 0 and len(ahead) <= 1
    # without a local copy (the dst agent stopped, its cache gone) recovery reads the store
    kill9(dst_agent)
    shutil.rmtree(cache / ready["store_name"])
    rc, rep, _ = stack.recover("feed", "--local-cache", str(cache))
    assert rc == 0 and rep["sources"]["baseline"]["from"] == "store"
    assert "nothing pre-staged" in rep["sources"]["baseline"]["note"]


def _lazy_recovery(stack: Stack, name: str, dirty: int, rate: int, *, prestage: bool) -> tuple:
    """A writer killed mid-stream, then a lazy restore while `lazy-check` serves 3,000 requests from the
    region (with the baseline pre-staged in node memory first, when `prestage`). Returns (writer's READY,
    ack file, region, recovery report, what lazy-check served)."""
    stack.start_agent()
    w, ready = stack.start_writer(name, "--dirty-pages", str(dirty), "--rate", str(rate))
    ack = stack.dir / f"{name}.ack"
    cache = ["--local-cache", str(_prestage_in_memory(stack, ready["store_name"]))] if prestage else []
    wait_for(lambda: ack.stat().st_size >= (dirty + 200) * 8, 30, "writer acks")
    kill9(w)
    dest = Path("/dev/shm") / f"ewm-test-{secrets.token_hex(4)}-{name}"
    stack.dests.append(dest)
    sock = stack.dir / f"{name}.sock"
    app = stack.popen("dst", "memory", "lazy-check", "--dest", str(dest), "--size", str(SIZE), "--helper",
                      str(sock), "--ack", str(ack), "--requests", "3000", log="lazy-app.log")
    rc, rep, _ = stack.recover(name, "--lazy", str(sock), *cache, dest=dest)
    assert rc == 0, rep["message"]
    assert app.stdout is not None
    served = json.loads(app.stdout.readline())
    app.wait(timeout=30)
    return ready, ack, dest, rep, served


def test_lazy_restore_serves_before_the_region_is_resident(stack: Stack) -> None:
    """The replacement attaches a userfaultfd (missing mode) and serves at once; the fill follows."""
    ready, ack, dest, rep, served = _lazy_recovery(stack, "lazy", 800, 500, prestage=False)
    lz = rep["source_sweep"]["lazy"]
    assert rep["mode"] == "lazy:baseline+dirty" and rep["epoch"] == ready["epoch"]
    assert served["wrong"] == 0 and served["requests"] == 3000
    assert lz["faults"] > 0  # requests touched missing pages and were served by the fault handler
    # requests were answered before the last page was in place
    assert served["first_served_at"] < lz["t0_monotonic"] + lz["fully_resident_s"]
    assert lz["filled_from_source"] + lz["fault_pages_from_source"] >= rep["dirty_pages"]
    ahead, wrong = check(region_words(dest), read_acks(str(ack), NPAGES))
    assert len(wrong) == 0 and len(ahead) <= 1


def _prestage_in_memory(stack: Stack, store_name: str) -> Path:
    """What the dst agent does after a snapshot: pull the epoch into node memory (tmpfs), checked."""
    cache = Path("/dev/shm") / f"ewm-test-prestaged-{secrets.token_hex(4)}"
    stack.cleanup.append(cache)
    r = stack.popen("dst", "memory", "prestage", "--store", stack.env.store_url, "--cache", str(cache),
                    "--region", store_name, log="prestage.log")
    assert r.stdout is not None
    out = json.loads(r.stdout.read().strip().splitlines()[-1])
    r.wait(timeout=60)
    assert out.get("ok") and out["pulled"], out
    return cache


def test_a_prestaged_copy_in_node_memory_is_adopted_not_copied(stack: Stack) -> None:
    """Pre-staged on the region's filesystem: recovery renames it into place (no copy, no second
    check of every page) and writes only the dirty pages from the source over it."""
    stack.start_agent()
    w, ready = stack.start_writer("adopt", "--dirty-pages", "700", "--rate", "400")
    ack = stack.dir / "adopt.ack"
    cache = _prestage_in_memory(stack, ready["store_name"])
    wait_for(lambda: ack.stat().st_size >= (700 + 300) * 8, 30, "writer acks")
    kill9(w)
    rc, rep, dest = stack.recover("adopt", "--local-cache", str(cache))
    assert rc == 0, rep
    b = rep["sources"]["baseline"]
    assert b["from"] == "local" and b["adopted"] is True and b["bytes"] == 0, b
    assert "adopt_s" in rep["phases"] and "baseline_verify_s" not in rep["phases"]
    assert rep["mode"] == "baseline+dirty" and rep["pages"] >= 700
    ahead, wrong = check(region_words(dest), read_acks(str(ack), NPAGES))
    assert len(wrong) == 0 and len(ahead) <= 1
    assert not (cache / ready["store_name"] / "CURRENT").exists()  # the pre-staged epoch was consumed


def test_lazy_restore_on_an_adopted_copy_faults_only_the_dirty_pages(stack: Stack) -> None:
    ready, ack, dest, rep, served = _lazy_recovery(stack, "lzad", 600, 400, prestage=True)
    lz = rep["source_sweep"]["lazy"]
    assert rep["mode"] == "lazy:baseline+dirty" and rep["sources"]["baseline"]["adopted"] is True
    assert served["wrong"] == 0 and served["requests"] == 3000
    # the baseline was in place: nothing was read from it by fault or fill; the dirty pages came from the
    # source. MINOR mode (this kernel): clean pages fault too, and are mapped without a read.
    assert lz["filled_from_baseline"] == 0 and lz["faults"] > 0
    assert lz["minor_mode"] is True and "punch_s" not in rep["phases"]
    assert lz["filled_from_source"] + lz["fault_pages_from_source"] + lz.get("already_present", 0) >= rep["dirty_pages"]
    ahead, wrong = check(region_words(dest), read_acks(str(ack), NPAGES))
    assert len(wrong) == 0 and len(ahead) <= 1
