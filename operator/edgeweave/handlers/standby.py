"""Is this replica the acting one? For /readyz when the webhooks sit behind one Service.

The steering webhook answers from an in-process table that only the acting replica fills (the move
executor registers a target before it evicts; see actuate/steering.py). Behind a Service, the API server
picks any ready endpoint, so a standby replica (paused by peering) would answer "no steering" for about
half of the replacements and half of the steering probes. With `--ready-only-when-acting` a standby
reports not-ready, so the Service routes admission to the acting replica only; when it dies, kopf
un-pauses the standby and its /readyz turns ready on the next poll.

The rule is kopf's own (engines/peering.py): a replica pauses while a live peer has a higher priority.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
from collections.abc import Mapping
from typing import Any

log = logging.getLogger("edgeweave.standby")


def _lastseen(raw: Any) -> datetime.datetime | None:
    if not isinstance(raw, str):
        return None
    try:
        ts = datetime.datetime.fromisoformat(raw)
    except ValueError:
        return None
    return ts if ts.tzinfo else ts.replace(tzinfo=datetime.UTC)


def higher_live_peers(peers: Mapping[str, Any] | None, own_priority: int, now: datetime.datetime) -> list[str]:
    """Identities of live peers (lastseen + lifetime after `now`) with a priority above ours."""
    out = []
    for identity, peer in (peers or {}).items():
        if not isinstance(peer, Mapping):
            continue
        try:
            priority, lifetime = int(peer.get("priority", 0)), int(peer.get("lifetime", 60))
        except (TypeError, ValueError):
            continue
        seen = _lastseen(peer.get("lastseen"))
        if seen is not None and priority > own_priority and seen + datetime.timedelta(seconds=lifetime) > now:
            out.append(str(identity))
    return sorted(out)


class StandbyWatch:
    """Polls the ClusterKopfPeering's peers; `standby` is what /readyz reports."""

    def __init__(self, peering: str, priority: int, interval_s: float = 2.0) -> None:
        self.peering, self.priority, self.interval_s = peering, priority, interval_s
        self.standby = True  # until the first read says otherwise: never route admission on a guess
        self.reason = "peering not read yet"

    def read_once(self, api_client: Any) -> None:
        from kubernetes import client
        from kubernetes.client.exceptions import ApiException

        try:
            obj = client.CustomObjectsApi(api_client).get_cluster_custom_object(
                "kopf.dev", "v1", "clusterkopfpeerings", self.peering)
        except (ApiException, OSError) as e:
            # Unreadable: keep the last verdict (an API blip must not flap the Service's endpoints).
            log.debug("peering %s unreadable: %s", self.peering, e)
            return
        higher = higher_live_peers(obj.get("status"), self.priority, datetime.datetime.now(datetime.UTC))
        standby = bool(higher)
        if standby != self.standby:
            log.info("peering %s: %s", self.peering, f"standby behind {', '.join(higher)}" if standby else "acting")
        self.standby, self.reason = standby, (f"standby (peers of higher priority: {', '.join(higher)})"
                                              if standby else "")

    async def run(self, api_client: Any) -> None:
        while True:
            await asyncio.to_thread(self.read_once, api_client)
            await asyncio.sleep(self.interval_s)
