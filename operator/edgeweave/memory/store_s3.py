"""Baselines in an S3-compatible object store: the same guarantees as the directory store.

    <prefix>/<region>/epoch-000007/data/000000 .. data/NNNNNN   the region's bytes, CHUNK each
    <prefix>/<region>/epoch-000007/sums                          16-byte checksum per page
    <prefix>/<region>/epoch-000007/manifest.json                 written after every data object
    <prefix>/<region>/CURRENT                                    "7", written last

A PUT is atomic per object, and an epoch is named by CURRENT only after its manifest (and
every object the manifest counts) is stored, so a reader that goes CURRENT -> manifest ->
data sees a whole epoch. An epoch abandoned mid-upload (writer killed) has data objects but no
manifest and is never named; the next writer skips its number and `gc` removes it.

Data is split into objects so uploads and downloads run in parallel (one connection each) and
no server has to buffer a multi-part upload. Endpoint and credentials come from the standard
AWS_* variables (AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_CA_BUNDLE),
as a Secret would provide them.
"""

from __future__ import annotations

import hashlib
import socket
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime
from typing import TYPE_CHECKING
from urllib.parse import urlparse

from .hashing import DIGEST, as_ints, page_sums
from .store import Manifest, StoreError, check_name, checked_sums, runs_of, sums_array

if TYPE_CHECKING:
    import numpy as np

CHUNK = 16 << 20
PIECE = 1 << 20


class RateLimit:
    """Token bucket in bytes/s; `take(n)` sleeps until n bytes may pass (shared by threads)."""

    def __init__(self, bytes_per_s: float, burst: int = 4 << 20) -> None:
        self.rate, self.burst = float(bytes_per_s), burst
        self.tokens = float(burst)
        self.t = time.monotonic()
        self.lock = threading.Lock()

    def take(self, n: int) -> None:
        with self.lock:
            now = time.monotonic()
            self.tokens = min(self.burst, self.tokens + (now - self.t) * self.rate)
            self.t = now
            self.tokens -= n
            wait = -self.tokens / self.rate if self.tokens < 0 else 0.0
        if wait > 0:
            time.sleep(wait)


class S3Store:
    def __init__(self, bucket: str, prefix: str = "", client: object | None = None, workers: int = 8,
                 chunk: int = CHUNK) -> None:
        self._client = client
        self._lock = threading.Lock()
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.workers = workers
        self.chunk = chunk
        self.fsync = True  # objects are durable once PUT returns

    @property
    def s3(self):  # type: ignore[no-untyped-def]
        """The boto3 client, made on first use: a recovery that reads a pre-staged copy never pays for
        importing boto3 (seconds of CPU on a busy node) on its way to serving."""
        with self._lock:
            if self._client is None:
                import boto3
                from botocore.config import Config

                # Checksums "when required" only: the per-page sums are ours; S3 servers other than
                # AWS's own do not all take the trailing-checksum upload encoding.
                self._client = boto3.client("s3", config=Config(
                    s3={"addressing_style": "path"}, max_pool_connections=self.workers + 4,
                    retries={"mode": "standard", "max_attempts": 3}, connect_timeout=5, read_timeout=30,
                    request_checksum_calculation="when_required", response_checksum_validation="when_required"))
            return self._client

    @property
    def _errors(self) -> tuple[type[BaseException], ...]:
        from botocore.exceptions import BotoCoreError, ClientError

        return (BotoCoreError, ClientError)

    @classmethod
    def from_url(cls, url: str, **kw: object) -> S3Store:
        u = urlparse(url)
        if u.scheme != "s3" or not u.netloc:
            raise ValueError(f"not an s3://bucket/prefix URL: {url!r}")
        return cls(u.netloc, u.path, **kw)  # type: ignore[arg-type]

    @property
    def url(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"

    def _key(self, name: str, *parts: str) -> str:
        return "/".join(p for p in (self.prefix, check_name(name), *parts) if p)

    def _edir(self, epoch: int) -> str:
        return f"epoch-{epoch:06d}"

    # --- small objects -----------------------------------------------------------------------
    def _get(self, key: str) -> bytes | None:
        try:
            return self.s3.get_object(Bucket=self.bucket, Key=key)["Body"].read()  # type: ignore[attr-defined]
        except self.s3.exceptions.NoSuchKey:  # type: ignore[attr-defined]
            return None
        except self._errors as exc:
            raise StoreError(f"{self.url}: GET {key}: {exc}") from exc

    def _put(self, key: str, body: bytes | memoryview) -> None:
        try:
            self.s3.put_object(Bucket=self.bucket, Key=key, Body=bytes(body))  # type: ignore[attr-defined]
        except self._errors as exc:
            raise StoreError(f"{self.url}: PUT {key}: {exc}") from exc

    def _list(self, prefix: str, delimiter: str = "/") -> tuple[list[str], list[str]]:
        """(common prefixes, keys) under prefix."""
        pre, keys = [], []
        kw = {"Delimiter": delimiter} if delimiter else {}
        try:
            for page in self.s3.get_paginator("list_objects_v2").paginate(  # type: ignore[attr-defined]
                    Bucket=self.bucket, Prefix=prefix, **kw):
                pre += [p["Prefix"] for p in page.get("CommonPrefixes", [])]
                keys += [o["Key"] for o in page.get("Contents", [])]
        except self._errors as exc:
            raise StoreError(f"{self.url}: LIST {prefix}: {exc}") from exc
        return pre, keys

    # --- the store interface -------------------------------------------------------------------
    def regions(self) -> list[str]:
        base = f"{self.prefix}/" if self.prefix else ""
        pre, _ = self._list(base)
        return sorted(p[len(base):].rstrip("/") for p in pre)

    def epochs(self, name: str) -> list[int]:
        base = self._key(name) + "/"
        pre, _ = self._list(base + "epoch-")
        out = []
        for p in pre:
            tail = p[len(base):].rstrip("/")
            if tail.startswith("epoch-") and tail[6:].isdigit():
                out.append(int(tail[6:]))
        return sorted(out)

    def current(self, name: str) -> int | None:
        raw = self._get(self._key(name, "CURRENT"))
        return None if raw is None else int(raw.decode().strip())

    def next_epoch(self, name: str) -> int:
        return max([self.current(name) or 0, *self.epochs(name)]) + 1

    def write(self, name: str, epoch: int, buf: memoryview, page_size: int, algo: str,
              sums_out: np.ndarray | None = None, source: str = "", started: float | None = None,
              keep: int = 2) -> Manifest:
        t0 = started if started is not None else time.monotonic()
        ed = self._edir(epoch)
        if self._get(self._key(name, ed, "manifest.json")) is not None:
            raise StoreError(f"{self.url}/{name}/{ed} exists")
        npages = len(buf) // page_size
        import numpy as np

        sums = sums_out if sums_out is not None else np.empty((npages, DIGEST), np.uint8)
        inflight: list[Future] = []
        with ThreadPoolExecutor(self.workers, thread_name_prefix="ewm-s3-put") as ex:
            for i, off in enumerate(range(0, len(buf), self.chunk)):
                # Copy first, then checksum the copy: the sums describe exactly what is stored.
                data = bytes(buf[off:off + self.chunk])
                page_sums(memoryview(data), page_size, algo=algo,
                          out=sums[off // page_size:(off + len(data)) // page_size])
                inflight.append(ex.submit(self._put, self._key(name, ed, "data", f"{i:06d}"), data))
                del data
                # Bound memory: at most `workers` chunks held for upload at once.
                while sum(not f.done() for f in inflight) >= self.workers:
                    next(f for f in inflight if not f.done()).result()
                for f in [f for f in inflight if f.done()]:
                    f.result()
                    inflight.remove(f)
            for f in inflight:
                f.result()
        raw = sums.tobytes()
        self._put(self._key(name, ed, "sums"), raw)
        m = Manifest(region=name, epoch=epoch, size_bytes=len(buf), page_size_bytes=page_size, npages=npages,
                     checksum_algo=algo, sums_sha256=hashlib.sha256(raw).hexdigest(),
                     created_at=datetime.now(UTC).isoformat(), source=source or socket.gethostname(),
                     write_seconds=round(time.monotonic() - t0, 3), chunk_bytes=self.chunk)
        self._put(self._key(name, ed, "manifest.json"), m.model_dump_json(indent=1).encode())
        self._put(self._key(name, "CURRENT"), f"{epoch}\n".encode())
        self.gc(name, keep)
        return m

    def gc(self, name: str, keep: int) -> None:
        cur = self.current(name)
        eps = self.epochs(name)
        for e in eps[:-keep] if keep > 0 else []:
            if e != cur:
                _, keys = self._list(self._key(name, self._edir(e)) + "/", delimiter="")
                for i in range(0, len(keys), 1000):
                    self.s3.delete_objects(Bucket=self.bucket, Delete={  # type: ignore[attr-defined]
                        "Objects": [{"Key": k} for k in keys[i:i + 1000]], "Quiet": True})

    def manifest(self, name: str, epoch: int | None = None) -> Manifest:
        if epoch is None:
            epoch = self.current(name)
            if epoch is None:
                raise StoreError(f"no baseline published for region {name!r} in {self.url}")
        raw = self._get(self._key(name, self._edir(epoch), "manifest.json"))
        if raw is None:
            raise StoreError(f"baseline epoch {epoch} of {name!r} is missing in {self.url}")
        m = Manifest.model_validate_json(raw)
        if m.epoch != epoch or m.region != name or m.chunk_bytes <= 0:
            raise StoreError(f"manifest of {name}@{epoch} in {self.url} names {m.region}@{m.epoch}")
        return m

    def sums_raw(self, m: Manifest) -> bytes:
        return checked_sums(m, self._get(self._key(m.region, self._edir(m.epoch), "sums")) or b"")

    def sums(self, m: Manifest) -> np.ndarray:
        return sums_array(m, self.sums_raw(m))

    def _get_into(self, key: str, first: int, dest: memoryview, limit: RateLimit | None = None) -> int:
        rng = f"bytes={first}-{first + len(dest) - 1}"
        try:
            body = self.s3.get_object(Bucket=self.bucket, Key=key, Range=rng)["Body"]  # type: ignore[attr-defined]
        except self.s3.exceptions.NoSuchKey as exc:  # type: ignore[attr-defined]
            raise StoreError(f"baseline object {key} is missing") from exc
        except self._errors as exc:
            raise StoreError(f"{self.url}: GET {key}: {exc}") from exc
        raw = body._raw_stream  # urllib3 response: read straight into the region, no copy
        got = 0
        try:
            while got < len(dest):
                n = raw.readinto(dest[got:got + PIECE])
                if not n:
                    raise StoreError(f"baseline object {key} is shorter than its manifest says")
                got += n
                if limit is not None:
                    limit.take(n)
        except (OSError, *self._errors) as exc:
            raise StoreError(f"{self.url}: GET {key} broke off: {exc}") from exc
        finally:
            body.close()
        return got

    def _pieces(self, m: Manifest, pages: np.ndarray | None) -> list[tuple[str, int, int, int]]:
        """(key, offset in object, region offset, length) per contiguous run, cut at object bounds."""
        ps, ch = m.page_size_bytes, m.chunk_bytes
        if pages is None:
            runs = [(0, m.size_bytes)]
        else:
            runs = [(first * ps, (first + count) * ps) for _, first, count in runs_of(sorted(as_ints(pages)))]
            if not runs:
                return []
        out = []
        ed = self._edir(m.epoch)
        for lo, hi in runs:
            while lo < hi:
                i, within = divmod(lo, ch)
                n = min(hi - lo, ch - within)
                out.append((self._key(m.region, ed, "data", f"{i:06d}"), within, lo, n))
                lo += n
        return out

    def read_pages(self, m: Manifest, pages: np.ndarray, dest: memoryview) -> int:
        """Pages (ascending) into dest one after another, one ranged GET per run (cut at objects)."""
        ps, ch = m.page_size_bytes, m.chunk_bytes
        ed = self._edir(m.epoch)
        n = 0
        for pos, first, count in runs_of(pages):
            lo, hi, at = first * ps, (first + count) * ps, pos * ps
            while lo < hi:
                i, within = divmod(lo, ch)
                k = min(hi - lo, ch - within)
                n += self._get_into(self._key(m.region, ed, "data", f"{i:06d}"), within, dest[at:at + k])
                lo += k
                at += k
        return n

    def read_into(self, m: Manifest, dest: memoryview, pages: np.ndarray | None = None,
                  limit: RateLimit | None = None, on_piece: Callable[[int, int], None] | None = None) -> int:
        """Copy the baseline (or only `pages`) into dest with parallel ranged GETs; returns bytes read."""
        pieces = self._pieces(m, pages)

        def one(p: tuple[str, int, int, int]) -> int:
            key, within, lo, n = p
            got = self._get_into(key, within, dest[lo:lo + n], limit)
            if on_piece:
                on_piece(lo, n)
            return got

        if len(pieces) == 1:
            return one(pieces[0])
        with ThreadPoolExecutor(self.workers, thread_name_prefix="ewm-s3-get") as ex:
            return sum(ex.map(one, pieces))
