import numpy as np

from edgeweave.agent.flowtable import FlowEntry, FlowKey
from edgeweave.flows.features import feature_names, feature_vector
from edgeweave.flows.model import FlowClass, load
from edgeweave.flows.synth import SizeCdf, first_packets
from edgeweave.flows.train import DEFAULT_CDF, score, train


def test_synthetic_flows_follow_tcp_not_the_label() -> None:
    rng = np.random.default_rng(0)
    small, big = first_packets(900, rng, 5), first_packets(30_000_000, rng, 5)
    assert small.flags[0] == 0x02 and small.flags[-1] & 0x01  # SYN ... FIN
    # a 30 MB and a 60 kB flow look alike in their first five packets: full segments
    mid = first_packets(60_000, np.random.default_rng(1), 5)
    assert max(big.sizes) > 1300 and max(mid.sizes) > 1300
    assert len(feature_vector(big, 5)) == len(feature_names(5))


def test_cdf_sampling_matches_file() -> None:
    cdf = SizeCdf.load(DEFAULT_CDF)
    s = cdf.sample(np.random.default_rng(3), 50000)
    assert abs((s > 1_000_000).mean() - cdf.fraction_above(1_000_000)) < 0.01


def test_training_is_held_out_and_honest() -> None:
    m = train(DEFAULT_CDF, n_train=3000, n_test=3000, ks=[5])
    r = m.metrics["byK"]["5"]
    # recall is high (bulk senders are visible), precision is bounded by the elephant share
    # among flows that send >= 3 full segments: the first packets cannot say more
    assert r["recall"] > 0.85
    assert r["precision"] < 0.5


def test_shipped_model_classifies_entries() -> None:
    model = load()
    tree = model.tree(5)
    key = FlowKey("10.0.0.2", "10.0.0.9", 40000, 443, 6)
    bulk = FlowEntry(0, 0, 6000, 5, 0, (60, 52, 1500, 1500, 1500, 0, 0, 0), (0, 20000, 300, 12, 12, 0, 0, 0),
                     (2, 16, 16, 16, 16, 0, 0, 0), 18)
    rr = FlowEntry(0, 0, 600, 5, 0, (60, 52, 252, 52, 52, 0, 0, 0), (0, 20000, 300, 20000, 100, 0, 0, 0),
                   (2, 16, 24, 16, 17, 0, 0, 0), 27)
    assert FlowEntry.unpack(bulk.pack()) == bulk and FlowKey.unpack(key.pack()) == key
    assert tree.classify(bulk.record(key)) is FlowClass.Elephant
    assert tree.classify(rr.record(key)) is FlowClass.Mouse


def test_score() -> None:
    s = score(np.array([True, True, False, False]), np.array([True, False, True, False]))
    assert (s.precision, s.recall, s.accuracy) == (0.5, 0.5, 0.5)
