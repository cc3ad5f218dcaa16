"""The memory agent's sockets as a hostile neighbour sees them.

Control socket: no token, a wrong token, another region's token, a re-register over a live or
a dead owner, a baseline to a path of the caller's choosing, a caller outside the pod's cgroup.
Page server: wildcard bind and plaintext refused at start, plaintext and unauthenticated
clients get nothing, a flood of idle connections costs a bounded number of threads and is
shed by the handshake/idle timeouts, after which a real recovery works.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from memhelpers import PORT, Stack, kill9, tls_args, wait_for

from edgeweave.memory.state import RegionState

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]
UNAUTHORIZED = {"ok": False, "error": "unauthorized"}


def control(path: Path, req: dict, fds: list[int] | None = None) -> dict:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(10)
        s.connect(str(path))
        socket.send_fds(s, [json.dumps(req).encode()], fds or [])
        return json.loads(s.recv(1 << 20) or b"{}")


def fake_region(size: int = 1 << 20) -> tuple[int, int]:
    mem = os.memfd_create("ewm-fake")
    os.ftruncate(mem, size)
    st = os.memfd_create("ewm-fake-state")
    RegionState(st, size // 4096, 4096, "xxh3-128").close()
    return mem, st


def register_req(stack: Stack, name: str, token: str, size: int = 1 << 20) -> dict:
    return {"op": "register", "namespace": stack.ns, "pod_uid": stack.pod_uid, "name": name, "size": size,
            "page_size": 4096, "token": token}


def threads_of(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Threads:"):
            return int(line.split()[1])
    raise AssertionError("no Threads line")


def test_control_socket_gives_nothing_without_the_region_token(stack: Stack) -> None:
    stack.start_agent()
    w, ready = stack.start_writer("alpha", "--dirty-pages", "10")
    tok = stack.token_file.read_bytes().strip().hex()
    key = ready["region"]
    assert control(stack.control, {"op": "list"}) == UNAUTHORIZED
    assert control(stack.control, {"op": "list", "region": key, "token": "00" * 32}) == UNAUTHORIZED
    assert control(stack.control, {"op": "baseline", "region": key}) == UNAUTHORIZED
    assert control(stack.control, {"op": "bogus"}) == UNAUTHORIZED
    assert control(stack.control, {"op": "list", "region": key + "x", "token": tok}) == UNAUTHORIZED
    mine = control(stack.control, {"op": "list", "region": key, "token": tok})
    assert mine["ok"] and [r["name"] for r in mine["regions"]] == [key]
    # a second region (another pod, another token): alpha's token does not reach it
    other = Stack(stack.env, stack.dir, ns=stack.ns, pod_uid=secrets.token_hex(8))
    (stack.dir / "token2").write_text(secrets.token_hex(32))
    other.procs = stack.procs
    w2 = other.popen("src", "memory", "writer", "--name", "beta", "--size", str(1 << 20), "--control",
                     str(stack.control), "--token-file", str(stack.dir / "token2"), "--store",
                     stack.env.store_url, "--ack", str(stack.dir / "beta.ack"), "--namespace", stack.ns,
                     "--pod-uid", other.pod_uid, log="beta.log")
    assert w2.stdout is not None and w2.stdout.readline().startswith("READY")
    assert control(stack.control, {"op": "list", "region": other.key("beta"), "token": tok}) == UNAUTHORIZED
    # re-register over a live owner: refused, whatever the token
    for t in (secrets.token_hex(32), tok):
        mem, st = fake_region()
        rep = control(stack.control, register_req(stack, "alpha", t), [mem, st])
        os.close(mem)
        os.close(st)
        assert not rep["ok"] and "live workload" in rep["error"]
    # baseline to a path of the caller's choosing: refused; the path is not touched
    evil = stack.dir / "evil"
    kill9(w)
    wait_for(lambda: not control(stack.control, {"op": "list", "region": key, "token": tok})["regions"][0]
             ["owner_alive"], 10, "agent sees the owner gone")
    rep = control(stack.control, {"op": "baseline", "region": key, "token": tok, "store": str(evil)})
    assert not rep["ok"] and "configured store" in rep["error"] and not evil.exists()
    rep = control(stack.control, {"op": "baseline", "region": key, "token": tok})
    assert rep["ok"] and rep["manifest"]["epoch"] == 2, rep
    # re-register over a dead owner: only with its token
    mem, st = fake_region(32 << 20)
    rep = control(stack.control, register_req(stack, "alpha", secrets.token_hex(32), 32 << 20), [mem, st])
    assert not rep["ok"] and "another token" in rep["error"]
    rep = control(stack.control, register_req(stack, "alpha", tok, 32 << 20), [mem, st])
    assert rep["ok"], rep


def test_registration_only_from_the_pods_cgroup(stack: Stack) -> None:
    stack.start_agent("--require-pod-cgroup")
    cg = Path(f"/sys/fs/cgroup/unified/ewm-{secrets.token_hex(3)}")
    pod = cg / f"pod{stack.pod_uid}"
    pod.mkdir(parents=True)
    try:
        p = stack.popen("src", "memory", "writer", "--name", "outsider", "--size", str(1 << 20), "--control",
                        str(stack.control), "--token-file", str(stack.token_file), "--store", stack.env.store_url,
                        "--ack", str(stack.dir / "o.ack"), "--namespace", stack.ns, "--pod-uid", stack.pod_uid,
                        log="outsider.log")
        assert p.wait(timeout=60) != 0
        assert "not in the cgroup of pod" in (stack.dir / "outsider.log").read_text()
        # the same writer started inside the pod's cgroup registers
        argv = stack.env.topo.py("src", "memory", "writer", "--name", "insider", "--size", str(1 << 20),
                                 "--control", str(stack.control), "--token-file", str(stack.token_file),
                                 "--store", stack.env.store_url, "--ack", str(stack.dir / "i.ack"),
                                 "--namespace", stack.ns, "--pod-uid", stack.pod_uid)
        q = subprocess.Popen(["sh", "-c", f'echo $$ > {pod}/cgroup.procs && exec "$@"', "sh", *argv],
                             stdout=subprocess.PIPE, stderr=open(stack.dir / "insider.log", "w"), text=True,
                             env=stack.penv())
        stack.procs.append(q)
        assert q.stdout is not None and q.stdout.readline().startswith("READY"), \
            (stack.dir / "insider.log").read_text()
        kill9(q)
    finally:
        wait_for(lambda: not (pod / "cgroup.procs").read_text().strip(), 10, "cgroup empty")
        pod.rmdir()
        cg.rmdir()


def test_page_server_refuses_wildcard_and_plaintext_at_start(stack: Stack) -> None:
    for listen, extra in (("0.0.0.0:7471", tls_args(stack.env, "src")), (f"{stack.env.topo.src_ip}:7471", [])):
        r = subprocess.run(stack.env.topo.py("src", "memory", "serve", "--control", str(stack.dir / "x.sock"),
                                             "--listen", listen, *extra), capture_output=True, text=True, timeout=60)
        assert r.returncode == 2 and ("one address" in r.stderr or "needs TLS" in r.stderr), r.stderr


FLOOD = r"""
import json, socket, sys, time
host, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
socks, refused = [], 0
for _ in range(n):
    s = socket.create_connection((host, port), 5)
    socks.append(s)
time.sleep(1.0)
# connections over the cap are closed at once by the server (EOF); the rest are held
for s in socks:
    s.settimeout(0.05)
    try:
        if s.recv(1) == b"":
            refused += 1
    except TimeoutError:
        pass
    except OSError:
        refused += 1
print(json.dumps({"opened": n, "closed_at_once": refused}), flush=True)
sys.stdin.readline()  # held until the test has looked at the agent
t = time.monotonic()
closed = 0
for s in socks:
    s.settimeout(15)
    try:
        while s.recv(4096):
            pass
    except OSError:
        pass
    closed += 1
print(json.dumps({"all_closed_after_s": round(time.monotonic() - t, 2)}), flush=True)
"""

PLAIN = r"""
import socket, sys
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), 5)
s.sendall(b"\x02" + b"\x00" * 64)  # an AUTH frame in plaintext, as an old client would send
s.settimeout(8)
data = b""
try:
    while chunk := s.recv(4096):
        data += chunk
except OSError:
    pass
print(len(data), data[:4].hex())
"""


def test_flood_and_plaintext_clients_get_nothing_and_cost_bounded_threads(stack: Stack) -> None:
    agent = stack.start_agent("--max-connections", "16", "--idle-timeout", "2")
    w, _ = stack.start_writer("gamma", "--dirty-pages", "20")
    kill9(w)
    base = threads_of(agent.pid)
    # plaintext against the TLS server: no HELLO ever comes back (only a TLS alert, if anything)
    r = subprocess.run(stack.env.topo.exec("dst") + [shutil.which("python3") or "python3", "-c", PLAIN,
                       stack.env.topo.src_ip, str(PORT)], capture_output=True, text=True, timeout=30)
    n, *head = r.stdout.split()
    assert int(n) < 64 and not "".join(head).startswith("01"), r.stdout
    flood = subprocess.Popen(stack.env.topo.exec("dst") + [shutil.which("python3") or "python3", "-c", FLOOD,
                             stack.env.topo.src_ip, str(PORT), "300"], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
    stack.procs.append(flood)
    assert flood.stdout is not None and flood.stdin is not None
    first = json.loads(flood.stdout.readline())
    assert first["closed_at_once"] >= 300 - 16, first  # over the cap: closed, no thread
    assert threads_of(agent.pid) <= base + 16 + 2
    flood.stdin.write("\n")
    flood.stdin.flush()
    done = json.loads(flood.stdout.readline())
    assert done["all_closed_after_s"] < 10  # the handshake timeout (5 s) sheds the held ones
    wait_for(lambda: threads_of(agent.pid) <= base + 1, 10, "agent threads back to base")
    rc, rep, _ = stack.recover("gamma")
    assert rc == 0 and rep["mode"] == "baseline+dirty", rep
    # an authenticated client that goes idle is closed after the idle timeout
    idle = r"""
import sys, time
from edgeweave.memory.transport_tcp import Endpoint, PageClient
from edgeweave.memory.cli import _tls
import argparse
a = argparse.Namespace(tls_cert=sys.argv[3], tls_key=sys.argv[4], tls_ca=sys.argv[5])
c = PageClient(Endpoint(sys.argv[1], int(sys.argv[2])), sys.argv[6], open(sys.argv[7], "rb").read().strip(), 5, _tls(a, False))
time.sleep(3.5)
try:
    c.dirty_since(1)
    print("served")
except Exception as e:
    print("closed", type(e).__name__)
"""
    p = stack.env.pki["dst"]
    r = subprocess.run(stack.env.topo.exec("dst") + [sys.executable, "-c", idle, stack.env.topo.src_ip, str(PORT),
                       str(p["cert"]), str(p["key"]), str(p["ca"]), stack.key("gamma"), str(stack.token_file)],
                       capture_output=True, text=True, timeout=60)
    assert r.stdout.startswith("closed"), (r.stdout, r.stderr[-2000:])


def test_control_socket_flood_costs_bounded_threads(stack: Stack) -> None:
    agent = stack.start_agent()
    w, ready = stack.start_writer("delta", "--dirty-pages", "5")
    base = threads_of(agent.pid)
    socks = []
    for _ in range(300):  # connect and say nothing
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(str(stack.control))
        socks.append(s)
    try:
        wait_for(lambda: threads_of(agent.pid) <= base + 16 + 2, 5, "threads bounded")
        closed = 0
        for s in socks:
            s.settimeout(0.05)
            try:
                closed += s.recv(1) == b""
            except TimeoutError:
                pass
        assert closed >= 300 - 16  # over the pending cap: closed at once
        assert threads_of(agent.pid) <= base + 16 + 2
    finally:
        for s in socks:
            s.close()
    # once the held ones time out (5 s) the owner is served again
    tok = stack.token_file.read_bytes().strip().hex()

    def served() -> bool:
        try:
            return bool(control(stack.control, {"op": "list", "region": ready["region"], "token": tok}).get("ok"))
        except OSError:
            return False

    assert wait_for(served, 15, "control socket serves again")
    kill9(w)
