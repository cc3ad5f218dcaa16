"""Process-wide operator settings, set once at start from the command line."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class OperatorState:
    dry_run: bool = False
    namespaces: list[str] = field(default_factory=list)
    prometheus_url: str | None = None
    ready: bool = False


STATE = OperatorState()
