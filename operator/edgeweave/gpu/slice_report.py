"""`python -m edgeweave.gpu.slice_report [slice-run args]`: what a GpuJob pod runs.

Runs `edgeweave slice-run` as a child process, passes its output through, and after each finished
slice sets the annotation `edgeweave.io/slices-done` on its own pod (name and namespace from the
downward API: EDGEWEAVE_POD_NAME, EDGEWEAVE_POD_NAMESPACE) to the slices finished so far. The
operator reads that annotation to track progress and, when the pod is lost, to hand only the
unfinished slices to a replacement.

Patches are at most one per `--report-interval` seconds, plus one when the child exits, so a job
of thousands of tiny slices does not flood the API server. A slice that finished after the last
patch that got through is reported as not done and may be run again by a replacement pod; a slice
reported done is never run again. SIGTERM is passed to the child, which stops after the slice in
flight; the final patch then still goes out. Without the pod env (or API access: the pod's service
account needs `patch` on pods) the slices still run, and progress shows only as the pod's phase.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from .podspec import ANNOTATION_DONE, ENV_POD_NAME, ENV_POD_NAMESPACE, encode_runs
from .ranges import RangeSet

Patcher = Callable[[str], None]


def _pod_patcher() -> Patcher | None:
    name, namespace = os.environ.get(ENV_POD_NAME), os.environ.get(ENV_POD_NAMESPACE)
    if not name or not namespace:
        return None
    from kubernetes import client, config

    try:
        config.load_incluster_config()
        api = client.ApiClient()
    except config.ConfigException:
        api = config.new_client_from_config()
    core = client.CoreV1Api(api)

    def patch(runs: str) -> None:
        core.patch_namespaced_pod(name, namespace, {"metadata": {"annotations": {ANNOTATION_DONE: runs}}})

    return patch


class Reporter:
    def __init__(self, patch: Patcher | None, interval: float) -> None:
        self.patch, self.interval = patch, interval
        self.done = RangeSet()
        self.sent = ""
        self.last: float | None = None  # the first finished slice is reported at once
        self.errors: set[str] = set()

    def slice_done(self, index: int) -> None:
        self.done.add(index, index + 1)
        if self.last is None or time.monotonic() - self.last >= self.interval:
            self.flush()

    def flush(self) -> None:
        runs = encode_runs(self.done)
        if self.patch is None or runs == self.sent:
            return
        self.last = time.monotonic()
        try:
            self.patch(runs)
            self.sent = runs
        except Exception as e:  # noqa: BLE001 - reporting must never stop the slices
            msg = f"{type(e).__name__}: {str(e)[:200]}"
            if msg not in self.errors:  # say each distinct failure once
                self.errors.add(msg)
                print(json.dumps({"event": "report-error", "error": msg}), file=sys.stderr, flush=True)


def _parse_own(argv: Sequence[str]) -> tuple[float, list[str]]:
    args = list(argv)
    interval = 1.0
    if args[:1] == ["--report-interval"] and len(args) >= 2:
        interval = float(args[1])
        args = args[2:]
    if args[:1] == ["--"]:
        args = args[1:]
    return interval, args


def main(argv: Sequence[str], patcher: Patcher | None = None) -> int:
    interval, child_args = _parse_own(argv)
    reporter = Reporter(patcher if patcher is not None else _pod_patcher(), interval)
    child = subprocess.Popen([sys.executable, "-m", "edgeweave.gpu.slice_run", *child_args],
                             stdout=subprocess.PIPE, text=True, bufsize=1)

    def forward(signum: int, _frame: Any) -> None:
        child.send_signal(signum)

    previous = signal.signal(signal.SIGTERM, forward)
    try:
        assert child.stdout is not None
        for line in child.stdout:
            sys.stdout.write(line)
            sys.stdout.flush()
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict) and record.get("event") == "slice-done":
                reporter.slice_done(int(record["slice"]))
        rc = child.wait()
    finally:
        signal.signal(signal.SIGTERM, previous)
        reporter.flush()
    return rc


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
