"""The flows agent end to end: real eBPF on tc, real netns uplinks, real TCP traffic."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT / "hack"))
from flows_topo import CLIENT, SERVER, Topology, UplinkSpec  # noqa: E402

from edgeweave.agent import bpfsys  # noqa: E402
from edgeweave.agent.build import build  # noqa: E402
from edgeweave.agent.flowtable import KEY, VAL, Cls, DecidedBy, FlowEntry, FlowKey  # noqa: E402
from edgeweave.flows.model import FlowClass, decide_at_k, load  # noqa: E402

pytestmark = [pytest.mark.e2e, pytest.mark.skipif(os.geteuid() != 0, reason="needs root for netns/eBPF")]
PY = sys.executable
TRAFFIC = str(ROOT / "hack" / "flows_traffic.py")
MARKS = {"mpls": 0xE00, "inet": 0xE01, "lte": 0xE02}


@pytest.fixture(scope="module")
def topo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Topology]:
    build()
    t = Topology(uuid.uuid4().hex[:4], [UplinkSpec("mpls", 10, 2), UplinkSpec("inet", 40, 10),
                                        UplinkSpec("lte", 30, 30)])
    t.build()
    srv = subprocess.Popen(["ip", "netns", "exec", t.server, PY, TRAFFIC, "server", "--addr", SERVER])
    try:
        time.sleep(0.5)
        yield t
    finally:
        srv.kill()
        srv.wait()
        t.destroy()


class AgentRun:
    def __init__(self, topo: Topology, tmp: Path, *extra: str, site: str | None = None) -> None:
        self.topo, self.tmp = topo, tmp
        self.pin = f"/sys/fs/bpf/ewf{topo.tag}{uuid.uuid4().hex[:4]}"
        self.site = tmp / "site.yaml"
        self.site.write_text(site or topo.edgesite_yaml())
        self.status = tmp / "status.json"
        self.extra = list(extra)
        self.proc: subprocess.Popen[bytes] | None = None

    def base_args(self) -> list[str]:
        return [PY, "-m", "edgeweave.cli", "agent", "--edgesite", str(self.site), "--lan-interface", "lan0",
                "--netns", self.topo.edge, "--pin-dir", self.pin]

    def args(self) -> list[str]:
        return [*self.base_args(), "--status-file", str(self.status), *self.extra]

    def start(self) -> None:
        if self.status.exists():
            self.status.unlink()
        self.proc = subprocess.Popen(self.args(), stderr=open(self.tmp / "agent.log", "ab"))
        deadline = time.monotonic() + 20
        while not self.status.exists():
            assert self.proc.poll() is None, (self.tmp / "agent.log").read_text()
            assert time.monotonic() < deadline, "agent did not come up"
            time.sleep(0.1)

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(10)

    def state(self) -> dict:
        return json.loads(self.status.read_text())

    def table(self) -> dict[FlowKey, FlowEntry]:
        with bpfsys.Map(f"{self.pin}/ewf_flows", KEY.size, VAL.size) as m:
            return {FlowKey.unpack(k): FlowEntry.unpack(v) for k, v in m.items()}

    def cleanup(self) -> None:
        self.kill()
        r = subprocess.run([*self.base_args(), "--cleanup"], capture_output=True, text=True, timeout=30)
        assert r.returncode == 0, r.stderr


@pytest.fixture
def agent(topo: Topology, tmp_path: Path) -> Iterator[AgentRun]:
    runs: list[AgentRun] = []

    def make(*extra: str, site: str | None = None) -> AgentRun:
        r = AgentRun(topo, tmp_path, *extra, site=site)
        runs.append(r)
        return r

    yield make  # type: ignore[misc]
    for r in runs:
        r.cleanup()


def mix(topo: Topology, out: Path, **kw: object) -> subprocess.Popen[bytes]:
    args = ["ip", "netns", "exec", topo.client, PY, TRAFFIC, "mix", "--dst", SERVER, "--out", str(out)]
    for k, v in kw.items():
        args += [f"--{k.replace('_', '-')}", str(v)]
    return subprocess.Popen(args)


def elephant_entries(run: AgentRun) -> dict[FlowKey, FlowEntry]:
    return {k: e for k, e in run.table().items() if k.dport == 5001 and e.pkts > 100}


def test_flows_classified_pinned_and_exported(topo: Topology, agent, tmp_path: Path) -> None:
    wl = tmp_path / "workloads.yaml"
    wl.write_text(f"{CLIENT}: {{workload: pos, namespace: store}}\n{SERVER}: {{workload: hub, namespace: store}}\n")
    run = agent("--workloads", str(wl), "--metrics-port", "19477", "--metrics-addr", "127.0.0.1")
    run.start()
    tx0 = topo.tx_bytes()
    out = tmp_path / "mix.json"
    mix(topo, out, elephants=2, seconds=6, mice_rate=15).wait(60)
    tx = {k: v - tx0[k] for k, v in topo.tx_bytes().items()}
    res = json.loads(out.read_text())
    assert res["errors"] == []
    st = run.state()["flows"]
    ele = {k: v for k, v in st.items() if k.endswith(":5001")}
    assert len(ele) == 2 and all(v["class"] == "elephant" for v in ele.values()), ele
    # elephants kept off the mice uplink and not stacked on one uplink
    assert sorted(v["uplink"] for v in ele.values()) == ["inet", "lte"]
    mice = [v for k, v in st.items() if k.endswith(":5002") and v["class"]]
    assert mice and all(v["class"] == "mouse" and v["uplink"] == "mpls" for v in mice)
    # the interface counters confirm the path: bulk on inet+lte, the mice uplink stays light
    assert tx["inet"] > 10e6 and tx["lte"] > 8e6, tx
    assert tx["mpls"] < 0.1 * (tx["inet"] + tx["lte"]), tx
    fct = sorted(m["fct"] for m in res["mice"])
    # mice never queue behind an elephant (its uplink's tbf queue is ~200 ms deep); the tail
    # is left out: on two busy cores a Python client thread can wait 100 ms for the CPU
    assert fct[len(fct) // 2] < 0.02 and fct[int(len(fct) * 0.9)] < 0.05, fct[-10:]
    body = subprocess.run(["ip", "netns", "exec", topo.edge, PY, "-c",
                           "import urllib.request;print(urllib.request.urlopen("
                           "'http://127.0.0.1:19477/metrics').read().decode())"],
                          capture_output=True, text=True, check=True).stdout
    line = next(x for x in body.splitlines() if x.startswith("edgeweave_flow_bytes_total{"))
    assert 'source_workload="pos"' in line and 'destination_workload="hub"' in line and 'namespace="store"' in line
    assert float(line.split()[-1]) > 10e6
    assert 'edgeweave_agent_flows_classified_total{class="elephant",uplink="inet"} 1.0' in body
    assert "edgeweave_agent_classification_seconds_count" in body


def test_flows_uplink_down_repins_and_restart_keeps(topo: Topology, agent, tmp_path: Path) -> None:
    run = agent("--metrics-port", "0")
    run.start()
    traffic = mix(topo, tmp_path / "mix.json", elephants=2, seconds=12, mice_rate=0)
    try:
        deadline = time.monotonic() + 5
        while len(ele := elephant_entries(run)) < 2 or not all(e.mark for e in ele.values()):
            assert time.monotonic() < deadline, ele
            time.sleep(0.1)
        on_inet = [k for k, e in ele.items() if e.mark == MARKS["inet"]]
        assert len(on_inet) == 1
        # uplink down: its flow is re-pinned within a second
        t0 = time.monotonic()
        topo.ip(topo.edge, "link", "set", "up1", "down")
        while run.table()[on_inet[0]].mark == MARKS["inet"]:
            assert time.monotonic() - t0 < 1.0, "flow not moved off the dead uplink within 1 s"
            time.sleep(0.02)
        assert run.table()[on_inet[0]].mark == MARKS["lte"]
        # agent killed: marks stay in the pinned map and packets keep following them
        run.kill(signal.SIGKILL)
        before = {k: e.mark for k, e in elephant_entries(run).items()}
        tx0 = topo.tx_bytes()
        time.sleep(1.5)
        tx = {k: v - tx0[k] for k, v in topo.tx_bytes().items()}
        assert tx["lte"] > 2e6 and tx["mpls"] < 0.2e6, tx
        run.start()
        assert run.state()["reusedDatapath"] is True
        time.sleep(0.6)
        after = {k: e.mark for k, e in elephant_entries(run).items()}
        assert after == before
        st = run.state()["flows"]
        assert all(st[str(k)]["uplink"] == "lte" for k in before)
        # link back: new elephants use it again
        topo.ip(topo.edge, "link", "set", "up1", "up")
        time.sleep(0.5)
        mix(topo, tmp_path / "mix2.json", elephants=1, seconds=2, mice_rate=0).wait(30)
        new = [e for k, e in elephant_entries(run).items() if k not in before]
        assert new and new[0].mark == MARKS["inet"], new
    finally:
        topo.ip(topo.edge, "link", "set", "up1", "up", check=False)
        traffic.wait(60)
    res = json.loads((tmp_path / "mix.json").read_text())
    assert res["errors"] == [] and all(e["bytes_acked"] > 1e6 for e in res["elephants"])


def test_flows_full_table_degrades_to_default_route(topo: Topology, agent, tmp_path: Path) -> None:
    run = agent("--metrics-port", "0", "--max-flows", "16")
    run.start()
    drops0 = topo.drops(topo.edge, "lan0")
    out = tmp_path / "mix.json"
    mix(topo, out, elephants=3, seconds=4, mice_rate=80, resp=20000, warmup=0.2).wait(60)
    res = json.loads(out.read_text())
    assert res["errors"] == []
    assert len(res["mice"]) > 150  # far more flows than the 16 table slots
    assert all(e["bytes_acked"] > 1e6 for e in res["elephants"])
    assert len(run.table()) <= 16
    assert topo.drops(topo.edge, "lan0") == drops0


def upload(topo: Topology, tmp: Path, name: str, size: int, write: int, port: int = 5001) -> dict:
    plan = tmp / f"{name}.plan.json"
    plan.write_text(json.dumps([{"start": 0, "port": port, "size": size, "write": write}]))
    out = tmp / f"{name}.json"
    subprocess.run(["ip", "netns", "exec", topo.client, PY, TRAFFIC, "uploads", "--dst", SERVER, "--plan", str(plan),
                    "--out", str(out)], check=True, timeout=60)
    res = json.loads(out.read_text())
    assert res["errors"] == [] and len(res["flows"]) == 1, res
    return res["flows"][0]


def entry_for(run: AgentRun, sport: int) -> FlowEntry:
    deadline = time.monotonic() + 5
    while True:
        found = [e for k, e in run.table().items() if k.sport == sport]
        if found:
            return found[0]
        assert time.monotonic() < deadline, f"no flow table entry for client port {sport}"
        time.sleep(0.05)


def test_datapath_decides_with_the_agent_stopped(topo: Topology, agent, tmp_path: Path) -> None:
    """Agent frozen (SIGSTOP) after setup: the tc program alone classifies, picks the uplink
    and marks — a bulk writer by its send hint at packet k, onto an elephant uplink."""
    run = agent("--metrics-port", "0")
    run.start()
    assert run.state()["mode"] == "datapath" and run.state()["hint"] == "attached", run.state()
    assert run.proc is not None
    run.proc.send_signal(signal.SIGSTOP)
    try:
        tx0 = topo.tx_bytes()
        f = upload(topo, tmp_path, "bulk", 3_000_000, 1 << 22)
        e = entry_for(run, f["sport"])
        assert (e.cls, e.decided_by, e.decided_at) == (Cls.Elephant, DecidedBy.TreeHint, 5), e
        assert e.hint_seen and e.hint_write >= 3_000_000, e
        assert e.mark in (MARKS["inet"], MARKS["lte"]), e
        tx = {k: v - tx0[k] for k, v in topo.tx_bytes().items()}
        up = "inet" if e.mark == MARKS["inet"] else "lte"
        assert tx[up] > 2_500_000 and tx["mpls"] < 200_000, tx
        # a small request in one write: mouse, on the mice uplink, also decided in the kernel
        m = upload(topo, tmp_path, "small", 6000, 6000, port=5002)
        em = entry_for(run, m["sport"])
        assert em.cls in (Cls.Mouse, Cls.Undecided) and em.decided_by != DecidedBy.User, em
        assert em.mark in (0, MARKS["mpls"]), em
    finally:
        run.proc.send_signal(signal.SIGCONT)
    # the kernel and the Python model take the same branches on the same features
    model = load().for_threshold(1_000_000)
    for k, ent in run.table().items():
        if ent.decided_by in (DecidedBy.Tree, DecidedBy.TreeHint):
            py = decide_at_k(model.tree, ent.features(), 1_000_000)
            assert (py is FlowClass.Elephant) == (ent.cls == Cls.Elephant), (k, ent)


def test_user_space_fallback_decides_the_same(topo: Topology, agent, tmp_path: Path) -> None:
    run = agent("--metrics-port", "0", "--user-decide")
    run.start()
    assert run.state()["mode"] == "user"
    f = upload(topo, tmp_path, "bulk", 3_000_000, 1 << 22)
    e = entry_for(run, f["sport"])
    assert (e.cls, e.decided_by) == (Cls.Elephant, DecidedBy.User), e
    assert e.mark in (MARKS["inet"], MARKS["lte"]), e


def test_history_learned_across_flows_decides_at_first_packet(topo: Topology, agent, tmp_path: Path) -> None:
    """Repeated 400 kB uploads in 16 kB writes to one port, with elephantThresholdBytes 100 kB
    (the site's threshold, not the model's 1 MB): nothing in their first packets or writes
    says "elephant", so the first ones are decided by the tree; once the agent has seen
    enough of them finish, the next one is decided by history at its first packet."""
    site = topo.edgesite_yaml(elephantThresholdBytes=100_000)
    run = agent("--metrics-port", "0", site=site)
    run.start()
    assert run.state()["thresholdBytes"] == 100_000
    deadline = time.monotonic() + 60
    by: list[tuple[int, int, int]] = []
    while time.monotonic() < deadline:
        f = upload(topo, tmp_path, f"rep{len(by)}", 400_000, 16384, port=5001)
        e = entry_for(run, f["sport"])
        by.append((e.decided_by, e.decided_at, e.cls))
        if e.decided_by == DecidedBy.History:
            break
        # the agent learns a flow's final size once it has seen the FIN in a scan
        t0 = time.monotonic()
        while not any(v["seen"] >= len(by) for k, v in run.state()["history"].items() if k.endswith(":5001")):
            assert time.monotonic() - t0 < 5, run.state()["history"]
            time.sleep(0.05)
    assert by[-1] == (DecidedBy.History, 1, Cls.Elephant), by
    assert all(b[0] != DecidedBy.History for b in by[:-1]) and len(by) >= 8, by
    hist = {k: v for k, v in run.state()["history"].items() if k.endswith(":5001")}
    assert list(hist.values())[0]["permille"] >= 900, hist


def test_bad_gateway_is_a_condition_not_a_crash(topo: Topology, agent, tmp_path: Path) -> None:
    import yaml

    doc = yaml.safe_load(topo.edgesite_yaml())
    doc["spec"]["uplinks"][1]["gateway"] = "gw.example.invalid"
    token = tmp_path / "token"
    token.write_text("s3cret-token\n")
    run = agent("--metrics-port", "19478", "--metrics-addr", "0.0.0.0", "--metrics-token-file", str(token),
                site=yaml.safe_dump(doc))
    run.start()
    st = run.state()
    assert "gateway" in st["configErrors"]["inet"] and st["up"]["inet"] is False, st
    assert run.proc is not None and run.proc.poll() is None
    f = upload(topo, tmp_path, "bulk", 2_000_000, 1 << 22)
    assert entry_for(run, f["sport"]).mark == MARKS["lte"]  # the remaining elephant uplink
    # the wildcard address would be every uplink: the agent listens on loopback instead
    log = (tmp_path / "agent.log").read_text()
    assert "would listen on the WAN uplinks" in log
    get = ("import sys,urllib.request,urllib.error\n"
           "h={'Authorization':'Bearer '+sys.argv[1]} if sys.argv[1] else {}\n"
           "try: print(urllib.request.urlopen(urllib.request.Request('http://127.0.0.1:19478/metrics',headers=h))"
           ".read().decode())\n"
           "except urllib.error.HTTPError as e: print('HTTP', e.code)")
    ok = subprocess.run(["ip", "netns", "exec", topo.edge, PY, "-c", get, "s3cret-token"], capture_output=True,
                        text=True)
    assert 'edgeweave_agent_uplink_config_error{uplink="inet"} 1.0' in ok.stdout, ok.stderr
    for bad in ("", "wrong"):
        r = subprocess.run(["ip", "netns", "exec", topo.edge, PY, "-c", get, bad], capture_output=True, text=True)
        assert r.stdout.strip() == "HTTP 401", r
    wan = subprocess.run(["ip", "netns", "exec", topo.edge, PY, "-c",
                          "import urllib.request;urllib.request.urlopen('http://10.231.11.1:19478/metrics', timeout=2)"],
                         capture_output=True, text=True)
    assert wan.returncode != 0
