"""Recovery on the failover host: baseline from the store, then only the dirty pages from the source.

The result is always one of two consistent states, and the report says which:
  baseline+dirty  the source's last state (every page the source held at recovery time), or
  baseline-only   exactly the published baseline epoch (source unreachable, or it failed
                  mid-transfer: pages already fetched are put back to the baseline).
A page that fails its checksum and cannot be fetched from the source makes recovery fail:
never a silent partial region.
"""

from __future__ import annotations

import json
import mmap
import os
import ssl
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .hashing import mismatches, raw_sums
from .naming import RegionId
from .protocol import AuthError, ProtocolError
from .store import BaselineStore, DirStore, Manifest, StoreError
from .transport_tcp import ChecksumMismatch, Endpoint, PageClient, fetch_parallel

# No numpy or pydantic at module level: this is the recovery command's path, and on a loaded
# CPU those imports took longer than the recovery itself (docs/memory.md, "the whole command").
# Pages are lists of ints; numpy is imported only on the paths that check a whole region.


@dataclass(frozen=True, kw_only=True)
class RecoveryReport:
    ok: bool
    region: str
    mode: str  # baseline+dirty, baseline-only, full-copy or failed
    epoch: int | None  # the baseline epoch the region was built on
    source_reachable: bool
    pages: int  # pages read from the source
    bytes: int  # bytes received from the source, protocol included
    baseline_bytes: int = 0
    dirty_pages: int = 0
    corrupt_baseline_pages: list[int] = field(default_factory=list)
    size_bytes: int = 0
    page_size_bytes: int = 0
    duration_s: float
    phases: dict[str, float] = field(default_factory=dict)
    dest: str = ""
    transport: str = "tcp"
    source_sweep: dict | None = None
    sources: dict = field(default_factory=dict)  # what came from where: baseline (store / pre-staged), source
    message: str = ""

    def model_dump(self) -> dict:
        return asdict(self)

    def model_dump_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"), default=_plain)


def _plain(o: object) -> object:
    """numpy scalars and arrays that reach a report become plain JSON values."""
    if hasattr(o, "tolist"):
        return o.tolist()  # type: ignore[attr-defined]
    raise TypeError(f"{type(o).__name__} is not JSON serialisable")


class RecoveryFailed(Exception):
    def __init__(self, report: RecoveryReport) -> None:
        super().__init__(report.message)
        self.report = report


def _alloc(dest: str, size: int) -> tuple[int, mmap.mmap]:
    fd = os.open(dest, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    os.ftruncate(fd, size)
    # Populate up front: one batched allocation instead of a fault per page during the copy.
    return fd, mmap.mmap(fd, size, flags=mmap.MAP_SHARED | getattr(mmap, "MAP_POPULATE", 0))


def store_name_of(region: str) -> str:
    """The store name of an agent key `namespace/pod-uid/name` (a plain name is its own)."""
    return RegionId.parse(region).store_name if "/" in region else region


def pick_baseline(store: BaselineStore, local: BaselineStore | None, name: str,
                  epoch: int | None) -> tuple[BaselineStore, str, Manifest, str]:
    """(store to read, label, manifest, note): the pre-staged copy when it is the wanted epoch.

    The shared store says which epoch is current (one small read); a local copy of exactly that
    epoch, with the same checksum file, is read instead of the shared one.
    """
    note = ""
    try:
        m = store.manifest(name, epoch)
    except (StoreError, OSError) as exc:
        if local is None:
            raise
        m = local.manifest(name, epoch)
        return local, "local", m, f"shared store unreachable ({exc}); used the pre-staged epoch {m.epoch}"
    if local is not None:
        try:
            lm = local.manifest(name, m.epoch)
            if lm.sums_sha256 == m.sums_sha256 and lm.size_bytes == m.size_bytes:
                return local, "local", lm, note
            note = f"pre-staged copy of epoch {m.epoch} differs from the store's; read the store"
        except (StoreError, OSError, ValueError):
            have = local.current(name)
            note = (f"pre-staged epoch {have} is not the store's current {m.epoch}; read the store"
                    if have is not None else "nothing pre-staged; read the store")
    return store, "store", m, note


def _close_map(buf: memoryview, mp: mmap.mmap, fd: int) -> None:
    try:
        buf.release()
        mp.close()
    except BufferError:
        pass  # a failed transfer's traceback still holds slices; the map goes with them
    os.close(fd)


def local_current(local: BaselineStore | None, name: str) -> Manifest | None:
    if local is None:
        return None
    try:
        return local.manifest(name)
    except (StoreError, OSError, ValueError):
        return None


def choose_baseline(store: BaselineStore, local: BaselineStore | None, name: str, epoch: int | None,
                    dirty_of) -> tuple[BaselineStore, str, Manifest, str, object]:  # type: ignore[no-untyped-def]
    """(store to read, label, manifest, note, the source's dirty answer if already asked).

    With a pre-staged copy the source is asked for the pages dirty since the *pre-staged* epoch:
    that gives the source's state whatever the store's current epoch is, so the shared store is
    not asked at all (no round trip, no S3 client on the way to serving). Only when the source
    cannot answer for that epoch (its dirty list does not reach back, or it is gone) does the
    store decide, as `pick_baseline`. `dirty_of(epoch)` returns the source's answer or raises; it
    is None when there is no source.
    """
    lm = local_current(local, name) if epoch is None else None
    note = ""
    if lm is not None and dirty_of is not None and local is not None:
        try:
            answer = dirty_of(lm.epoch)
            return (local, "local", lm, f"pre-staged epoch {lm.epoch} + the pages the source wrote since it; "
                    "the store was not asked", answer)
        except (ProtocolError, OSError) as exc:  # e.g. no dirty list reaches back that far: the store decides
            note = f"source cannot answer for pre-staged epoch {lm.epoch} ({exc}); "
    try:
        m = store.manifest(name, epoch)
    except (StoreError, OSError) as exc:
        if lm is None or local is None:
            raise
        return (local, "local", lm, f"{note}shared store unreachable ({exc}); used the pre-staged epoch {lm.epoch}",
                None)
    used, label, m2, n2 = pick_baseline(_Known(store, m), local, name, m.epoch)
    return (store if isinstance(used, _Known) else used), label, m2, note + n2, None


class _Known:
    """A store whose manifest for one epoch is already known (no second round trip)."""

    def __init__(self, store: BaselineStore, m: Manifest) -> None:
        self.store, self.m = store, m

    def manifest(self, name: str, epoch: int | None = None) -> Manifest:
        return self.m if epoch in (None, self.m.epoch) else self.store.manifest(name, epoch)

    def __getattr__(self, attr: str):  # type: ignore[no-untyped-def]
        return getattr(self.store, attr)


def load_baseline(used: BaselineStore, label: str, m: Manifest, dest: str,
                  phases: dict[str, float]) -> tuple[int, mmap.mmap, dict]:
    """The new region file at `dest` holding the baseline: (fd, map, what happened).

    A pre-staged copy on the same filesystem is adopted (renamed into place: its pages were
    checked when pulled); anything else is read into a fresh file and every page checked here.
    """
    t = time.monotonic()
    if label == "local" and isinstance(used, DirStore):
        mark = used.adopt(m, dest, cleanup=False)  # the caller forgets the rest once the region is built
        if mark is not None:
            fd = os.open(dest, os.O_RDWR | os.O_CLOEXEC)
            # no MAP_POPULATE: only the dirty pages are touched
            mp = mmap.mmap(fd, m.size_bytes, flags=mmap.MAP_SHARED)
            phases["adopt_s"] = round(time.monotonic() - t, 4)
            return fd, mp, {"adopted": True, "bytes": 0, "verified": f"when pre-staged ({mark.get('verified_at')})",
                            "corrupt": []}
    fd, mp = _alloc(dest, m.size_bytes)
    buf = memoryview(mp)
    try:
        nbytes = used.read_into(m, buf)
        phases["baseline_load_s"] = round(time.monotonic() - t, 4)
        t = time.monotonic()
        import numpy as np  # a whole region is checked: an array compare, not a loop

        from .hashing import page_sums

        got = page_sums(buf, m.page_size_bytes, algo=m.checksum_algo)
        corrupt = np.flatnonzero(np.any(got != used.sums(m), axis=1)).tolist()
        phases["baseline_verify_s"] = round(time.monotonic() - t, 4)
    finally:
        buf.release()
    return fd, mp, {"adopted": False, "bytes": nbytes, "verified": "at recovery", "corrupt": corrupt}


def recover(store: BaselineStore, region: str, dest: str, source: Endpoint | None, token: bytes,
            epoch: int | None = None, connections: int = 4, batch: int = 256, depth: int = 8,
            timeout: float = 5.0, tls: ssl.SSLContext | None = None, require_source: bool = False,
            full_copy: bool = False, transport: str = "auto", local: BaselineStore | None = None) -> RecoveryReport:
    t0 = time.monotonic()
    if transport == "auto":
        transport = "tcp"
        if tls is None and os.path.isdir("/dev/infiniband"):  # checked first: the module imports numpy
            from .transport_rdma import available

            transport = "rdma" if available() else "tcp"
    phases: dict[str, float] = {}
    base: dict = dict(region=region, dest=dest)
    sources: dict = {}
    name = store_name_of(region)

    def fail(msg: str, **kw: object) -> RecoveryFailed:
        Path(dest).unlink(missing_ok=True)  # no half-built region for anyone to start on
        return RecoveryFailed(RecoveryReport(ok=False, mode="failed", duration_s=round(time.monotonic() - t0, 4),
                                             message=msg, phases=phases, sources=sources,
                                             **{**base, **kw}))  # type: ignore[arg-type]

    if full_copy:
        return _full_copy(region, dest, source, token, connections, batch, depth, timeout, tls, t0)

    # --- with a pre-staged copy the source is asked first and alone decides (choose_baseline);
    # otherwise it is asked once the baseline is in place, as the connection would sit idle (and be
    # closed by the page server's idle timeout) through a long store read
    client = None
    reason = "no source given"

    def connect() -> None:
        nonlocal client, reason
        assert source is not None
        t = time.monotonic()
        try:
            client = PageClient(source, region, token, timeout, tls)
        except AuthError as exc:
            raise fail(f"source refused us: {exc}", epoch=epoch, source_reachable=True, pages=0, bytes=0) from exc
        except OSError as exc:
            reason = f"source {source.host}:{source.port} unreachable: {exc}"
        phases["connect_s"] = round(phases.get("connect_s", 0.0) + time.monotonic() - t, 4)

    early_source = source is not None and epoch is None and local_current(local, name) is not None
    if early_source:
        connect()

    def dirty_of(e: int) -> tuple[list[int], dict]:
        # over the control connection for both transports: the RDMA reader registers the region
        # buffer, which does not exist until the baseline is chosen
        assert client is not None
        return client.dirty_pages(e)

    try:
        t = time.monotonic()
        used, label, m, note, early = choose_baseline(store, local, name, epoch,
                                                             dirty_of if client is not None else None)
        ref = used.sums_raw(m)
        phases["manifest_s"] = round(time.monotonic() - t, 4)
    except (StoreError, OSError, ValueError) as exc:
        if client is not None:
            client.close()
        raise fail(f"no usable baseline: {exc}", epoch=epoch, source_reachable=client is not None, pages=0,
                   bytes=0) from exc
    sources["baseline"] = {"from": label, "url": used.url, "epoch": m.epoch, "note": note}
    store = used
    ps, n = m.page_size_bytes, m.npages
    base.update(epoch=m.epoch, size_bytes=m.size_bytes, page_size_bytes=ps)

    t_used = time.monotonic()  # the source connection's last use (connect or dirty list)
    fd, mp, loaded = load_baseline(used, label, m, dest, phases)
    buf = memoryview(mp)
    try:
        if source is not None and client is None and not early_source:
            connect()
        elif client is not None and time.monotonic() - t_used > 1.0:
            # a long read (a copy from disk, or the store after all): a fresh connection for the
            # transfer, before the page server's idle timeout closes this one under us
            client.close()
            client = None
            connect()
        corrupt = loaded["corrupt"]
        sources["baseline"].update(bytes=loaded["bytes"], adopted=loaded["adopted"], verified=loaded["verified"])
        base.update(baseline_bytes=loaded["bytes"], corrupt_baseline_pages=corrupt[:1000])

        if client is None:
            if require_source:
                raise fail(f"{reason}; --require-source was given", source_reachable=False, pages=0, bytes=0)
            if len(corrupt):
                raise fail(f"{len(corrupt)} baseline page(s) fail their checksum and {reason}",
                           source_reachable=False, pages=0, bytes=0)
            mp.flush()
            sources["source_agent"] = {"addr": None if source is None else f"{source.host}:{source.port}",
                                       "reachable": False, "pages": 0, "bytes": 0, "error": reason}
            return RecoveryReport(ok=True, mode="baseline-only", source_reachable=False, pages=0, bytes=0,
                                  duration_s=round(time.monotonic() - t0, 4), phases=phases, sources=sources,
                                  message=f"HOST FAILURE: {reason}: restored baseline epoch {m.epoch} "
                                  f"({sources['baseline']['from']}) only; writes made after epoch {m.epoch} "
                                  f"are lost", **base)  # type: ignore[arg-type]

        saved: list[bytes] | None = None
        pages: list[int] = []
        dirty: list[int] = []
        try:
            if (client.npages, client.page_size, client.algo) != (n, ps, m.checksum_algo):
                raise ProtocolError(f"source region geometry {client.npages}x{client.page_size} "
                                    f"({client.algo}) differs from the baseline {n}x{ps} ({m.checksum_algo})")
            t = time.monotonic()
            dirty, meta = early if early is not None else dirty_of(m.epoch)  # type: ignore[misc]
            phases["dirty_list_s"] = round(time.monotonic() - t, 4)
            pages = sorted(set(dirty).union(corrupt)) if corrupt else dirty
            # the baseline of what is overwritten: a failed transfer puts it back
            saved = [bytes(buf[p * ps:(p + 1) * ps]) for p in pages]
            t = time.monotonic()
            nbytes = client.rx
            if transport == "rdma":
                import numpy as np

                from .transport_rdma import RdmaReader

                reader = RdmaReader(client, buf)
                nbytes += reader.read_pages(np.asarray(pages, np.int64)) + len(reader.state_buf)
            elif len(pages):
                # a few MB go faster over the one connection already open than over new TLS handshakes
                conns = max(1, min(connections, -(-len(pages) // 8192)))
                nbytes += fetch_parallel(source, region, token, pages, buf, conns, batch, depth,
                                         timeout, tls, first=client)
            phases["fetch_s"] = round(time.monotonic() - t, 4)
        except (OSError, ProtocolError, ChecksumMismatch) as exc:
            # Mid-transfer failure: put fetched pages back to the baseline, so the region is epoch E.
            client.close()
            if len(corrupt):
                raise fail(f"source failed ({exc}) and {len(corrupt)} baseline page(s) are corrupt",
                           source_reachable=True, pages=0, bytes=client.rx) from exc
            if require_source:
                raise fail(f"source failed mid-recovery: {exc}", source_reachable=True, pages=0,
                           bytes=client.rx) from exc
            if saved is not None and len(pages):
                for p, old in zip(pages, saved, strict=True):
                    buf[p * ps:(p + 1) * ps] = old
                if mismatches(raw_sums(buf, ps, pages, algo=m.checksum_algo), ref, pages):
                    raise fail("baseline changed under us while rolling back", source_reachable=True,
                               pages=0, bytes=client.rx) from exc
            mp.flush()
            sources["source_agent"] = {"addr": f"{source.host}:{source.port}", "reachable": True, "pages": 0,
                                       "bytes": client.rx, "error": str(exc)}
            return RecoveryReport(ok=True, mode="baseline-only", source_reachable=True, pages=0,
                                  bytes=client.rx, duration_s=round(time.monotonic() - t0, 4), phases=phases,
                                  sources=sources,
                                  message=f"source failed mid-transfer ({exc}): restored baseline epoch "
                                  f"{m.epoch} only", **base)  # type: ignore[arg-type]
        client.close()
        mp.flush()
        if loaded["adopted"]:
            used.forget(m)  # type: ignore[attr-defined]
        sources["source_agent"] = {"addr": f"{source.host}:{source.port}", "reachable": True,
                                   "pages": len(pages), "bytes": int(nbytes), "dirty_pages": len(dirty),
                                   "repaired_baseline_pages": int(len(corrupt)),
                                   "owner_alive": client.info.get("owner_alive")}
        return RecoveryReport(
            ok=True, mode="baseline+dirty", source_reachable=True, pages=int(len(pages)), bytes=int(nbytes),
            dirty_pages=len(dirty), duration_s=round(time.monotonic() - t0, 4), phases=phases,
            sources=sources,
            source_sweep=meta.get("sweep"), transport=transport,
            message=f"baseline epoch {m.epoch} ({label}{', adopted' if loaded['adopted'] else ''}) + "
            f"{len(dirty)} dirty page(s) from the source"
            + (f"; {len(corrupt)} corrupt baseline page(s) repaired from the source" if len(corrupt) else ""),
            **base)  # type: ignore[arg-type]
    finally:
        _close_map(buf, mp, fd)


def _full_copy(region: str, dest: str, source: Endpoint | None, token: bytes, connections: int, batch: int,
               depth: int, timeout: float, tls: ssl.SSLContext | None, t0: float) -> RecoveryReport:
    """The comparison point: every page of the region over the same link and transport."""
    if source is None:
        raise ValueError("a full copy needs a source")
    client = PageClient(source, region, token, timeout, tls)
    fd, mp = _alloc(dest, client.npages * client.page_size)
    buf = memoryview(mp)
    try:
        pages = range(client.npages)
        nbytes = client.rx + fetch_parallel(source, region, token, pages, buf, connections, batch, depth,
                                            timeout, tls, first=client)
        mp.flush()
        return RecoveryReport(ok=True, region=region, mode="full-copy", epoch=None, source_reachable=True,
                              pages=len(pages), bytes=nbytes, size_bytes=len(buf), page_size_bytes=client.page_size,
                              duration_s=round(time.monotonic() - t0, 4), dest=dest)
    finally:
        client.close()
        _close_map(buf, mp, fd)
