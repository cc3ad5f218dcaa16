"""Small helpers shared by the integration tests and the real-cluster benchmarks (stdlib only)."""

from __future__ import annotations

import importlib.util
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


def load_hack(name: str) -> Any:
    """Import hack/<name>.py (hack/ is scripts, not a package)."""
    spec = importlib.util.spec_from_file_location(name, REPO / "hack" / f"{name}.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod  # dataclasses look their module up while the class is built
    spec.loader.exec_module(mod)
    return mod


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.5,
             exc: type[Exception] = TimeoutError) -> Any:
    """Poll until predicate() is truthy and return it; transient errors count as not yet."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = predicate()
        except Exception as e:  # noqa: BLE001 - transient API errors while waiting
            last = e
        if last and not isinstance(last, Exception):
            return last
        time.sleep(interval)
    raise exc(f"timed out after {timeout}s waiting for {what}; last={last!r}")
