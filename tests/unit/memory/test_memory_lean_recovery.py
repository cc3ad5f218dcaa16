"""The recovery command's path stays lean (no numpy, pydantic, boto3 or kubernetes on a
pre-staged recovery), and the numpy-free pieces it uses agree with the numpy ones."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from edgeweave.memory.hashing import mismatches, page_sums, raw_sums
from edgeweave.memory.recovery import RecoveryReport
from edgeweave.memory.store import Manifest, runs_of
from edgeweave.memory.transport_tcp import _BITS

HEAVY = ("numpy", "pydantic", "pydantic_core", "boto3", "botocore", "kubernetes", "kopf")


def test_the_recovery_command_imports_nothing_heavy() -> None:
    # what `edgeweave memory-recover` imports up to the recovery itself (an S3 store spec included:
    # its client is made on first use, which a pre-staged recovery never reaches)
    code = ("import sys; from edgeweave.cli import SUBCOMMANDS; import importlib; "
            "m = importlib.import_module(SUBCOMMANDS['memory-recover'][0]); "
            "from edgeweave.memory import recovery, store, transport_tcp; "
            "s = store.open_store('s3://bucket/prefix'); "
            f"print(sorted({{k.split('.')[0] for k in sys.modules}} & set({HEAVY!r})))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "AWS_ENDPOINT_URL": "https://127.0.0.1:1"})
    assert out.stdout.strip() == "[]", out.stdout


def test_dirty_bitmap_decoding_matches_numpy() -> None:
    rng = np.random.default_rng(3)
    for npages in (1, 7, 8, 9, 4096, 10_003):
        dirty = rng.random(npages) < 0.05
        bits = np.packbits(dirty).tobytes()
        pages = [8 * i + j for i, byte in enumerate(bits) if byte for j in _BITS[byte]]
        pages = [p for p in pages if p < npages]
        assert pages == np.flatnonzero(dirty).tolist()


def test_raw_sums_and_mismatches_agree_with_page_sums() -> None:
    buf = bytearray(os.urandom(64 * 4096))
    mv = memoryview(buf)
    pages = [0, 3, 4, 5, 63]
    assert raw_sums(mv, 4096, pages) == page_sums(mv, 4096, pages).tobytes()
    ref = raw_sums(mv, 4096)
    buf[4 * 4096] ^= 1
    assert mismatches(raw_sums(mv, 4096, pages), ref, pages) == [2]
    assert mismatches(raw_sums(mv, 4096), ref) == [4]


def test_runs_of_takes_lists_and_arrays() -> None:
    assert runs_of([1, 2, 3, 7, 9, 10]) == runs_of(np.array([1, 2, 3, 7, 9, 10])) == [(0, 1, 3), (3, 7, 1), (4, 9, 2)]
    assert runs_of([]) == []


def test_manifest_is_checked_field_by_field() -> None:
    good = dict(region="ns.app", epoch=3, size_bytes=8192, page_size_bytes=4096, npages=2, checksum_algo="xxh3-128",
                sums_sha256="ab", created_at="now")
    m = Manifest.model_validate_json(json.dumps(good))
    assert Manifest.model_validate_json(m.model_dump_json(indent=1)) == m
    for bad in ({**good, "epoch": "3"}, {**good, "npages": True}, {**good, "page_size_bytes": 0},
                {k: v for k, v in good.items() if k != "sums_sha256"}, [good]):
        with pytest.raises(ValueError):
            Manifest.model_validate_json(json.dumps(bad))


def test_report_json_is_plain() -> None:
    r = RecoveryReport(ok=True, region="a/b/c", mode="baseline+dirty", epoch=1, source_reachable=True, pages=2,
                       bytes=10, duration_s=0.1, corrupt_baseline_pages=np.array([1, 2]).tolist(),
                       phases={"x": 0.1}, source_sweep={"n": np.int64(3)})
    d = json.loads(r.model_dump_json())
    assert d["source_sweep"] == {"n": 3} and d["corrupt_baseline_pages"] == [1, 2] and d["ok"] is True
