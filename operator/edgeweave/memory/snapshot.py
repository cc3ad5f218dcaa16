"""Taking a baseline without losing a write made while it is taken.

Order (t0 is the moment of the flip, under the region lock):
  1. collect: move every kernel-tracked write so far into the active dirty slot (label E);
  2. flip: open a fresh slot labelled E+1; from now on writes land there;
  3. copy the region to the store, checksumming exactly the bytes copied;
  4. publish epoch E+1 (atomic rename), then tell the shared state.
Every write before t0 is in the copy (it was made before the copy began); every write after
t0 is in slot E+1, so "dirty since E+1" is complete. Until step 4 the slot labelled E is kept,
so "dirty since E" (E being the last published epoch) stays complete too. A write racing the
copy of its page may or may not be in the copy; it is in slot E+1 either way.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from .state import RegionState
from .store import BaselineStore, Manifest


def take_baseline(name: str, buf: memoryview, page_size: int, state: RegionState, store: BaselineStore,
                  collect: Callable[[], None], lock: threading.Lock, source: str = "",
                  on_start: Callable[[], None] | None = None) -> Manifest:
    t_start = time.monotonic()
    with lock:
        collect()
        epoch = store.next_epoch(name)
        slot = state.flip(epoch)
    if on_start:
        on_start()
    try:
        manifest = store.write(name, epoch, buf, page_size, state.algo, sums_out=state.sums[slot],
                               source=source, started=t_start)
    except BaseException:
        with lock:
            state.abort_flip()
        raise
    state.publish(epoch)
    return manifest
