"""The node agent's side: holds registered regions and serves their dirty lists and pages.

Workloads register over a unix socket, handing over the memory and state descriptors
(SCM_RIGHTS); the agent keeps them, so both survive the workload. When the workload's
registration connection drops (it exited or was killed), the agent sweeps the region: pages
whose checksum differs from the published baseline's and that are not yet in the dirty list
were written after the workload's last scan; they are added to the dirty list.
"""

from __future__ import annotations

import hmac
import json
import logging
import mmap
import os
import secrets
import socket
import ssl
import struct
import threading
import time
from dataclasses import dataclass, field

import numpy as np

from .hashing import page_sums
from .naming import RegionId, pod_in_cgroup
from .protocol import Conn, Msg, ProtocolError, client_mac, pack, server_mac
from .state import NO_EPOCH, RegionState

log = logging.getLogger("edgeweave.memory.server")
MAX_PAGES_PER_REQUEST = 1 << 16


@dataclass
class SweepResult:
    epoch: int
    checked: int
    found: int
    seconds: float


@dataclass
class AgentRegion:
    name: str
    size: int
    page_size: int
    mem_fd: int
    state: RegionState
    token: bytes
    owner_pid: int
    tracking: str = ""
    rid: RegionId | None = None
    owner_uid: int = 0
    owner_alive: bool = True
    swept_after_death: bool = False
    last_sweep: SweepResult | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.map = mmap.mmap(self.mem_fd, self.size, prot=mmap.PROT_READ)
        self.buf = memoryview(self.map)
        self.npages = self.size // self.page_size
        self.file = open(self.mem_fd, "rb", buffering=0, closefd=False)  # noqa: SIM115 - lives with the region

    def close(self) -> None:
        self.file.close()
        self.buf.release()
        self.map.close()
        self.state.close()
        os.close(self.mem_fd)
        os.close(self.state.fd)


def sweep(r: AgentRegion) -> SweepResult | None:
    """Add to the dirty list every page that differs from the published baseline. Caller holds r.lock."""
    t0 = time.monotonic()
    h = r.state.header()
    epoch = h["published"]
    slot = r.state.slot_of(epoch) if epoch != NO_EPOCH else None
    if slot is None:
        return None
    dirty = r.state.dirty_since(epoch)
    cand = np.flatnonzero(~dirty)
    cur = page_sums(r.buf, r.page_size, cand, algo=r.state.algo)
    differs = cand[np.any(cur != r.state.sums[slot][cand], axis=1)]
    if len(differs):
        r.state.slots[h["active"]][differs] = 1
    res = SweepResult(epoch, len(cand), len(differs), round(time.monotonic() - t0, 4))
    r.last_sweep = res
    log.info("swept %s against epoch %d: %d of %d clean pages had changed (%.3fs)",
             r.name, epoch, len(differs), len(cand), res.seconds)
    return res


@dataclass(frozen=True)
class Limits:
    """What one caller can cost the agent: every socket is capped and times out."""

    max_tcp_connections: int = 32
    max_control_pending: int = 16  # control connections not yet past their first message
    max_regions: int = 64
    handshake_timeout_s: float = 5.0
    idle_timeout_s: float = 30.0


def peer_cred(sock: socket.socket) -> tuple[int, int, int]:
    """(pid, uid, gid) of the process at the other end of a unix socket, from the kernel."""
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    pid, uid, gid = struct.unpack("3i", raw)
    return pid, uid, gid


def _cgroup_of(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cgroup") as f:
            return f.read()
    except OSError:
        return ""


UNAUTHORIZED = {"ok": False, "error": "unauthorized"}


class Agent:
    """The node agent's memory side.

    Control socket (unix): `register` hands over a region (memory + state fds); the caller's
    pid comes from SO_PEERCRED, and with `require_pod_cgroup` the caller must run in the
    cgroup of the pod whose UID it names. Every other op (`list`, `baseline`) needs the
    region's token or the admin token; anything else gets `unauthorized` and nothing more.
    A key held by a live workload is never replaced; one whose workload died is replaced only
    by a caller with the same token. Baselines go only to the agent's configured store.
    Page server (TCP): bound to one given address, TLS unless explicitly plaintext, capped
    connections, handshake and idle timeouts.
    """

    def __init__(self, control_path: str | None, listen: tuple[str, int] | None,
                 tls: ssl.SSLContext | None = None, *, store: str | None = None,
                 admin_token: bytes | None = None, require_pod_cgroup: bool = False,
                 allow_plaintext: bool = False, limits: Limits = Limits()) -> None:
        self.regions: dict[str, AgentRegion] = {}
        self.rlock = threading.Lock()
        self.tls = tls
        self.store_spec = store
        self.admin_token = admin_token
        self.require_pod_cgroup = require_pod_cgroup
        self.limits = limits
        self._tcp_slots = threading.BoundedSemaphore(limits.max_tcp_connections)
        self._control_slots = threading.BoundedSemaphore(limits.max_control_pending)
        self.refused = {"tcp_over_cap": 0, "control_over_cap": 0, "unauthorized": 0}
        self._stop = threading.Event()
        self._socks: list[socket.socket] = []
        self.control_path = control_path
        self.port = 0
        if listen and tls is None and not allow_plaintext:
            raise ValueError("the page server needs TLS (certificate, key and CA); plaintext only when "
                             "explicitly allowed")
        if listen and listen[0] in ("", "0.0.0.0", "::", "[::]"):
            raise ValueError("the page server binds to one address (the node's pod-network address), "
                             "not to all addresses")
        if control_path:
            if os.path.exists(control_path):
                os.unlink(control_path)
            cs = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            cs.bind(control_path)
            os.chmod(control_path, 0o660)
            cs.listen(64)
            self._socks.append(cs)
            self._spawn(self._accept_control, cs)
        if listen:
            ts = socket.socket(socket.AF_INET6 if ":" in listen[0] else socket.AF_INET, socket.SOCK_STREAM)
            ts.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            ts.bind(listen)
            ts.listen(128)
            self.port = ts.getsockname()[1]
            self._socks.append(ts)
            self._spawn(self._accept_tcp, ts)

    def _spawn(self, fn, *args) -> None:  # type: ignore[no-untyped-def]
        threading.Thread(target=fn, args=args, daemon=True).start()

    def close(self) -> None:
        self._stop.set()
        for s in self._socks:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()
        with self.rlock:
            for r in self.regions.values():
                r.close()
            self.regions.clear()

    # --- control socket ---------------------------------------------------------------------
    def _accept_control(self, cs: socket.socket) -> None:
        while not self._stop.is_set():
            try:
                c, _ = cs.accept()
            except OSError:
                return
            if not self._control_slots.acquire(blocking=False):
                self.refused["control_over_cap"] += 1
                c.close()  # over the cap: no thread, no buffer
                continue
            self._spawn(self._serve_control, c)

    def _serve_control(self, c: socket.socket) -> None:
        region: AgentRegion | None = None
        pending = True
        try:
            c.settimeout(self.limits.handshake_timeout_s)
            pid, uid, _ = peer_cred(c)
            msg, fds, _, _ = socket.recv_fds(c, 65536, 4)
            try:
                req = json.loads(msg or b"{}")
                if not isinstance(req, dict):
                    raise ValueError("not an object")
            except ValueError:
                req = {}
            if req.get("op") != "register":
                for fd in fds:
                    os.close(fd)
                c.sendall(json.dumps(self._control_op(req)).encode())
                return
            if len(fds) != 2:
                for fd in fds:
                    os.close(fd)
                c.sendall(json.dumps({"ok": False, "error": "expected register with 2 fds"}).encode())
                return
            try:
                region = self.add_region(req, fds[0], fds[1], peer_pid=pid, peer_uid=uid)
            except (ValueError, KeyError, TypeError, PermissionError) as exc:
                for fd in fds:
                    os.close(fd)
                c.sendall(json.dumps({"ok": False, "error": str(exc)}).encode())
                return
            c.sendall(json.dumps({"ok": True, "region": region.name}).encode())
            self._control_slots.release()
            pending = False
            c.settimeout(None)  # a registration lasts the workload's life; EOF means it is gone
            while c.recv(4096):
                pass
        except OSError:
            pass
        finally:
            if pending:
                self._control_slots.release()
            c.close()
            if region is not None and not self._stop.is_set():
                self.owner_gone(region)

    def add_region(self, req: dict, mem_fd: int, state_fd: int, peer_pid: int = 0,
                   peer_uid: int = 0) -> AgentRegion:
        rid = RegionId(str(req.get("namespace", "")), str(req.get("pod_uid", "")), str(req.get("name", "")))
        if peer_pid and int(req.get("pid", peer_pid)) != peer_pid:
            raise PermissionError("declared pid is not the caller's")
        if self.require_pod_cgroup and not pod_in_cgroup(rid.pod_uid, _cgroup_of(peer_pid)):
            self.refused["unauthorized"] += 1
            raise PermissionError(f"caller (pid {peer_pid}) is not in the cgroup of pod {rid.pod_uid}")
        token = bytes.fromhex(str(req["token"]))
        if len(token) < 16:
            raise ValueError("token too short (need >= 16 bytes)")
        with self.rlock:
            old = self.regions.get(rid.key)
            if old is not None and (old.owner_alive or not hmac.compare_digest(old.token, token)):
                # Never silently take another's region: a live owner keeps it, and only the
                # holder of its token may take over a dead owner's.
                self.refused["unauthorized"] += 1
                raise PermissionError(f"region {rid.key} is registered" + (" by a live workload" if old.owner_alive
                                                                            else " with another token"))
            if old is None and len(self.regions) >= self.limits.max_regions:
                raise ValueError(f"agent holds {len(self.regions)} regions (the limit)")
        st = RegionState(state_fd)
        size, ps = int(req["size"]), int(req["page_size"])
        if os.fstat(mem_fd).st_size < size or st.npages != size // ps or st.page_size != ps:
            st.close()
            raise ValueError("descriptors do not match the declared geometry")
        r = AgentRegion(rid.key, size, ps, mem_fd, st, token, peer_pid or int(req.get("pid", 0)),
                        tracking=str(req.get("tracking", "")), rid=rid, owner_uid=peer_uid)
        with self.rlock:
            old = self.regions.get(rid.key)
            if old is not None and old.owner_alive:
                r.close()
                raise PermissionError(f"region {rid.key} was registered meanwhile")
            self.regions[rid.key] = r
        if old is not None:
            log.warning("region %s re-registered by the holder of its token (pid %d)", rid.key, peer_pid)
            old.close()
        log.info("registered %s: %d bytes, %d-byte pages, tracking %s, pid %d", r.name, size, ps, r.tracking,
                 peer_pid)
        return r

    def _authorized(self, req: dict) -> tuple[bool, AgentRegion | None]:
        """(admin?, region the caller holds the token of). Unknown region and wrong token look alike."""
        def tok(field_: str) -> bytes | None:
            try:
                return bytes.fromhex(str(req.get(field_, "")))
            except ValueError:
                return None
        admin = bool(self.admin_token) and hmac.compare_digest(self.admin_token or b"", tok("admin_token") or b"")
        with self.rlock:
            r = self.regions.get(str(req.get("region", "")))
        given = tok("token")
        if r is not None and not (given and hmac.compare_digest(r.token, given)) and not admin:
            r = None
        return admin, r

    def _control_op(self, req: dict) -> dict:
        op = req.get("op")
        admin, r = self._authorized(req)
        if op == "list" and (admin or r is not None):
            with self.rlock:
                regs = list(self.regions.values()) if admin else [r]
            return {"ok": True, "regions": [{
                "name": x.name, "size": x.size, "page_size": x.page_size, "owner_pid": x.owner_pid,
                "owner_alive": x.owner_alive, "tracking": x.tracking, **x.state.header(),
                "last_sweep": x.last_sweep.__dict__ if x.last_sweep else None} for x in regs if x is not None]}
        if op != "baseline" or r is None:
            self.refused["unauthorized"] += 1
            return UNAUTHORIZED
        if self.store_spec is None:
            return {"ok": False, "error": "this agent has no baseline store configured"}
        if req.get("store") not in (None, self.store_spec):
            return {"ok": False, "error": "the agent writes baselines only to its configured store"}
        if r.owner_alive:
            # Only the owner can scan its userfaultfd; two processes flipping one state would race.
            return {"ok": False, "error": "the workload is alive and takes its own baselines"}
        from .snapshot import take_baseline
        from .store import open_store

        try:
            # collect = sweep: the owner's unscanned writes join the old slot before the flip.
            assert r.rid is not None
            m = take_baseline(r.rid.store_name, r.buf, r.page_size, r.state, open_store(self.store_spec),
                              lambda: sweep(r), r.lock, source=socket.gethostname())
        except Exception as exc:
            return {"ok": False, "error": str(exc)}
        return {"ok": True, "manifest": m.model_dump()}

    def owner_gone(self, r: AgentRegion) -> None:
        with r.lock:
            r.owner_alive = False
            try:
                sweep(r)
                r.swept_after_death = True
            except Exception:
                log.exception("sweep of %s failed", r.name)

    # --- page serving ----------------------------------------------------------------------
    def _accept_tcp(self, ts: socket.socket) -> None:
        while not self._stop.is_set():
            try:
                c, _ = ts.accept()
            except OSError:
                return
            if not self._tcp_slots.acquire(blocking=False):
                self.refused["tcp_over_cap"] += 1
                c.close()  # over the cap: closed at once, no thread
                continue
            c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._spawn(self._serve_tcp, c)

    def _serve_tcp(self, raw: socket.socket) -> None:
        try:
            raw.settimeout(self.limits.handshake_timeout_s)
            sock = self.tls.wrap_socket(raw, server_side=True) if self.tls else raw
        except (ssl.SSLError, OSError) as exc:
            log.info("TLS handshake refused: %s", exc)
            raw.close()
            self._tcp_slots.release()
            return
        conn = Conn(sock)
        try:
            region = self._handshake(conn)
            if region is None:
                self.refused["unauthorized"] += 1
                return
            sock.settimeout(self.limits.idle_timeout_s)
            while True:
                try:
                    kind, req_id, meta, plen = conn.recv_head()
                except ConnectionError:
                    return
                payload = conn.recv_exact(plen) if plen else b""
                if kind == Msg.DIRTY:
                    self._answer_dirty(conn, region, req_id, meta)
                elif kind == Msg.PAGES:
                    self._answer_pages(conn, region, req_id, payload)
                elif kind == Msg.RDMA:
                    self._answer_rdma(conn, region, req_id, meta)
                else:
                    conn.send(pack(Msg.ERR, req_id, {"code": "bad-request", "error": f"unexpected {kind.name}"}))
                    return
        except (OSError, ProtocolError, ValueError) as exc:
            log.info("connection ended: %s", exc)
        finally:
            conn.close()
            self._tcp_slots.release()

    def _handshake(self, conn: Conn) -> AgentRegion | None:
        nonce = secrets.token_bytes(32)
        conn.send(pack(Msg.HELLO, 0, {"nonce": nonce.hex(), "version": 1}))
        kind, req_id, meta, plen = conn.recv_head()
        if kind != Msg.AUTH or plen:
            raise ProtocolError("expected AUTH")
        name = str(meta.get("region", ""))
        cnonce = bytes.fromhex(str(meta.get("nonce", "")))
        with self.rlock:
            region = self.regions.get(name)
        # Compare against a throw-away token for unknown regions: same answer, same time.
        token = region.token if region else secrets.token_bytes(32)
        good = client_mac(token, nonce, cnonce, name)
        if region is None or len(cnonce) < 16 or not hmac.compare_digest(good, str(meta.get("mac", ""))):
            conn.send(pack(Msg.ERR, req_id, {"code": "unauthorized", "error": "unauthorized"}))
            return None
        hdr = region.state.header()
        conn.send(pack(Msg.OK, req_id, {
            "region": name, "size": region.size, "page_size": region.page_size, "npages": region.npages,
            "algo": region.state.algo, "published": hdr["published"], "owner_alive": region.owner_alive,
            "tracking": region.tracking, "mac": server_mac(token, nonce, cnonce, name)}))
        return region

    def _answer_dirty(self, conn: Conn, r: AgentRegion, req_id: int, meta: dict) -> None:
        since = int(meta.get("since", -1))
        with r.lock:
            swept = None
            if not r.swept_after_death:
                # The owner may still be running (a planned move) or its death not yet seen:
                # sweep now so writes since its last scan are in the list.
                swept = sweep(r)
                if not r.owner_alive:
                    r.swept_after_death = True
            try:
                dirty = r.state.dirty_since(since)
            except LookupError as exc:
                conn.send(pack(Msg.ERR, req_id, {"code": "epoch", "error": str(exc)}))
                return
        bits = np.packbits(dirty).tobytes()
        last = r.last_sweep
        conn.send(pack(Msg.OK, req_id, {
            "since": since, "published": r.state.header()["published"], "pages": int(dirty.sum()),
            "npages": r.npages, "owner_alive": r.owner_alive, "swept_now": swept is not None,
            "sweep": None if last is None else last.__dict__}, len(bits)), bits)

    def _answer_pages(self, conn: Conn, r: AgentRegion, req_id: int, payload: bytes) -> None:
        pages = np.frombuffer(payload, dtype="<u4")
        if len(pages) == 0 or len(pages) > MAX_PAGES_PER_REQUEST or int(pages.max()) >= r.npages \
                or (len(pages) > 1 and np.any(np.diff(pages.astype(np.int64)) <= 0)):
            conn.send(pack(Msg.ERR, req_id, {"code": "bad-request", "error": "pages must be ascending, in range"}))
            return
        ps = r.page_size
        sums = page_sums(r.buf, ps, pages.tolist(), algo=r.state.algo, threads=1).tobytes()
        conn.send(pack(Msg.OK, req_id, {"n": len(pages), "algo": r.state.algo},
                       len(sums) + len(pages) * ps), sums)
        # Contiguous runs go out with sendfile straight from the region (no copy through Python);
        # under TLS the kernel cannot encrypt, so slices of the mapping are sent instead.
        breaks = np.flatnonzero(np.diff(pages.astype(np.int64)) != 1) + 1
        starts = np.concatenate(([0], breaks))
        ends = np.concatenate((breaks, [len(pages)]))
        for a, b in zip(starts.tolist(), ends.tolist(), strict=True):
            off, count = int(pages[a]) * ps, (b - a) * ps
            if self.tls is None:
                # socket.sendfile honours the socket's timeout (os.sendfile would see EAGAIN).
                conn.tx += conn.sock.sendfile(r.file, off, count)
            else:
                conn.send(r.buf[off:off + count])

    def _answer_rdma(self, conn: Conn, r: AgentRegion, req_id: int, meta: dict) -> None:
        from . import transport_rdma

        if not transport_rdma.available():
            conn.send(pack(Msg.ERR, req_id, {"code": "rdma-unavailable", "error": "no RDMA device on this host"}))
            return
        info = transport_rdma.serve_region(r, meta)
        conn.send(pack(Msg.OK, req_id, info))

