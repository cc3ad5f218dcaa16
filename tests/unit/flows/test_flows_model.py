import numpy as np

from edgeweave.agent.flowtable import Cls, DecidedBy, FlowEntry, FlowKey
from edgeweave.agent.main import elephant_slots, tree_entries
from edgeweave.flows.apps import trace
from edgeweave.flows.features import DATAPATH_FEATURES, packet_features
from edgeweave.flows.history import History
from edgeweave.flows.model import FlowClass, HistoryRule, decide_at_first_packet, decide_at_k, load
from edgeweave.flows.selector import UplinkState
from edgeweave.flows.synth import SizeCdf, first_packets
from edgeweave.flows.train import DEFAULT_CDF, evaluate, fit, score, split


def test_synthetic_flows_follow_tcp_not_the_label() -> None:
    rng = np.random.default_rng(0)
    small, big = first_packets(900, rng, 5), first_packets(30_000_000, rng, 5)
    assert small.flags[0] == 0x02 and small.flags[-1] & 0x01  # SYN ... FIN
    mid = first_packets(60_000, np.random.default_rng(1), 5)
    a, b = packet_features(big, 5), packet_features(mid, 5)
    assert a.max_size > 1300 and b.max_size > 1300 and len(a.vector()) == len(DATAPATH_FEATURES)


def test_cdf_sampling_matches_file() -> None:
    cdf = SizeCdf.load(DEFAULT_CDF)
    s = cdf.sample(np.random.default_rng(3), 50000)
    assert abs((s > 1_000_000).mean() - cdf.fraction_above(1_000_000)) < 0.01


def test_history_learns_with_decay_and_bounds() -> None:
    h = History(1_000_000, half_life_flows=4, max_keys=3)
    k = h.key("10.0.0.2", "172.16.5.9", 873, 6)
    assert h.estimate(k) == (500, 0)
    for _ in range(10):
        h.observe(k, 5_000_000, now=0.0)
    assert h.estimate(k)[0] == 1000
    for _ in range(8):  # the app changed: two half-lives later it reads mostly mouse
        h.observe(k, 1000, now=1.0)
    assert h.estimate(k)[0] < 250
    for i in range(5):
        h.observe(h.key(f"10.0.0.{10 + i}", "1.1.1.1", 1, 6), 1, now=2.0)
    assert len(h) == 3  # bounded, least recently updated first out
    assert h.expire(now=1e9) and len(h) == 0


def test_non_circular_split_and_held_out_scores() -> None:
    rule = HistoryRule()
    flows = trace(6, 900, 5, 1_000_000, DEFAULT_CDF, seed=3)
    sp = split(flows, 6, 900)
    assert {f.site for f in sp.train}.isdisjoint({f.site for f in sp.test})
    assert max(f.t for f in sp.train) < min(f.t for f in sp.test)
    tree = fit(sp.train, 1_000_000, rule)
    r = evaluate(sp.test, tree, rule, 1_000_000)
    # every signal together; packet features alone cannot tell a 2 MB from a 200 kB flow
    only_pkts = fit(sp.train, 1_000_000, rule, packet_only=True)
    r_pkt = evaluate(sp.test, only_pkts, HistoryRule(min_n=10**9), 1_000_000)
    assert r["precision"] > r_pkt["precision"] + 0.2, (r, r_pkt)
    assert r["byteRecall"] > 0.9


def test_decision_rules_and_shipped_model() -> None:
    model = load().for_threshold(900_000)
    assert model.threshold_bytes == 1_000_000
    assert decide_at_first_packet(950, 20, HistoryRule()) is FlowClass.Elephant
    assert decide_at_first_packet(950, 2, HistoryRule()) is None
    assert decide_at_first_packet(5, 20, HistoryRule()) is FlowClass.Mouse
    e = FlowEntry(0, 0, 6000, 5, f_bytes=4600, f_max_size=1500, f_data_pkts=3, f_min_data=1500,
                  hint_write=4 << 20, hint_seen=1)
    assert decide_at_k(model.tree, e.features(), 1_000_000) is FlowClass.Elephant
    assert FlowEntry.unpack(e.pack()) == e
    d = e.decided(Cls.Elephant, 0xE01, DecidedBy.User)
    assert (d.cls, d.mark, d.decided_by, d.decided_at) == (2, 0xE01, 4, 5)
    key = FlowKey("10.0.0.2", "10.0.0.9", 40000, 443, 6)
    assert FlowKey.unpack(key.pack()) == key
    rows = tree_entries(model)
    assert len(rows) == len(model.tree.nodes)


def test_elephant_slots_weighted_and_off_the_mice_uplink() -> None:
    st = [UplinkState("mpls", 10e6, 2, True), UplinkState("inet", 40e6, 10, True), UplinkState("lte", 30e6, 30, True)]
    slots = elephant_slots(st, "mpls", n=14)
    assert "mpls" not in slots and slots[:2] == ["inet", "lte"]
    assert slots.count("inet") == 8 and slots.count("lte") == 6
    assert elephant_slots([UplinkState("mpls", 10e6, 2, True)], "mpls", n=2) == ["mpls", "mpls"]


def test_score() -> None:
    s = score(np.array([True, True, False, False]), np.array([True, False, True, False]))
    assert (s.precision, s.recall, s.accuracy) == (0.5, 0.5, 0.5)


def test_medium_class_keeps_mid_sized_flows_off_the_mice_uplink() -> None:
    from edgeweave.flows.model import small_class_at_first_packet, small_class_at_k

    rule = HistoryRule()
    assert small_class_at_first_packet(900, rule, 10_000) is FlowClass.Medium
    assert small_class_at_first_packet(5, rule, 10_000) is FlowClass.Mouse
    assert small_class_at_first_packet(300, rule, 10_000) is None  # mixed: wait for packet k
    assert small_class_at_first_packet(900, rule, 0) is FlowClass.Mouse  # two classes only
    three_full = FlowEntry(0, 0, 0, 5, f_data_pkts=3, f_min_data=1500).features()
    assert small_class_at_k(three_full, 5, 10_000) is FlowClass.Medium
    ended = FlowEntry(0, 0, 0, 5, f_data_pkts=3, f_min_data=1500, flags_or=0x11).features()
    assert small_class_at_k(ended, 5, 10_000) is FlowClass.Mouse
    hinted = FlowEntry(0, 0, 0, 5, f_data_pkts=3, f_min_data=1500, hint_write=6000, hint_seen=1).features()
    assert small_class_at_k(hinted, 5, 10_000) is FlowClass.Mouse  # the write size says it is small
    h = History(1_000_000, mice_bytes=10_000)
    k = h.key("10.0.0.2", "172.16.0.9", 8080, 6)
    for _ in range(5):
        h.observe(k, 50_000, now=0.0)
    assert h.estimate(k)[0] == 0 and h.medium_permille(k) == 1000
