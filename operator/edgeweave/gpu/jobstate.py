"""GpuJob progress: recorded status + observed pods -> next status, pods to create, events. Pure.

The status is the record the operator resumes from. Each pod attempt has one entry in
`status.pods` ({name, node, phase, slices, done}); `done` only ever grows, and the union of `done`
over all entries is the set of finished slices. Entry phases:

    Planned      recorded, pod not seen yet: create it (409 Conflict = it already exists)
    Pending/Running/Terminating   as the pod says
    Succeeded    the pod finished all its slices
    Failed/Lost  the pod failed, or vanished without succeeding: closed, and in the same status
                 write its unfinished slices went to replacement entries (attempt + 1, via
                 `plan.reassign`); slices it reported done are never handed out again

A terminating pod is not replaced until it is gone: it may still be finishing a slice, and
replacing it early could run that slice twice.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict

from ..api.gpujob import GpuJobPhase, GpuJobSpec, GpuJobStatus, SlicePodState
from .optimiser import slices_for
from .plan import PodAssignment, SlicePlan, plan_job, reassign
from .podspec import ANNOTATION_DONE, decode_runs, parse_pod_name, pod_name
from .ranges import RangeSet

PLANNED = "Planned"
LOST = "Lost"
TERMINATING = "Terminating"
CLOSED = frozenset({GpuJobPhase.Succeeded.value, GpuJobPhase.Failed.value, LOST})
DEFAULT_MAX_ATTEMPTS = 6  # like a Job's backoffLimit: a pod index replaced more often fails the job


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True)


class PodObservation(_Frozen):
    name: str
    index: int
    attempt: int
    uid: str = ""
    node: str | None = None
    phase: str = "Pending"
    deleting: bool = False
    done: str = ""  # runs
    bad_annotation: str | None = None


class JobEvent(_Frozen):
    type: str
    reason: str
    message: str


class Step(_Frozen):
    status: GpuJobStatus
    create: tuple[PodAssignment, ...] = ()
    events: tuple[JobEvent, ...] = ()


def observe_pod(pod: Mapping[str, Any]) -> PodObservation | None:
    """What the operator needs from a job pod (a plain dict as the API server sends it)."""
    meta = pod.get("metadata") or {}
    parsed = parse_pod_name(meta.get("name", ""))
    if parsed is None:
        return None
    _, index, attempt = parsed
    raw = (meta.get("annotations") or {}).get(ANNOTATION_DONE, "")
    done = ""
    bad = None
    try:
        done = decode_runs(raw).encode() if raw else ""
    except ValueError as exc:
        bad = f"{raw[:60]!r}: {exc}"
    return PodObservation(
        name=meta["name"], index=index, attempt=attempt, uid=meta.get("uid", ""),
        node=(pod.get("spec") or {}).get("nodeName"), phase=(pod.get("status") or {}).get("phase") or "Pending",
        deleting=bool(meta.get("deletionTimestamp")), done=done, bad_annotation=bad)


def initial_status(job: str, plan: SlicePlan) -> GpuJobStatus:
    """The plan as recorded in status before any pod exists."""
    return GpuJobStatus(
        phase=GpuJobPhase.Pending.value, slice_blocks=plan.slice_blocks, slices_total=plan.slice_count,
        slices_done=0,
        pods=[SlicePodState(name=pod_name(job, a.pod, a.attempt), phase=PLANNED, slices=a.slices)
              for a in plan.pods])


def restore_plan(spec: GpuJobSpec, status: GpuJobStatus, entries: Iterable[SlicePodState]) -> SlicePlan:
    """The plan of the open entries, rebuilt from status (the slice size recorded there wins over a
    fresh decision: the load may have changed since, and the slice list must not)."""
    total = spec.total_blocks
    pods = []
    for e in entries:
        _, index, attempt = entry_pod(e)
        pods.append(PodAssignment(pod=index, attempt=attempt, slices=e.slices))
    # The decision is only descriptive; the one that chose this slice size is in the Planned condition.
    base = plan_job(spec, None)
    return base.model_copy(update={"total_blocks": total, "slice_blocks": status.slice_blocks,
                                   "slice_count": slices_for(total, status.slice_blocks),
                                   "pods": tuple(sorted(pods, key=lambda p: p.pod))})


def advance(job: str, spec: GpuJobSpec, status: GpuJobStatus, observed: Iterable[PodObservation], *,
            schedulable: bool = True, max_attempts: int = DEFAULT_MAX_ATTEMPTS) -> Step:
    """One reconcile of a planned job: fold in what the pods say, replace lost pods, say what to create."""
    seen = {o.name: o for o in observed}
    entries: list[SlicePodState] = []
    lost: list[SlicePodState] = []
    events: list[JobEvent] = []
    for e in status.pods:
        if e.phase in CLOSED:
            entries.append(e)
            continue
        obs = seen.get(e.name)
        mine = RangeSet.decode(e.slices)
        if obs is None:
            if e.phase == PLANNED:
                entries.append(e)
                continue
            e = e.model_copy(update={"phase": LOST})
            lost.append(e)
            left = len(mine.difference(RangeSet.decode(e.done)))
            events.append(JobEvent(type="Warning", reason="SlicePodLost",
                                   message=f"pod {e.name} is gone with {left} unfinished slice(s)"))
            entries.append(e)
            continue
        done = RangeSet.decode(e.done).union(RangeSet.decode(obs.done).intersection(mine))
        phase = TERMINATING if obs.deleting and obs.phase not in ("Succeeded", "Failed") else obs.phase
        if obs.phase == "Succeeded":
            done = mine
        e = e.model_copy(update={"node": obs.node, "phase": phase, "done": done.encode()})
        if obs.phase == "Failed":
            lost.append(e)
            events.append(JobEvent(type="Warning", reason="SlicePodFailed",
                                   message=f"pod {e.name} failed with {len(mine.difference(done))} unfinished slice(s)"))
        entries.append(e)

    finished = RangeSet()
    for e in entries:
        finished = finished.union(RangeSet.decode(e.done))
    create: list[PodAssignment] = []
    failed_reason = ""
    if lost:
        open_entries = [e for e in entries if e.phase not in CLOSED or e in lost]
        plan = restore_plan(spec, status, open_entries)
        lost_idx = {entry_pod(e)[1] for e in lost}
        after = reassign(plan, finished, lost_idx)
        replaced = [p for p in after.pods if p.pod in lost_idx]
        too_many = [p for p in replaced if p.attempt >= max_attempts]
        if too_many:
            failed_reason = (f"pod index {too_many[0].pod} reached {max_attempts} attempts; "
                             f"{plan.slice_count - len(finished)} slice(s) left unfinished")
        else:
            for p in replaced:
                entries.append(SlicePodState(name=pod_name(job, p.pod, p.attempt), phase=PLANNED,
                                             slices=p.slices))
            if replaced:
                moved = sum(p.count for p in replaced)
                events.append(JobEvent(type="Normal", reason="Rescheduled", message=(
                    f"{moved} unfinished slice(s) of {', '.join(e.name for e in lost)} moved to "
                    f"{', '.join(pod_name(job, p.pod, p.attempt) for p in replaced)}; "
                    f"{len(finished)} finished slice(s) are not rerun")))
    if not failed_reason and status.phase == GpuJobPhase.Failed.value:
        failed_reason = "failed earlier"

    total = status.slices_total
    if len(finished) >= total:
        phase = GpuJobPhase.Succeeded.value
    elif failed_reason:
        phase = GpuJobPhase.Failed.value
    elif not schedulable:
        phase = GpuJobPhase.Unschedulable.value
    elif any(e.phase in ("Running", TERMINATING) for e in entries) or finished:
        phase = GpuJobPhase.Running.value
    else:
        phase = GpuJobPhase.Pending.value
    if phase == GpuJobPhase.Succeeded.value and status.phase != phase:
        events.append(JobEvent(type="Normal", reason="Succeeded",
                               message=f"all {total} slice(s) done by {len(entries)} pod attempt(s)"))
    if phase == GpuJobPhase.Failed.value and status.phase != phase:
        events.append(JobEvent(type="Warning", reason="BackoffLimitExceeded", message=failed_reason))
    if phase in (GpuJobPhase.Pending.value, GpuJobPhase.Running.value):
        create = [_assignment(e) for e in entries if e.phase == PLANNED]
    new = status.model_copy(update={"pods": entries, "slices_done": len(finished), "phase": phase})
    return Step(status=new, create=tuple(create), events=tuple(events))


def entry_pod(e: SlicePodState) -> tuple[str, int, int]:
    """(job, index, attempt) of a status entry; a status someone else edited gets a clear error."""
    parsed = parse_pod_name(e.name)
    if parsed is None:
        raise ValueError(f"status.pods[].name {e.name[:80]!r} is not a job pod name (<job>-s<index>-a<attempt>); "
                         "status was edited outside the operator")
    try:
        RangeSet.decode(e.slices)
        RangeSet.decode(e.done)
    except ValueError as exc:
        raise ValueError(f"status.pods[{e.name[:80]}]: {exc}") from None
    return parsed


def _assignment(e: SlicePodState) -> PodAssignment:
    _, index, attempt = entry_pod(e)
    return PodAssignment(pod=index, attempt=attempt, slices=e.slices)
