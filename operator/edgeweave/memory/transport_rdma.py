"""RDMA transport (pyverbs): one-sided READs of a region and its dirty lists.

Chosen only where an RDMA device exists (/dev/infiniband) and pyverbs imports; nothing here
runs on a machine without one, and the TCP transport is what the tests exercise. The
connection is set up over the authenticated TCP connection (an RDMA message carries each
side's QP number, LID and GID; the agent answers with the addresses and rkeys of the region
and of the state file), so the token check is the same. After that the client reads the
state header and both dirty slots, and then the dirty pages, without the source's CPU.

Limit: the agent's sweep (which finds writes made after the workload's last scan) runs on the
source's CPU when the workload dies; if the whole source host is gone before that, only the
scanned writes are in the slots. Keep the scan interval short where that matters.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np

from .state import _HDR, HEADER, NO_EPOCH

PORT = 1
GID_INDEX = int(os.environ.get("EDGEWEAVE_RDMA_GID_INDEX", "0"))


def available() -> bool:
    if not os.path.isdir("/dev/infiniband"):
        return False
    try:
        import pyverbs.device  # noqa: F401
    except ImportError:
        return False
    return True


def _device_name() -> str:
    import pyverbs.device as d

    devs = d.get_device_list()
    if not devs:
        raise OSError("no RDMA device")
    name = os.environ.get("EDGEWEAVE_RDMA_DEVICE") or devs[0].name.decode()
    return name


@dataclass
class _Endpoint:
    ctx: Any
    pd: Any
    cq: Any
    qp: Any

    def info(self) -> dict:
        port = self.ctx.query_port(PORT)
        gid = self.ctx.query_gid(PORT, GID_INDEX)
        return {"qpn": self.qp.qp_num, "lid": port.lid, "gid": str(gid), "mtu": int(port.active_mtu)}


def _open(max_wr: int) -> _Endpoint:
    import pyverbs.enums as e
    from pyverbs.cq import CQ
    from pyverbs.device import Context
    from pyverbs.pd import PD
    from pyverbs.qp import QP, QPAttr, QPCap, QPInitAttr

    ctx = Context(name=_device_name())
    pd = PD(ctx)
    cq = CQ(ctx, max_wr * 2)
    cap = QPCap(max_send_wr=max_wr, max_recv_wr=1, max_send_sge=1, max_recv_sge=1)
    qp = QP(pd, QPInitAttr(qp_type=e.IBV_QPT_RC, scq=cq, rcq=cq, cap=cap), QPAttr(port_num=PORT))
    return _Endpoint(ctx, pd, cq, qp)


def _connect(ep: _Endpoint, remote: dict, access: int) -> None:
    """INIT -> RTR -> RTS against the peer's QP."""
    from pyverbs.addr import GID, AHAttr, GlobalRoute
    from pyverbs.qp import QPAttr

    attr = QPAttr(port_num=PORT)
    attr.qp_access_flags = access
    attr.path_mtu = min(int(remote["mtu"]), int(ep.ctx.query_port(PORT).active_mtu))
    attr.dest_qp_num = int(remote["qpn"])
    attr.rq_psn = 0
    attr.sq_psn = 0
    attr.max_dest_rd_atomic = 16
    attr.max_rd_atomic = 16
    attr.min_rnr_timer = 12
    attr.timeout = 14
    attr.retry_cnt = 7
    attr.rnr_retry = 7
    gr = GlobalRoute(dgid=GID(remote["gid"]), sgid_index=GID_INDEX)
    attr.ah_attr = AHAttr(gr=gr, is_global=1, dlid=int(remote["lid"]), port_num=PORT)
    ep.qp.to_rtr(attr)
    ep.qp.to_rts(attr)


# --- agent side ----------------------------------------------------------------------------

_exports: list[Any] = []  # keep MRs and QPs alive as long as the agent runs


def serve_region(r: Any, meta: dict) -> dict:
    """Register region memory and state for remote READ and connect a QP to the client's."""
    import pyverbs.enums as e
    from pyverbs.mr import MR

    ep = _open(16)
    ro = e.IBV_ACCESS_REMOTE_READ
    mem_addr, state_addr = _addr(r.map), _addr(r.state.map)
    mem_mr = MR(ep.pd, r.size, ro, address=mem_addr)
    st_mr = MR(ep.pd, len(r.state.map), ro, address=state_addr)
    _connect(ep, meta, ro)
    _exports.append((ep, mem_mr, st_mr))
    return {**ep.info(), "mem_addr": mem_addr, "mem_rkey": mem_mr.rkey, "state_addr": state_addr,
            "state_rkey": st_mr.rkey, "state_len": len(r.state.map)}


def _addr(m: Any) -> int:
    """Address of a mapping, read-only ones included (ctypes.from_buffer wants writable)."""
    return int(np.frombuffer(m, np.uint8).ctypes.data)


# --- client side ---------------------------------------------------------------------------

class RdmaReader:
    """One RC connection to the agent for one region; READs into a local registered buffer."""

    def __init__(self, tcp_client: Any, dest: memoryview, max_wr: int = 64) -> None:
        import ctypes

        import pyverbs.enums as e
        from pyverbs.mr import MR

        from .protocol import Msg, ProtocolError, pack

        self.e = e
        self.ep = _open(max_wr)
        self.max_wr = max_wr
        tcp_client.conn.send(pack(Msg.RDMA, 2, self.ep.info()))
        kind, _, remote, _ = tcp_client.conn.recv_head()
        if kind == Msg.ERR:
            raise ProtocolError(f"RDMA refused: {remote.get('error')}")
        _connect(self.ep, remote, 0)
        self.remote = remote
        self.dest_addr = ctypes.addressof(ctypes.c_char.from_buffer(dest))
        self.dest_mr = MR(self.ep.pd, len(dest), e.IBV_ACCESS_LOCAL_WRITE, address=self.dest_addr)
        self.state_buf = bytearray(int(remote["state_len"]))
        self.state_addr = ctypes.addressof(ctypes.c_char.from_buffer(self.state_buf))
        self.state_mr = MR(self.ep.pd, len(self.state_buf), e.IBV_ACCESS_LOCAL_WRITE, address=self.state_addr)
        self.page_size = tcp_client.page_size
        self.npages = tcp_client.npages

    def _read(self, jobs: list[tuple[int, int, int, int, int]]) -> None:
        """jobs: (local_addr, lkey, remote_addr, rkey, length); posted max_wr at a time."""
        from pyverbs.wr import SGE, SendWR

        e = self.e
        for i in range(0, len(jobs), self.max_wr):
            chunk = jobs[i:i + self.max_wr]
            for j, (laddr, lkey, raddr, rkey, length) in enumerate(chunk):
                wr = SendWR(wr_id=i + j, opcode=e.IBV_WR_RDMA_READ, num_sge=1,
                            sg=[SGE(laddr, length, lkey)], send_flags=e.IBV_SEND_SIGNALED)
                wr.set_wr_rdma(rkey, raddr)
                self.ep.qp.post_send(wr)
            left = len(chunk)
            while left:
                n, wcs = self.ep.cq.poll(left)
                for wc in wcs[:n]:
                    if wc.status != e.IBV_WC_SUCCESS:
                        raise OSError(f"RDMA READ failed: status {wc.status}")
                left -= n

    def dirty_since(self, epoch: int) -> np.ndarray:
        """Read the state header and both slots one-sided; union of slots labelled >= epoch."""
        r = self.remote
        self._read([(self.state_addr, self.state_mr.lkey, r["state_addr"], r["state_rkey"], len(self.state_buf))])
        h = _HDR.unpack(bytes(self.state_buf[:_HDR.size]))
        if h[4] % 2:
            raise OSError("state caught mid-flip; retry")
        n = self.npages
        out = np.zeros(n, dtype=bool)
        for i, label in enumerate((h[6], h[7])):
            if label != NO_EPOCH and label >= epoch:
                out |= np.frombuffer(self.state_buf, np.uint8, n, HEADER + i * n).astype(bool)
        return out

    def read_pages(self, pages: np.ndarray) -> int:
        ps, r = self.page_size, self.remote
        pages = np.sort(pages)
        brk = np.flatnonzero(np.diff(pages) != 1) + 1
        jobs = []
        for run in np.split(pages, brk) if len(pages) else []:
            off, length = int(run[0]) * ps, len(run) * ps
            jobs.append((self.dest_addr + off, self.dest_mr.lkey, r["mem_addr"] + off, r["mem_rkey"], length))
        self._read(jobs)
        return len(pages) * ps
