"""A job's output from the dispatcher's journal and the workers' per-grant files.

Only committed grants count: each committed grant's file is placed once, at the elements its blocks
write. The commits of one job are disjoint by construction (grants.py); this checks it again, and
that together they cover every block, so a merged output is the whole result or an error.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from .builtins import CpuKernel
from .dispatcher import JOURNAL
from .grid import unlinearise
from .ranges import RangeSet


def _records(state_dir: Path, kind: str, job: str | None) -> list[dict[str, Any]]:
    """The journal's records of one kind (for one job, or all); a torn last line is skipped."""
    out = []
    with (state_dir / JOURNAL).open() as f:
        for line in f:
            try:
                r = json.loads(line)
            except json.JSONDecodeError:
                continue
            if r.get("t") == kind and (job is None or r.get("job") == job):
                out.append(r)
    return out


def commits(state_dir: Path, job: str) -> list[dict[str, Any]]:
    return _records(state_dir, "commit", job)


def grants(state_dir: Path, job: str | None = None) -> list[dict[str, Any]]:
    """Every grant record (kept across compaction only while open; see the decision log for history)."""
    return _records(state_dir, "grant", job)


def assemble(state_dir: Path, job: str | list[str], frag_dir: Path, twin: CpuKernel) -> np.ndarray:
    """The job's whole output from the commits of `job` (or of all its pods' shares, "key#s<i>");
    ValueError when commits overlap, leave a gap, or a file is missing."""
    out = np.zeros_like(np.asarray(twin.out)).ravel()
    seen = RangeSet()
    total = twin.grid.blocks
    keys = [job] if isinstance(job, str) else job
    for c in sorted((c for k in keys for c in commits(state_dir, k)), key=lambda r: r["lo"]):
        lo, hi = int(c["lo"]), int(c["hi"])
        if seen.overlaps(lo, hi):
            raise ValueError(f"blocks [{lo}, {hi}) committed twice (grant {c['id']})")
        seen.add(lo, hi)
        path = frag_dir / f"{c['id']}.npy"
        if not path.exists():
            raise ValueError(f"committed grant {c['id']} has no output file {path}")
        idx = twin.output_elements(unlinearise(np.arange(lo, hi, dtype=np.uint64), twin.grid))
        out[idx] = np.load(path)
    if seen != RangeSet.span(0, total):
        raise ValueError(f"commits cover {len(seen)} of {total} blocks ({seen.encode()[:80]})")
    return out.reshape(np.asarray(twin.out).shape)
