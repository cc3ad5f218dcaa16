"""`edgeweave flows-train`: train the decision tree on application-structured traffic and export it.

CART on numpy (no scikit-learn in the agent image). The training flows come from
flows/apps.py: several applications per site, each with its own size distribution, port,
pods and write pattern; history learned online per site. The split is by site AND time:
the tree is fitted on the early part of the training sites and scored on the later part
of sites it never saw, so a rule that only memorised one site's mix does not pass.
The leaf cut is chosen on the training flows: the highest precision that keeps
byte-weighted recall at or above `min_byte_recall` (a missed elephant sits on the mice
uplink and costs every mouse there; a false one only costs itself a slower path).
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .apps import Flow, trace
from .features import DATAPATH_FEATURES, PACKET_FEATURES
from .model import FlowClass, HistoryRule, Model, ModelSet, Tree, decide_at_first_packet, decide_at_k


def _default_cdf() -> str:
    """The published web-search flow-size CDF: $EDGEWEAVE_FLOW_CDF, else shared/ beside the checkout."""
    env = os.environ.get("EDGEWEAVE_FLOW_CDF")
    if env:
        return env
    beside = Path(__file__).resolve().parents[3].parent / "shared" / "data" / "flows" / "websearch.cdf"
    return str(beside if beside.exists() else Path("/work/shared/data/flows/websearch.cdf"))


DEFAULT_CDF = _default_cdf()
DEFAULT_OUT = Path(__file__).resolve().parent / "model.json"
THRESHOLDS = (100_000, 1_000_000, 10_000_000)


def _gini_best_split(x: np.ndarray, y: np.ndarray, w: np.ndarray, min_leaf: float
                     ) -> tuple[float, float] | None:
    """Best threshold on one feature by weighted Gini; (gain-ish score, threshold)."""
    order = np.argsort(x, kind="stable")
    xs, ys, ws = x[order], y[order], w[order]
    wp = np.cumsum(ws * ys)            # weighted positives left of each cut
    wt = np.cumsum(ws)
    tot_p, tot = wp[-1], wt[-1]
    valid = np.nonzero(xs[1:] != xs[:-1])[0]  # cut between i and i+1
    if valid.size == 0:
        return None
    lp, lt = wp[valid], wt[valid]
    rp, rt = tot_p - lp, tot - lt
    ok = (lt >= min_leaf) & (rt >= min_leaf)
    if not ok.any():
        return None
    valid, lp, lt, rp, rt = valid[ok], lp[ok], lt[ok], rp[ok], rt[ok]
    gl = lt * (1 - (lp / lt) ** 2 - (1 - lp / lt) ** 2)
    gr = rt * (1 - (rp / rt) ** 2 - (1 - rp / rt) ** 2)
    impurity = gl + gr
    j = int(np.argmin(impurity))
    thr = float((xs[valid[j]] + xs[valid[j] + 1]) / 2)
    return float(impurity[j]), thr


def fit_tree(X: np.ndarray, y: np.ndarray, w: np.ndarray, max_depth: int = 5,
             min_leaf_frac: float = 0.005, features: Sequence[int] | None = None) -> Tree:
    """CART by weighted Gini; only the columns in `features` may be split on."""
    cols = list(features) if features is not None else list(range(X.shape[1]))
    nodes: list[list[float]] = []
    min_leaf = float(w.sum() * min_leaf_frac)

    def leaf(idx: np.ndarray) -> int:
        p = float((w[idx] * y[idx]).sum() / max(w[idx].sum(), 1e-12))
        nodes.append([-1, round(p, 4), 0, 0])
        return len(nodes) - 1

    def grow(idx: np.ndarray, depth: int) -> int:
        yi, wi = y[idx], w[idx]
        p = (wi * yi).sum() / wi.sum()
        if depth >= max_depth or p in (0.0, 1.0) or idx.size < 2:
            return leaf(idx)
        parent = wi.sum() * (1 - p ** 2 - (1 - p) ** 2)
        best: tuple[float, int, float] | None = None
        for f in cols:
            r = _gini_best_split(X[idx, f], yi, wi, min_leaf)
            if r is not None and (best is None or r[0] < best[0]):
                best = (r[0], f, r[1])
        if best is None or parent - best[0] <= 1e-9 * wi.sum():
            return leaf(idx)
        _, f, thr = best
        me = len(nodes)
        nodes.append([f, round(thr, 3), 0, 0])
        mask = X[idx, f] <= thr
        left = grow(idx[mask], depth + 1)
        right = grow(idx[~mask], depth + 1)
        nodes[me][2], nodes[me][3] = left, right
        return me

    grow(np.arange(len(y)), 0)
    return Tree(features=DATAPATH_FEATURES, nodes=_prune(nodes))


def _prune(nodes: list[list[float]]) -> tuple[tuple[int, float, int, int], ...]:
    """Collapse splits whose two sides decide the same class: same decisions, fewer nodes,
    and no thresholds on features that only fitted noise."""

    def walk(i: int) -> list:  # nested form: ["leaf", p] or ["split", f, t, left, right]
        f, t, left, right = nodes[i]
        if f < 0:
            return ["leaf", t]
        a, b = walk(int(left)), walk(int(right))
        if a[0] == b[0] == "leaf" and (a[1] >= 0.5) == (b[1] >= 0.5):
            return ["leaf", round((a[1] + b[1]) / 2, 4)]
        return ["split", int(f), t, a, b]

    out: list[tuple[int, float, int, int]] = []

    def emit(n: list) -> int:
        me = len(out)
        if n[0] == "leaf":
            out.append((-1, float(n[1]), 0, 0))
            return me
        out.append((n[1], float(n[2]), 0, 0))
        left = emit(n[3])
        right = emit(n[4])
        out[me] = (n[1], float(n[2]), left, right)
        return me

    emit(walk(0))
    return tuple(out)


@dataclass(frozen=True)
class Scores:
    accuracy: float
    precision: float
    recall: float
    f1: float
    elephants: int
    flows: int

    def as_dict(self) -> dict[str, Any]:
        return {"accuracy": round(self.accuracy, 4), "precision": round(self.precision, 4),
                "recall": round(self.recall, 4), "f1": round(self.f1, 4),
                "elephants": self.elephants, "flows": self.flows}


def score(pred: np.ndarray, truth: np.ndarray) -> Scores:
    tp = int((pred & truth).sum())
    fp = int((pred & ~truth).sum())
    fn = int((~pred & truth).sum())
    acc = float((pred == truth).mean())
    prec = tp / (tp + fp) if tp + fp else 0.0
    rec = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * prec * rec / (prec + rec) if prec + rec else 0.0
    return Scores(acc, prec, rec, f1, int(truth.sum()), int(truth.size))


def classify(flow: Flow, tree: Tree, rule: HistoryRule, threshold: int) -> tuple[bool, str]:
    """(elephant?, what decided) for one flow, exactly as the datapath decides it."""
    f = flow.feats
    first = decide_at_first_packet(f.hist_p, f.hist_n, rule)
    if first is not None:
        return first is FlowClass.Elephant, "history"
    if not flow.pkts_ok:  # ended before packet k: never marked, stays on the default (mice) route
        return False, "short"
    return decide_at_k(tree, f, threshold) is FlowClass.Elephant, "hint" if f.hint_seen else "tree"


def evaluate(flows: Sequence[Flow], tree: Tree, rule: HistoryRule, threshold: int) -> dict[str, Any]:
    sizes = np.array([f.size for f in flows], dtype=float)
    truth = sizes > threshold
    res = [classify(f, tree, rule, threshold) for f in flows]
    pred = np.array([r[0] for r in res])
    by = np.array([r[1] for r in res])
    s = score(pred, truth)
    ele_bytes = sizes[truth].sum()
    byte_recall = float(sizes[pred & truth].sum() / ele_bytes) if ele_bytes else 0.0
    hinted = np.array([bool(f.feats.hint_seen) for f in flows])
    per_app: dict[str, Any] = {}
    for app in sorted({f.app for f in flows}):
        m = np.array([f.app == app for f in flows])
        a = score(pred[m], truth[m])
        per_app[app] = {"flows": int(m.sum()), "elephants": a.elephants, "precision": round(a.precision, 3),
                        "recall": round(a.recall, 3)}
    return {**s.as_dict(), "byteRecall": round(byte_recall, 4),
            "hintCoverage": round(float(hinted.mean()), 4),
            "hintByteCoverage": round(float(sizes[hinted].sum() / sizes.sum()), 4),
            "decidedBy": {k: int((by == k).sum()) for k in ("history", "hint", "tree", "short")},
            "perApp": per_app}


def _choose_cut(flows: Sequence[Flow], tree: Tree, rule: HistoryRule, threshold: int,
                min_byte_recall: float) -> float:
    leaves = sorted({n[1] for n in tree.nodes if n[0] < 0})
    best = (-1.0, leaves[0] if leaves else 0.5)
    for cut in leaves:
        t = Tree(tree.features, tree.nodes, cut)
        r = evaluate(flows, t, rule, threshold)
        if r["byteRecall"] >= min_byte_recall and r["precision"] > best[0]:
            best = (r["precision"], cut)
    return best[1]


@dataclass(frozen=True)
class Split:
    train: list[Flow]
    test: list[Flow]


def split(flows: Sequence[Flow], sites: int, seconds: float, train_frac_sites: float = 0.5,
          split_time_frac: float = 0.5) -> Split:
    """Train: the first half of the sites, early time. Test: the other sites, later time."""
    n_train = max(1, int(sites * train_frac_sites))
    t_split = seconds * split_time_frac
    return Split(train=[f for f in flows if f.site < n_train and f.t < t_split],
                 test=[f for f in flows if f.site >= n_train and f.t >= t_split])


def fit(flows: Sequence[Flow], threshold: int, rule: HistoryRule, max_depth: int = 5,
        min_byte_recall: float = 0.95, packet_only: bool = False) -> Tree:
    X = np.array([f.feats.vector() for f in flows], dtype=float)
    y = np.array([f.size > threshold for f in flows], dtype=float)
    pos = max(y.mean(), 1e-9)
    w = np.where(y > 0, (1 - pos) / pos, 1.0)  # balanced classes
    cols = [DATAPATH_FEATURES.index(n) for n in (PACKET_FEATURES if packet_only else DATAPATH_FEATURES)]
    tree = fit_tree(X, y, w, max_depth=max_depth, features=cols)
    cut = _choose_cut(flows, tree, rule, threshold, min_byte_recall)
    return Tree(tree.features, tree.nodes, cut)


def train(cdf_path: str | Path = DEFAULT_CDF, thresholds: Sequence[int] = THRESHOLDS, k: int = 5,
          sites: int = 12, seconds: float = 3600.0, seed: int = 7, max_depth: int = 5) -> ModelSet:
    rule = HistoryRule()
    models = []
    for thr in thresholds:
        flows = trace(sites, seconds, k, thr, cdf_path, seed)
        sp = split(flows, sites, seconds)
        tree = fit(sp.train, thr, rule, max_depth=max_depth)
        metrics = {"trainFlows": len(sp.train), "testFlows": len(sp.test), "seed": seed, "sites": sites,
                   "train": {k: v for k, v in evaluate(sp.train, tree, rule, thr).items() if k != "perApp"},
                   "heldOut": evaluate(sp.test, tree, rule, thr)}
        models.append(Model(threshold_bytes=thr, decision_packets=k, tree=tree, metrics=metrics))
    return ModelSet(tuple(models))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="edgeweave flows-train", description=__doc__)
    ap.add_argument("--cdf", default=DEFAULT_CDF, help="flow-size CDF of the search app (bytes, cumulative percent)")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--sites", type=int, default=12)
    ap.add_argument("--seconds", type=float, default=3600.0)
    ap.add_argument("--max-depth", type=int, default=5)
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--show", type=int, default=0, help="print the tree for this threshold")
    ns = ap.parse_args(argv)
    ms = train(ns.cdf, seed=ns.seed, sites=ns.sites, seconds=ns.seconds, max_depth=ns.max_depth)
    ns.out.write_text(json.dumps(ms.to_json(), indent=1) + "\n")
    for m in ms.models:
        held = {k: v for k, v in m.metrics["heldOut"].items() if k != "perApp"}
        print(f"threshold={m.threshold_bytes}: held out {json.dumps(held)}")
        print(f"  train {json.dumps(m.metrics['train'])}")
        print(f"  per app {json.dumps(m.metrics['heldOut']['perApp'])}")
        if ns.show == m.threshold_bytes:
            print(m.tree.describe())
    print(f"wrote {ns.out}")
    return 0
