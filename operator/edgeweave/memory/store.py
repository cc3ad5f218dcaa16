"""Baselines in a shared directory (a ReadWriteMany volume): atomic, epoch-numbered, checksummed.

    <root>/<region>/epoch-000007/data        the region's bytes
    <root>/<region>/epoch-000007/sums        16-byte checksum per page
    <root>/<region>/epoch-000007/manifest.json
    <root>/<region>/CURRENT                  "7": the latest published epoch

An epoch is written into a temporary directory, fsynced, renamed into place and only then
named by CURRENT (itself replaced by rename), so a reader sees a whole epoch or the previous
one. `store_s3.S3Store` implements the same calls on an S3-compatible object store;
`open_store(spec)` picks one from a path or an `s3://bucket/prefix` URL.
"""

from __future__ import annotations

import errno
import hashlib
import json
import mmap
import os
import re
import shutil
import socket
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from .hashing import DIGEST, as_ints, page_sums

if TYPE_CHECKING:
    import numpy as np

# Neither numpy nor pydantic is imported at module level: the recovery command's fast path
# reads a manifest and renames a file, and those imports were most of its start-up (hashing.py).

_EPOCH_DIR = re.compile(r"^epoch-(\d+)$")
CHUNK = 64 << 20
VERIFIED = "verified.json"  # written by import_epoch once every page of the pull matched


@dataclass(frozen=True)
class Manifest:
    """One published epoch (manifest.json). A frozen dataclass checked field by field on load
    (a pydantic model cost the recovery command its import)."""

    region: str
    epoch: int
    size_bytes: int
    page_size_bytes: int
    npages: int
    checksum_algo: str
    sums_sha256: str
    created_at: str
    source: str = ""
    write_seconds: float = 0.0
    chunk_bytes: int = 0  # object stores: data is split into objects of this size

    def __post_init__(self) -> None:
        for f in fields(self):
            v = getattr(self, f.name)
            want: Any = {"str": str, "int": int, "float": (int, float)}[str(f.type)]
            if isinstance(v, bool) or not isinstance(v, want):
                raise ValueError(f"manifest field {f.name}: expected {f.type}, got {type(v).__name__}")
        if self.epoch < 0 or self.size_bytes < 0 or self.page_size_bytes <= 0 or self.npages < 0:
            raise ValueError(f"manifest of {self.region}@{self.epoch}: negative size, epoch or page size")

    @classmethod
    def model_validate_json(cls, raw: str | bytes) -> Manifest:
        d = json.loads(raw)
        if not isinstance(d, dict):
            raise ValueError("manifest is not a JSON object")
        known = {f.name for f in fields(cls)}
        try:
            return cls(**{k: v for k, v in d.items() if k in known})
        except TypeError as exc:  # a required field missing
            raise ValueError(f"manifest: {exc}") from exc

    def model_dump(self) -> dict:
        return asdict(self)

    def model_dump_json(self, indent: int | None = None) -> str:
        return json.dumps(asdict(self), indent=indent)


def runs_of(pages: Sequence[int]) -> list[tuple[int, int, int]]:
    """(position in the list, first page, count) for each run of consecutive pages."""
    out: list[list[int]] = []
    prev = None
    for pos, p in enumerate(as_ints(pages)):
        if prev is not None and p == prev + 1:
            out[-1][2] += 1
        else:
            out.append([pos, int(p), 1])
        prev = p
    return [(a, b, c) for a, b, c in out]


class RateLimiter(Protocol):
    def take(self, n: int) -> None: ...


class StoreError(Exception):
    pass


REGION_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,252}")


def check_name(name: str) -> str:
    if not REGION_NAME.fullmatch(name):
        raise ValueError(f"bad region name {name!r}")
    return name


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class DirStore:
    def __init__(self, root: str | os.PathLike[str], fsync: bool = True) -> None:
        self.root = Path(root)
        self.fsync = fsync

    @property
    def url(self) -> str:
        return str(self.root)

    def regions(self) -> list[str]:
        return sorted(p.name for p in self.root.iterdir() if p.is_dir()) if self.root.is_dir() else []

    def region_dir(self, name: str) -> Path:
        return self.root / check_name(name)

    def epoch_dir(self, name: str, epoch: int) -> Path:
        return self.region_dir(name) / f"epoch-{epoch:06d}"

    def epochs(self, name: str) -> list[int]:
        d = self.region_dir(name)
        if not d.is_dir():
            return []
        return sorted(int(m.group(1)) for p in d.iterdir() if (m := _EPOCH_DIR.match(p.name)))

    def current(self, name: str) -> int | None:
        try:
            return int((self.region_dir(name) / "CURRENT").read_text().strip())
        except FileNotFoundError:
            return None

    def next_epoch(self, name: str) -> int:
        return max([self.current(name) or 0, *self.epochs(name)]) + 1

    def write(self, name: str, epoch: int, buf: memoryview, page_size: int, algo: str,
              sums_out: np.ndarray | None = None, source: str = "", started: float | None = None,
              keep: int = 2) -> Manifest:
        t0 = started if started is not None else time.monotonic()
        rdir = self.region_dir(name)
        rdir.mkdir(parents=True, exist_ok=True)
        final = self.epoch_dir(name, epoch)
        if final.exists():
            raise StoreError(f"{final} exists")
        tmp = rdir / f".tmp-{epoch}-{uuid.uuid4().hex[:8]}"
        tmp.mkdir()
        npages = len(buf) // page_size
        import numpy as np

        sums = sums_out if sums_out is not None else np.empty((npages, DIGEST), np.uint8)
        try:
            with open(tmp / "data", "wb", buffering=0) as f:
                for off in range(0, len(buf), CHUNK):
                    # Copy first, then checksum the copy: the sums describe exactly what is stored
                    # even if the workload writes the page meanwhile.
                    chunk = bytes(buf[off:off + CHUNK])
                    page_sums(memoryview(chunk), page_size, algo=algo,
                              out=sums[off // page_size:(off + len(chunk)) // page_size])
                    f.write(chunk)
                if self.fsync:
                    os.fsync(f.fileno())
            raw = sums.tobytes()
            with open(tmp / "sums", "wb") as f:
                f.write(raw)
                if self.fsync:
                    os.fsync(f.fileno())
            m = Manifest(region=name, epoch=epoch, size_bytes=len(buf), page_size_bytes=page_size,
                         npages=npages, checksum_algo=algo, sums_sha256=hashlib.sha256(raw).hexdigest(),
                         created_at=datetime.now(UTC).isoformat(), source=source or socket.gethostname(),
                         write_seconds=round(time.monotonic() - t0, 3))
            with open(tmp / "manifest.json", "w") as f:
                f.write(m.model_dump_json(indent=1))
                if self.fsync:
                    os.fsync(f.fileno())
            os.rename(tmp, final)
            cur_tmp = rdir / f".CURRENT-{uuid.uuid4().hex[:8]}"
            cur_tmp.write_text(f"{epoch}\n")
            if self.fsync:
                _fsync_dir(rdir)
            os.rename(cur_tmp, rdir / "CURRENT")
            if self.fsync:
                _fsync_dir(rdir)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        self.gc(name, keep)
        return m

    def read_pages(self, m: Manifest, pages: np.ndarray, dest: memoryview) -> int:
        """Pages (ascending) into dest one after another: dest[j*ps] holds page pages[j]."""
        ps = m.page_size_bytes
        n = 0
        fd = os.open(self.epoch_dir(m.region, m.epoch) / "data", os.O_RDONLY | os.O_CLOEXEC)
        try:
            for pos, first, count in runs_of(pages):
                n += os.preadv(fd, [dest[pos * ps:(pos + count) * ps]], first * ps)
        finally:
            os.close(fd)
        return n

    def import_epoch(self, src: BaselineStore, m: Manifest, limit: RateLimiter | None = None) -> Manifest:
        """Copy epoch `m` of another store here (pre-staging), verified page by page, then publish it.

        Pages are checked as each piece arrives (the pull is rate-limited, so the CPU work hides in
        it) and the epoch gets a `verified.json` mark: recovery may then adopt it without checking
        1 GiB again on the failover's critical path.
        """
        rdir = self.region_dir(m.region)
        rdir.mkdir(parents=True, exist_ok=True)
        final = self.epoch_dir(m.region, m.epoch)
        if final.exists():
            shutil.rmtree(final)
        import numpy as np

        sums = src.sums(m)
        ps = m.page_size_bytes
        tmp = rdir / f".tmp-{m.epoch}-{uuid.uuid4().hex[:8]}"
        tmp.mkdir()
        try:
            with open(tmp / "data", "w+b") as f:
                f.truncate(m.size_bytes)
                with mmap.mmap(f.fileno(), m.size_bytes) as mp:
                    view = memoryview(mp)
                    checked = np.zeros(m.npages, dtype=bool)
                    bad: list[int] = []
                    lock = threading.Lock()

                    def check(lo: int, n: int, v: memoryview = view) -> None:
                        a, b = -(-lo // ps), (lo + n) // ps  # whole pages inside the piece
                        if b <= a:
                            return
                        got = page_sums(v[a * ps:b * ps], ps, algo=m.checksum_algo, threads=1)
                        wrong = (np.flatnonzero(np.any(got != sums[a:b], axis=1)) + a).tolist()
                        with lock:
                            checked[a:b] = True
                            bad.extend(wrong)

                    try:
                        src.read_into(m, view, limit=limit, on_piece=check)
                        rest = np.flatnonzero(~checked)  # pages split across pieces
                        if len(rest):
                            got = page_sums(view, ps, rest.tolist(), algo=m.checksum_algo)
                            bad.extend(rest[np.any(got != sums[rest], axis=1)].tolist())
                    finally:
                        view.release()
                if bad:
                    bad.sort()
                    raise StoreError(f"{len(bad)} page(s) of {m.region}@{m.epoch} failed their checksum "
                                     f"while pre-staging: {bad[:8]}")
                if self.fsync:
                    os.fsync(f.fileno())
            (tmp / "sums").write_bytes(sums.tobytes())
            (tmp / "manifest.json").write_text(m.model_dump_json(indent=1))
            (tmp / VERIFIED).write_text(json.dumps({"sums_sha256": m.sums_sha256, "from": src.url,
                                                    "verified_at": datetime.now(UTC).isoformat()}))
            os.rename(tmp, final)
            cur_tmp = rdir / f".CURRENT-{uuid.uuid4().hex[:8]}"
            cur_tmp.write_text(f"{m.epoch}\n")
            os.rename(cur_tmp, rdir / "CURRENT")
            if self.fsync:
                _fsync_dir(rdir)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        self.gc(m.region, 1)
        return m

    def adopt(self, m: Manifest, dest: str, cleanup: bool = True) -> dict | None:
        """Move a pre-staged, verified epoch's data to `dest` (a rename: O(1), no copy, no re-check).

        Only an epoch this store pulled and checked page by page (`import_epoch`'s mark, for these
        very checksums) is adopted, and only within one filesystem mount (`EXDEV` otherwise: the
        caller copies instead). The epoch is consumed: it is unnamed and removed, so no later reader
        finds a manifest without data; the agent pulls the store's current epoch again.
        Returns the verification mark, or None when it cannot adopt.
        """
        d = self.epoch_dir(m.region, m.epoch)
        try:
            mark = json.loads((d / VERIFIED).read_text())
        except (OSError, ValueError):
            return None
        if mark.get("sums_sha256") != m.sums_sha256:
            return None
        data = d / "data"
        try:
            if os.path.getsize(data) != m.size_bytes:
                return None
            os.rename(data, dest)
        except OSError as exc:
            if exc.errno in (errno.EXDEV, errno.ENOENT, errno.EROFS, errno.EACCES, errno.EPERM):
                return None  # another mount, gone meanwhile, or read-only to us: the caller copies
            raise
        if self.current(m.region) == m.epoch:
            (self.region_dir(m.region) / "CURRENT").unlink(missing_ok=True)
        os.chmod(dest, 0o600)
        if cleanup:
            self.forget(m)
        return mark

    def forget(self, m: Manifest) -> None:
        """Remove what is left of an adopted epoch (off the critical path of a recovery)."""
        shutil.rmtree(self.epoch_dir(m.region, m.epoch), ignore_errors=True)

    def gc(self, name: str, keep: int) -> None:
        cur = self.current(name)
        for e in self.epochs(name)[:-keep] if keep > 0 else []:
            if e != cur:
                shutil.rmtree(self.epoch_dir(name, e), ignore_errors=True)

    def manifest(self, name: str, epoch: int | None = None) -> Manifest:
        """The manifest of `epoch` (default: the published one), with its checksum file verified."""
        if epoch is None:
            epoch = self.current(name)
            if epoch is None:
                raise StoreError(f"no baseline published for region {name!r} in {self.root}")
        d = self.epoch_dir(name, epoch)
        try:
            m = Manifest.model_validate_json((d / "manifest.json").read_text())
        except FileNotFoundError as exc:
            raise StoreError(f"baseline epoch {epoch} of {name!r} is missing") from exc
        if m.epoch != epoch or m.region != name:
            raise StoreError(f"manifest in {d} names {m.region}@{m.epoch}")
        return m

    def sums_raw(self, m: Manifest) -> bytes:
        """The epoch's checksum file (DIGEST bytes per page), checked against the manifest."""
        return checked_sums(m, (self.epoch_dir(m.region, m.epoch) / "sums").read_bytes())

    def sums(self, m: Manifest) -> np.ndarray:
        return sums_array(m, self.sums_raw(m))

    def read_into(self, m: Manifest, dest: memoryview, pages: np.ndarray | None = None,
                  limit: RateLimiter | None = None, on_piece: Callable[[int, int], None] | None = None) -> int:
        """Copy the baseline (or only `pages`) into dest; returns bytes read."""
        path = self.epoch_dir(m.region, m.epoch) / "data"
        if os.path.getsize(path) != m.size_bytes:
            raise StoreError(f"baseline data of {m.region}@{m.epoch} has the wrong size")
        n = 0
        with open(path, "rb", buffering=0) as f:
            if pages is None:
                step = CHUNK if limit is None else 1 << 20
                for off in range(0, m.size_bytes, step):
                    got = f.readinto(dest[off:off + step])
                    n += got
                    if limit is not None:
                        limit.take(got)
                    if on_piece:
                        on_piece(off, got)
            else:
                ps = m.page_size_bytes
                for p in pages.tolist():
                    n += os.preadv(f.fileno(), [dest[p * ps:(p + 1) * ps]], p * ps)
        return n


def checked_sums(m: Manifest, raw: bytes) -> bytes:
    if hashlib.sha256(raw).hexdigest() != m.sums_sha256 or len(raw) != m.npages * DIGEST:
        raise StoreError(f"checksum file of {m.region}@{m.epoch} is corrupt")
    return raw


def sums_array(m: Manifest, raw: bytes) -> np.ndarray:
    """A checked checksum file as an (npages, DIGEST) uint8 array."""
    import numpy as np

    return np.frombuffer(raw, np.uint8).reshape(m.npages, DIGEST)


class BaselineStore(Protocol):
    """What recovery, snapshots and pre-staging need of a store (DirStore, store_s3.S3Store)."""

    @property
    def url(self) -> str: ...
    def regions(self) -> list[str]: ...
    def epochs(self, name: str) -> list[int]: ...
    def current(self, name: str) -> int | None: ...
    def next_epoch(self, name: str) -> int: ...
    def write(self, name: str, epoch: int, buf: memoryview, page_size: int, algo: str,
              sums_out: np.ndarray | None = None, source: str = "", started: float | None = None,
              keep: int = 2) -> Manifest: ...
    def manifest(self, name: str, epoch: int | None = None) -> Manifest: ...
    def sums(self, m: Manifest) -> np.ndarray: ...
    def sums_raw(self, m: Manifest) -> bytes: ...
    def read_pages(self, m: Manifest, pages: np.ndarray, dest: memoryview) -> int: ...
    def read_into(self, m: Manifest, dest: memoryview, pages: np.ndarray | None = None,
                  limit: RateLimiter | None = None,
                  on_piece: Callable[[int, int], None] | None = None) -> int: ...


def open_store(spec: str, **kw: object) -> BaselineStore:
    """A directory (the RWX volume) or `s3://bucket/prefix` (endpoint/credentials: the AWS_* variables)."""
    if spec.startswith("s3://"):
        from .store_s3 import S3Store

        return S3Store.from_url(spec, **kw)  # type: ignore[arg-type]
    return DirStore(spec)
