"""IP -> (workload, namespace) resolution from a mapping file (JSON or YAML).

File shape: {"10.0.0.5": {"workload": "web", "namespace": "shop"}, ...}
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml


@dataclass(frozen=True, slots=True)
class Workload:
    name: str
    namespace: str


def load_workloads(path: str | Path | None) -> dict[str, Workload]:
    if not path:
        return {}
    data = yaml.safe_load(Path(path).read_text()) or {}
    return {ip: Workload(v["workload"], v.get("namespace", "default")) for ip, v in data.items()}


def series_labels(src: str, dst: str, table: dict[str, Workload]) -> tuple[str, str, str] | None:
    """(source_workload, destination_workload, namespace) when both ends resolve, else None."""
    a, b = table.get(src), table.get(dst)
    if a is None or b is None:
        return None
    return a.name, b.name, a.namespace
