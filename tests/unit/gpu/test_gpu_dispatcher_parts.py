"""The dispatcher's journal writer, epochs, output-directory hand-off and scheduling class, on their own
(the dispatcher as a whole runs as real processes in tests/integration/test_gpu_dispatcher.py)."""

from __future__ import annotations

import asyncio
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

from edgeweave.api.gpujob import SchedulingPolicy
from edgeweave.gpu.dispatch_auth import output_subdir
from edgeweave.gpu.dispatcher import Dispatcher, Journal, compacted
from edgeweave.gpu.sched_latency import request_realtime

KEY = b"k" * 32


def _dispatcher(tmp: Path, **kw) -> Dispatcher:
    return Dispatcher(tmp / "run" / "s.sock", tmp / "state", KEY, SchedulingPolicy.Fifo, **kw)


def test_journal_thread_writes_in_order_and_durable_waits_cover_everything_before(tmp_path: Path) -> None:
    j = Journal(tmp_path)
    j.open()

    async def run() -> None:
        j.start(asyncio.get_running_loop())
        seqs = [j.append({"t": "grant", "n": i}, durable=(i % 50 == 49)) for i in range(500)]
        await j.wait(seqs[-1], durable=True)
        assert j.written == j.synced == 500  # the last record was durable: all before it are on disk too
        await asyncio.gather(*(j.wait(s, durable=False) for s in seqs[:10]))  # already done: returns at once

    asyncio.run(run())
    j.close()
    lines = [json.loads(x) for x in (tmp_path / "journal.jsonl").read_text().splitlines()]
    assert [r["n"] for r in lines] == list(range(500))


def test_every_start_is_a_new_epoch_even_when_no_grant_record_survived(tmp_path: Path) -> None:
    # Grant records are answered before they reach the file: a start whose grants all died with it
    # must still not reuse its ids (two grants of one job would share an output file).
    epochs = []
    for _ in range(3):
        d = _dispatcher(tmp_path)
        epochs.append(d.book.epoch)
        d.journal.close()
    assert epochs == [1, 2, 3]
    recs = [json.loads(x) for x in (tmp_path / "state" / "journal.jsonl").read_text().splitlines()]
    assert [r for r in compacted(recs) if r["t"] == "epoch"] == [{"t": "epoch", "n": 3}]


def test_output_dir_is_handed_to_the_dispatchers_group_and_symlinks_are_not_followed(tmp_path: Path) -> None:
    out = tmp_path / "out"
    d = _dispatcher(tmp_path, output_dir=out)
    job = out / output_subdir("ns", "job", "0123456789abcdef")
    job.mkdir(parents=True, mode=0o755)
    os.chmod(job, 0o755)  # as the kubelet leaves a hostPath it created
    d._give_output_dir("ns", "job", "0123456789abcdef")
    st = job.stat()
    assert stat.S_IMODE(st.st_mode) == 0o2770 and st.st_gid == os.getgid()
    # A symlink where a job's directory should be is left alone, and so is what it points at.
    target = tmp_path / "elsewhere"
    target.mkdir(mode=0o755)
    os.chmod(target, 0o755)
    (out / output_subdir("ns", "other", "fedcba9876543210")).symlink_to(target)
    d._give_output_dir("ns", "other", "fedcba9876543210")
    assert stat.S_IMODE(target.stat().st_mode) == 0o755
    d._give_output_dir("ns", "absent", "00000000aaaaaaaa")  # not on this node: nothing to do, no error
    d.journal.close()


def test_real_time_class_is_taken_when_allowed_and_said_so_otherwise() -> None:
    assert "off" in request_realtime(0)
    # In a child: the test process keeps its own class.
    code = ("import os; from edgeweave.gpu.sched_latency import request_realtime as r; m = r(1); "
            "p = os.sched_getscheduler(0) & ~getattr(os, 'SCHED_RESET_ON_FORK', 0); print(m); print(p)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.splitlines()
    if out[0].startswith("SCHED_RR"):
        assert int(out[1]) == os.SCHED_RR and out[0] == "SCHED_RR priority 1"
    else:
        assert "SCHED_OTHER kept" in out[0] and int(out[1]) == os.SCHED_OTHER, out
