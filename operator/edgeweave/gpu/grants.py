"""The node dispatcher's book of jobs, grants and commits. Pure: no sockets, no clock, no files.

A job is a range of linear blocks [0, total). Its blocks are in exactly one of three places:

    pool       not handed out (or handed back)
    leased     granted to a worker, running or finished but not yet committed
    committed  the worker wrote the grant's output and the dispatcher recorded it

A grant is one sub-kernel: a contiguous range taken from the front of the pool, sized when it is
granted — not at plan time — by the optimiser from the load the GPU has at that moment (other jobs'
grants over the last window, and DCGM when it is fresher and higher), so one job's sub-kernels differ
in size as the load changes. When several jobs wait for a grant, `choose` ranks them with the
dispatcher's policy through `scheduler.policy_key`, the function the planner and the simulation use.

Exactly-once output: a commit is accepted only for a leased grant, or for a handed-back grant whose
whole range is still in the pool (then it leaves the pool); anything else is a conflict and the
worker discards that output. Output is assembled from committed grants only (dispatch_output.py),
so a slice run twice — a worker killed after writing, before committing — is never in it twice.

Every change is a `Record` the dispatcher appends to its journal before it answers; `apply` replays
them, so a restarted dispatcher has the same book, and the grants of live workers stay theirs.
Memory is per range and per grant in flight, never per slice.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

from ..api.gpujob import SchedulingPolicy
from .optimiser import GpuLoad, OptimiserConfig, SliceProblem, decide
from .ranges import RangeSet
from .scheduler import policy_key

LOAD_WINDOW_S = 1.0  # other jobs' GPU time over this window is the live load
MEASURED_WEIGHT = 0.3  # EWMA weight of a new measurement of time per block
MAX_HISTORY = 4096  # finished grants kept for the load window
MAX_RECENT = 1024  # committed grant ids remembered per job, for retried commits


class GrantError(Exception):
    """A request the book refuses; `code` is what the wire carries."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True, slots=True)
class JobInfo:
    key: str  # namespace/name/uid
    tenant: str
    total_blocks: int
    latency_target_ms: float
    launch_overhead_us: float
    time_per_block_us: float | None = None  # declared; None = learn it from commits
    priority: int = 0
    deadline: float | None = None  # absolute, seconds (dispatcher clock)
    weight: float = 1.0
    policy: str = SchedulingPolicy.Fifo.value  # what the job asked for
    blocks: str = ""  # the blocks this part of the job covers, as runs; "" = all of [0, total)

    def block_set(self) -> RangeSet:
        return RangeSet.decode(self.blocks, max_runs=1 << 16) if self.blocks else RangeSet.span(0, self.total_blocks)

    def to_wire(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__slots__}

    @classmethod
    def from_wire(cls, d: dict[str, Any]) -> JobInfo:
        return cls(**{k: d[k] for k in cls.__slots__ if k in d})


@dataclass(slots=True)
class Grant:
    id: str
    job: str
    lo: int
    hi: int
    worker: str
    at: float
    load: float = 0.0
    orphan: bool = False  # replayed after a restart, owner not seen yet

    def wire(self) -> dict[str, Any]:
        return {"id": self.id, "lo": self.lo, "hi": self.hi, "blocks": self.hi - self.lo, "load": round(self.load, 4)}


@dataclass(slots=True)
class JobBook:
    info: JobInfo
    arrival: int
    pool: RangeSet
    committed: RangeSet = field(default_factory=RangeSet)
    leased: dict[str, Grant] = field(default_factory=dict)
    measured_us: float | None = None
    grants: int = 0
    # Recently committed grant ids: a worker that lost the reply retries its commit right away.
    recent: dict[str, tuple[int, int]] = field(default_factory=dict)

    @property
    def time_per_block_us(self) -> float:
        if self.info.time_per_block_us is not None:
            return self.info.time_per_block_us
        return self.measured_us if self.measured_us is not None else OptimiserConfig().default_time_per_block_us

    @property
    def remaining_blocks(self) -> int:
        return self.size_blocks - len(self.committed)

    @property
    def finished(self) -> bool:
        return len(self.committed) == self.size_blocks

    @property
    def size_blocks(self) -> int:
        return len(self.pool) + len(self.committed) + sum(g.hi - g.lo for g in self.leased.values())

    def remaining_ms(self) -> float:
        return self.remaining_blocks * self.time_per_block_us / 1000.0


@dataclass(frozen=True, slots=True)
class Decision:
    job: str
    candidates: tuple[dict[str, Any], ...]  # rank inputs of every job that was waiting


class GrantBook:
    def __init__(self, policy: SchedulingPolicy, *, slots: int = 1, max_jobs: int = 64,
                 config: OptimiserConfig | None = None, epoch: int = 0) -> None:
        self.policy = policy
        self.slots = slots
        self.max_jobs = max_jobs
        self.config = config or OptimiserConfig()
        self.epoch = epoch
        self.jobs: dict[str, JobBook] = {}
        self.usage_ms: dict[str, float] = {}  # FairShare: GPU time committed per tenant
        self._seq = 0
        self._arrivals = 0
        # The live load: per job, finished grants (start, end) inside the window and their total;
        # grants in flight by id. O(jobs) per grant, whatever the grant rate.
        self._done: dict[str, deque[tuple[float, float]]] = {}
        self._done_sum: dict[str, float] = {}
        self._inflight: dict[str, tuple[str, float]] = {}

    # -- records: every change goes through apply(), live and on replay -----------------------------

    def apply(self, rec: dict[str, Any], now: float, live: bool = True) -> None:
        t = rec["t"]
        if t == "job":
            info = JobInfo.from_wire(rec["info"])
            if info.key not in self.jobs:
                self._arrivals += 1
                self.jobs[info.key] = JobBook(info=info, arrival=self._arrivals,
                                              pool=info.block_set())
        elif t == "grant":
            job = self.jobs[rec["job"]]
            lo, hi = rec["lo"], rec["hi"]
            job.pool.remove(lo, hi)
            g = Grant(rec["id"], rec["job"], lo, hi, rec["w"], now, rec.get("load", 0.0), orphan=not live)
            job.leased[g.id] = g
            job.grants += 1
            self._seq = max(self._seq, int(rec["id"].rsplit("-", 1)[-1]))
            if live:
                self._inflight[g.id] = (g.job, now)
        elif t == "commit":
            job = self.jobs[rec["job"]]
            lo, hi = rec["lo"], rec["hi"]
            g = job.leased.pop(rec["id"], None)
            job.pool.remove(lo, hi)
            job.committed.add(lo, hi)
            job.recent[rec["id"]] = (lo, hi)
            if len(job.recent) > MAX_RECENT:
                del job.recent[next(iter(job.recent))]
            ms = float(rec.get("ms") or 0.0)
            if ms > 0:
                us = ms * 1000.0 / (hi - lo)
                job.measured_us = us if job.measured_us is None else (
                    (1 - MEASURED_WEIGHT) * job.measured_us + MEASURED_WEIGHT * us)
                tenant = job.info.tenant
                self.usage_ms[tenant] = self.usage_ms.get(tenant, 0.0) + ms
            if g is not None and live:
                self._close(g.id, now)
        elif t == "release":
            job = self.jobs[rec["job"]]
            g = job.leased.pop(rec["id"], None)
            if g is not None:
                job.pool.add(g.lo, g.hi)
                if live:
                    self._close(g.id, now)
        elif t == "epoch":
            pass  # the dispatcher's start counter (unique grant ids); nothing in the book
        elif t == "forget":
            self.jobs.pop(rec["job"], None)
        else:
            raise ValueError(f"unknown record type {t!r}")

    def _close(self, gid: str, now: float) -> None:
        job, start = self._inflight.pop(gid, ("", now))
        if job:
            q = self._done.setdefault(job, deque(maxlen=MAX_HISTORY))
            if len(q) == q.maxlen:
                self._done_sum[job] -= q[0][1] - q[0][0]
            q.append((start, now))
            self._done_sum[job] = self._done_sum.get(job, 0.0) + now - start

    # -- decisions ------------------------------------------------------------------------------------

    def register(self, info: JobInfo) -> dict[str, Any] | None:
        """The record that adds `info`, or None when the job is known (a pod restart resumes it)."""
        if info.key in self.jobs:
            known = self.jobs[info.key].info
            if known.total_blocks != info.total_blocks or known.block_set() != info.block_set():
                raise GrantError("conflict", f"job {info.key} is known with other blocks "
                                             f"({known.total_blocks} in all, part {known.blocks or 'all'})")
            return None
        if len(self.jobs) >= self.max_jobs:
            raise GrantError("too-many-jobs", f"this GPU's dispatcher holds {self.max_jobs} jobs; retry later")
        if info.total_blocks < 1:
            raise GrantError("bad-request", "total_blocks must be >= 1")
        try:
            part = info.block_set()
        except ValueError as exc:
            raise GrantError("bad-request", f"blocks: {exc}") from None
        if not part or part.difference(RangeSet.span(0, info.total_blocks)):
            raise GrantError("bad-request", f"blocks must be a non-empty part of [0, {info.total_blocks})")
        return {"t": "job", "info": info.to_wire()}

    def grantable(self, key: str) -> bool:
        job = self.jobs.get(key)
        return job is not None and bool(job.pool)

    def candidates_info(self, keys: list[str]) -> list[dict[str, Any]]:
        out = []
        for k in keys:
            j = self.jobs[k]
            out.append({"job": k, "arrival": j.arrival, "remaining_ms": round(j.remaining_ms(), 6),
                        "priority": j.info.priority, "deadline": j.info.deadline,
                        "share": round(self.usage_ms.get(j.info.tenant, 0.0) / j.info.weight, 6),
                        "tenant": j.info.tenant})
        return out

    def choose(self, waiting: list[str]) -> Decision | None:
        """The waiting job whose next sub-kernel goes first under the policy; ties by arrival, then key."""
        ready = [k for k in dict.fromkeys(waiting) if self.grantable(k)]
        if not ready:
            return None
        cands = self.candidates_info(ready)
        best = min(cands, key=lambda c: (*policy_key(self.policy, arrival=c["arrival"], remaining=c["remaining_ms"],
                                                     priority=c["priority"], share=c["share"],
                                                     deadline=c["deadline"]), c["job"]))
        return Decision(job=best["job"], candidates=tuple(cands))

    def live_load(self, key: str, now: float, external: GpuLoad | None = None) -> tuple[float, str]:
        """Fraction of the GPU other jobs held over the last window (their grants in flight count up to
        now); DCGM's figure replaces it when that is fresh and higher."""
        lo = now - LOAD_WINDOW_S
        busy = 0.0
        for job, q in self._done.items():
            while q and q[0][1] < lo:  # ended before the window: no longer counts
                s, e = q.popleft()
                self._done_sum[job] -= e - s
            if job != key and q:
                # The oldest grant may straddle the window's start: count only its part inside.
                busy += self._done_sum[job] - max(0.0, lo - q[0][0])
        busy += sum(now - max(s, lo) for j, s in self._inflight.values() if j != key)
        own = min(1.0, busy / (LOAD_WINDOW_S * self.slots))
        why = f"other jobs held {own:.0%} of the last {LOAD_WINDOW_S:g}s"
        if external is not None and external.age_s <= self.config.max_sample_age_s:
            ext = external.sm_active if external.sm_active is not None else external.utilisation
            if ext is not None and ext > own:
                return ext, f"{external.source} {ext:.0%} (higher than the dispatcher's own view, {own:.0%})"
        return own, why

    def size(self, key: str, load: float) -> int:
        job = self.jobs[key]
        remaining = max(1, len(job.pool))
        problem = SliceProblem(total_blocks=remaining, time_per_block_us=job.time_per_block_us,
                               launch_overhead_us=job.info.launch_overhead_us,
                               latency_target_ms=job.info.latency_target_ms)
        return decide(problem, GpuLoad(utilisation=min(1.0, max(0.0, load)), source="dispatcher"),
                      self.config).slice_blocks

    def next_grant(self, key: str, worker: str, now: float, external: GpuLoad | None = None
                   ) -> dict[str, Any]:
        """The record of `key`'s next grant: the front of its pool, sized from the live load."""
        job = self.jobs[key]
        first = job.pool.first()
        if first is None:
            raise GrantError("no-work", f"job {key} has nothing left to grant")
        load, why = self.live_load(key, now, external)
        s = self.size(key, load)
        run_end = next(hi for lo, hi in job.pool.ranges() if lo == first)
        self._seq += 1
        return {"t": "grant", "id": f"{self.epoch}-{self._seq}", "job": key, "lo": first,
                "hi": min(first + s, run_end), "w": worker, "load": round(load, 4), "why": why}

    def commit(self, key: str, gid: str, lo: int, hi: int, worker: str, ms: float) -> dict[str, Any] | None:
        """The commit record, None if this grant is committed already (a repeat after a lost reply),
        or GrantError('conflict') when its blocks went to another grant."""
        job = self.jobs.get(key)
        if job is None:
            raise GrantError("unknown-job", f"job {key} is not registered here")
        g = job.leased.get(gid)
        if g is not None:
            if (g.lo, g.hi) != (lo, hi):
                raise GrantError("bad-request", f"grant {gid} is [{g.lo}, {g.hi}), not [{lo}, {hi})")
            if g.worker != worker:
                raise GrantError("conflict", f"grant {gid} belongs to another worker")
        elif job.recent.get(gid) == (lo, hi):
            return None  # a retry of a commit that was recorded; idempotent for the one that made it
        elif not job.pool.covers(lo, hi):
            raise GrantError("conflict", f"blocks [{lo}, {hi}) of grant {gid} were granted again; "
                                         f"discard this output")
        return {"t": "commit", "id": gid, "job": key, "lo": lo, "hi": hi, "ms": round(ms, 4)}

    def claim(self, key: str, gid: str, worker: str) -> Grant | None:
        """A reconnecting worker takes back a grant it held before the dispatcher restarted."""
        job = self.jobs.get(key)
        g = job.leased.get(gid) if job else None
        if g is None or g.worker != worker:
            return None
        g.orphan = False
        return g

    def releases_for(self, worker: str) -> list[dict[str, Any]]:
        """Records handing back every grant of `worker` (its connection closed: it died or gave up)."""
        return [{"t": "release", "id": g.id, "job": g.job}
                for j in self.jobs.values() for g in j.leased.values() if g.worker == worker]

    def expired_orphans(self, now: float, lease_s: float) -> list[dict[str, Any]]:
        return [{"t": "release", "id": g.id, "job": g.job}
                for j in self.jobs.values() for g in j.leased.values() if g.orphan and now - g.at > lease_s]

    def busy_slots(self) -> int:
        return sum(len(j.leased) for j in self.jobs.values())

    def snapshot(self) -> list[dict[str, Any]]:
        """Records that rebuild this book (journal compaction): jobs, then their open grants.

        Commits are kept as they are by the journal (the output is assembled from them)."""
        out: list[dict[str, Any]] = []
        for j in sorted(self.jobs.values(), key=lambda j: j.arrival):
            out.append({"t": "job", "info": j.info.to_wire()})
        return out

    def progress(self, key: str) -> dict[str, Any]:
        j = self.jobs[key]
        return {"total": j.size_blocks, "committed": len(j.committed), "runs": j.committed.runs(),
                "leased": len(j.leased), "finished": j.finished, "policy": self.policy.value}
