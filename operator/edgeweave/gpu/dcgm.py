"""GPU load for the slice-size optimiser from the DCGM exporter, through the Prometheus HTTP API.

`load_from_response` is pure (the JSON of an instant query -> GpuLoad); `read_load` does the one
HTTP request with a short timeout. Either way the caller gets a reason it can record: on any failure
the load is None, which the optimiser treats as unknown (its assumed default), and the reason says why.
"""

from __future__ import annotations

import json
import time
import urllib.parse
import urllib.request
from collections.abc import Iterable, Mapping
from typing import Any

from .optimiser import GpuLoad

METRIC = "DCGM_FI_DEV_GPU_UTIL"
TIMEOUT_S = 2.0


def load_from_response(data: Mapping[str, Any], nodes: Iterable[str] = (), now: float | None = None
                       ) -> tuple[GpuLoad | None, str]:
    """Mean utilisation over the GPUs of `nodes` (dcgm-exporter's `Hostname` label is the node name),
    or over every GPU when none of them match; the age is that of the newest sample."""
    if data.get("status") != "success":
        return None, f"Prometheus said {data.get('status')!r}: {data.get('error', '')}"
    result = (data.get("data") or {}).get("result") or []
    samples: list[tuple[str, float, float]] = []
    for series in result:
        try:
            ts, value = series["value"]
            samples.append(((series.get("metric") or {}).get("Hostname", ""), float(ts), float(value)))
        except (KeyError, TypeError, ValueError):
            continue
    if not samples:
        return None, f"no {METRIC} samples"
    wanted = set(nodes)
    mine = [s for s in samples if s[0] in wanted] or samples
    now = time.time() if now is None else now
    util = sum(s[2] for s in mine) / len(mine)
    age = max(0.0, now - max(s[1] for s in mine))
    scope = "GPU node(s)" if mine is not samples else "GPU(s), no node match"
    return GpuLoad.from_samples(util_percent=util, age_s=age), f"{METRIC} mean of {len(mine)} {scope}"


def read_load(prometheus_url: str | None, nodes: Iterable[str] = (), timeout: float = TIMEOUT_S
              ) -> tuple[GpuLoad | None, str]:
    if not prometheus_url:
        return None, "no Prometheus configured"
    url = f"{prometheus_url.rstrip('/')}/api/v1/query?{urllib.parse.urlencode({'query': METRIC})}"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:  # noqa: S310 - operator-configured URL
            data = json.loads(r.read())
    except Exception as e:  # noqa: BLE001 - any failure means "load unknown", said in the reason
        return None, f"Prometheus query failed ({type(e).__name__}: {str(e)[:120]})"
    if not isinstance(data, dict):
        return None, "Prometheus answer is not a JSON object"
    return load_from_response(data, nodes)
