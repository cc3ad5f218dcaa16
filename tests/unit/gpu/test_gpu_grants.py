"""Pure parts of the node dispatcher: range sets, the grant book (policy, sizing, exactly-once commits,
replay), tokens and journal compaction."""

from __future__ import annotations

import random

import pytest

from edgeweave.api.gpujob import SchedulingPolicy
from edgeweave.gpu.dispatch_auth import job_token, verify
from edgeweave.gpu.dispatcher import compacted
from edgeweave.gpu.grants import GrantBook, GrantError, JobInfo
from edgeweave.gpu.ranges import RangeSet


def test_rangeset_matches_a_python_set_under_random_edits() -> None:
    rng = random.Random(7)
    for _ in range(200):
        rs, ref = RangeSet(), set()
        for _ in range(30):
            lo = rng.randrange(0, 200)
            hi = lo + rng.randrange(0, 20)
            if rng.random() < 0.6:
                rs.add(lo, hi)
                ref |= set(range(lo, hi))
            else:
                rs.remove(lo, hi)
                ref -= set(range(lo, hi))
        assert set(rs) == ref and len(rs) == len(ref)
        assert RangeSet.decode(rs.encode()) == rs
        assert rs.ranges() == sorted(rs.ranges())
        assert all(a[1] < b[0] for a, b in zip(rs.ranges(), rs.ranges()[1:], strict=False))  # merged


def test_rangeset_holds_two_to_the_31_members_as_one_range_and_bounds_decoding() -> None:
    big = RangeSet.span(0, 2**31)
    assert len(big) == 2**31 and big.encode() == f"0-{2**31 - 1}" and big.runs() == 1
    halves = big.split(2)
    assert [len(h) for h in halves] == [2**30, 2**30] and halves[0].union(halves[1]) == big
    with pytest.raises(ValueError, match="runs"):
        RangeSet.decode(",".join(str(2 * i) for i in range(5000)))
    with pytest.raises(ValueError, match="must be < 10"):
        RangeSet.decode("3-10", bound=10)
    with pytest.raises(ValueError, match="bad run"):
        RangeSet.decode("5-2")


def _info(key: str, blocks: int = 1000, **kw) -> JobInfo:
    return JobInfo(key=key, tenant=key.split("/")[0], total_blocks=blocks, latency_target_ms=1.0,
                   launch_overhead_us=8.0, time_per_block_us=10.0, **kw)


def _book(policy: SchedulingPolicy = SchedulingPolicy.Fifo, **kw) -> GrantBook:
    return GrantBook(policy, **kw)


def _add(book: GrantBook, info: JobInfo) -> None:
    rec = book.register(info)
    assert rec is not None
    book.apply(rec, 0.0)


def test_policies_pick_the_job_the_definition_says() -> None:
    for policy, expect in [(SchedulingPolicy.Fifo, "a/x/1"), (SchedulingPolicy.Priority, "c/x/1"),
                           (SchedulingPolicy.ShortestFirst, "b/x/1"), (SchedulingPolicy.Deadline, "b/x/1")]:
        book = _book(policy)
        _add(book, _info("a/x/1", 1000, priority=1, deadline=300.0))
        _add(book, _info("b/x/1", 100, priority=2, deadline=100.0))
        _add(book, _info("c/x/1", 500, priority=9))
        assert book.choose(["c/x/1", "b/x/1", "a/x/1"]).job == expect, policy  # type: ignore[union-attr]
    book = _book(SchedulingPolicy.FairShare)
    _add(book, _info("a/x/1"))
    _add(book, _info("b/x/1"))
    g = book.next_grant("a/x/1", "w", 0.0)
    book.apply(g, 0.0)
    book.apply(book.commit("a/x/1", g["id"], g["lo"], g["hi"], "w", 5.0), 0.01)  # type: ignore[arg-type]
    assert book.choose(["a/x/1", "b/x/1"]).job == "b/x/1"  # type: ignore[union-attr]


def test_grant_size_follows_the_live_load_of_other_jobs() -> None:
    book = _book(slots=1)
    _add(book, _info("a/x/1", 100_000))
    _add(book, _info("b/x/1", 100_000))
    alone = book.next_grant("a/x/1", "wa", 10.0)
    assert alone["load"] == 0.0
    # b held the GPU for 0.6 s of the last second: a's next grant is smaller.
    gb = book.next_grant("b/x/1", "wb", 9.4)
    book.apply(gb, 9.4)
    book.apply(book.commit("b/x/1", gb["id"], gb["lo"], gb["hi"], "wb", 600.0), 10.0)  # type: ignore[arg-type]
    loaded = book.next_grant("a/x/1", "wa", 10.0)
    assert 0.55 < loaded["load"] <= 0.61
    assert loaded["hi"] - loaded["lo"] < 0.5 * (alone["hi"] - alone["lo"])


def test_commits_are_exactly_once_across_release_regrant_and_replay() -> None:
    book = _book()
    _add(book, _info("a/x/1", 1000))
    g1 = book.next_grant("a/x/1", "w1", 0.0)
    book.apply(g1, 0.0)
    for rec in book.releases_for("w1"):  # w1's connection dropped
        book.apply(rec, 0.1)
    g2 = book.next_grant("a/x/1", "w2", 0.2)
    book.apply(g2, 0.2)
    assert (g2["lo"], g2["hi"]) == (g1["lo"], g1["hi"])
    c2 = book.commit("a/x/1", g2["id"], g2["lo"], g2["hi"], "w2", 1.0)
    book.apply(c2, 0.3)  # type: ignore[arg-type]
    with pytest.raises(GrantError) as e:  # w1 comes back with output for the same blocks: refused
        book.commit("a/x/1", g1["id"], g1["lo"], g1["hi"], "w1", 1.0)
    assert e.value.code == "conflict"
    assert book.commit("a/x/1", g2["id"], g2["lo"], g2["hi"], "w2", 1.0) is None  # a retried commit: no-op
    # A released grant nobody took is still committable (its blocks are in the pool).
    g3 = book.next_grant("a/x/1", "w3", 0.4)
    book.apply(g3, 0.4)
    book.apply({"t": "release", "id": g3["id"], "job": "a/x/1"}, 0.5)
    c3 = book.commit("a/x/1", g3["id"], g3["lo"], g3["hi"], "w3", 1.0)
    assert c3 is not None
    book.apply(c3, 0.6)
    # Replay of the compacted journal gives the same book; open grants come back as orphans.
    g4 = book.next_grant("a/x/1", "w4", 0.7)
    book.apply(g4, 0.7)
    journal = [{"t": "job", "info": _info("a/x/1", 1000).to_wire()}, g1,
               {"t": "release", "id": g1["id"], "job": "a/x/1"}, g2, c2, g3,
               {"t": "release", "id": g3["id"], "job": "a/x/1"}, c3, g4]
    kept = compacted(journal)  # type: ignore[arg-type]
    assert [r["t"] for r in kept] == ["job", "commit", "commit", "grant"]
    again = _book()
    for r in kept:
        again.apply(r, 5.0, live=False)
    j, k = again.jobs["a/x/1"], book.jobs["a/x/1"]
    assert j.committed == k.committed and j.pool == k.pool and set(j.leased) == {g4["id"]}
    assert again.claim("a/x/1", g4["id"], "someone-else") is None
    assert again.expired_orphans(5.0 + 11, 10.0)[0]["id"] == g4["id"]
    assert again.claim("a/x/1", g4["id"], "w4") is not None and not again.expired_orphans(99.0, 10.0)


def test_a_job_of_2_to_the_31_blocks_costs_nothing_per_block() -> None:
    book = _book(max_jobs=2)
    _add(book, _info("a/x/1", 2**31))
    g = book.next_grant("a/x/1", "w", 0.0)
    book.apply(g, 0.0)
    job = book.jobs["a/x/1"]
    assert job.pool.runs() == 1 and len(job.pool) == 2**31 - (g["hi"] - g["lo"])
    _add(book, _info("b/x/1"))
    with pytest.raises(GrantError) as e:
        book.register(_info("c/x/1"))
    assert e.value.code == "too-many-jobs"


def test_tokens_bind_namespace_name_and_uid() -> None:
    key = b"k" * 32
    t = job_token(key, "ns", "job", "uid-1")
    assert verify(key, "ns", "job", "uid-1", t)
    assert not verify(key, "ns2", "job", "uid-1", t)
    assert not verify(key, "ns", "job", "uid-2", t)  # a recreated job is another job
    assert not verify(b"x" * 32, "ns", "job", "uid-1", t)
    assert not verify(key, "ns/evil", "job", "uid-1", t)


def test_a_pods_share_is_its_own_pool_and_a_different_share_under_its_key_is_refused() -> None:
    from edgeweave.gpu.slice_worker import planned_blocks

    blocks = planned_blocks("v1;blocks=100;total=950;slices=5-9")
    assert blocks == "500-949"
    book = _book()
    _add(book, JobInfo(key="a/x/1#s1", tenant="a", total_blocks=950, latency_target_ms=1.0,
                       launch_overhead_us=8.0, time_per_block_us=10.0, blocks=blocks))
    g = book.next_grant("a/x/1#s1", "w", 0.0)
    assert g["lo"] == 500 and g["hi"] <= 950
    assert book.progress("a/x/1#s1")["total"] == 450
    with pytest.raises(GrantError) as e:
        book.register(JobInfo(key="a/x/1#s1", tenant="a", total_blocks=950, latency_target_ms=1.0,
                              launch_overhead_us=8.0, blocks="0-99"))
    assert e.value.code == "conflict"
    with pytest.raises(GrantError) as e:
        book.register(JobInfo(key="a/x/1#s2", tenant="a", total_blocks=950, latency_target_ms=1.0,
                              launch_overhead_us=8.0, blocks="900-1000"))
    assert e.value.code == "bad-request"
