"""`edgeweave flows-train`: train the elephant/mouse trees on synthetic flows and export them.

CART on numpy (no scikit-learn in the agent image), class-weighted so that the rare
class is not ignored: a missed elephant sits on the mice uplink and costs every mouse
there, which is the failure this whole feature exists to prevent.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .features import K_MAX, FlowRecord, feature_names, feature_vector
from .model import FlowClass, Model, Tree
from .synth import SizeCdf, dataset


def _default_cdf() -> str:
    """The published web-search flow-size CDF: $EDGEWEAVE_FLOW_CDF, else shared/ beside the checkout."""
    env = os.environ.get("EDGEWEAVE_FLOW_CDF")
    if env:
        return env
    beside = Path(__file__).resolve().parents[3].parent / "shared" / "data" / "flows" / "websearch.cdf"
    return str(beside if beside.exists() else Path("/work/shared/data/flows/websearch.cdf"))


DEFAULT_CDF = _default_cdf()
DEFAULT_OUT = Path(__file__).resolve().parent / "model.json"


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


def fit_tree(X: np.ndarray, y: np.ndarray, w: np.ndarray, k: int, max_depth: int = 4,
             min_leaf_frac: float = 0.005) -> Tree:
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
        for f in range(X.shape[1]):
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
    return Tree(k=k, features=tuple(feature_names(k)), nodes=_prune(nodes))


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


def predict(tree: Tree, recs: list[FlowRecord]) -> np.ndarray:
    # A flow that ends before its k-th packet is never classified by the agent: it keeps
    # the default (mice) route, so it counts as a "mouse" prediction here too.
    return np.array([r.pkts >= tree.k and tree.classify(r) is FlowClass.Elephant for r in recs])


def train(cdf_path: str | Path, threshold_bytes: int = 1_000_000, n_train: int = 20000,
          n_test: int = 20000, seed: int = 7, ks: list[int] | None = None, max_depth: int = 4,
          elephant_weight: float | None = None) -> Model:
    cdf = SizeCdf.load(cdf_path)
    ks = ks or list(range(2, K_MAX + 1))
    train_recs, train_sizes = dataset(cdf, n_train, seed)
    test_recs, test_sizes = dataset(cdf, n_test, seed + 1000)  # held apart: another seed, never fitted
    y = train_sizes > threshold_bytes
    truth = test_sizes > threshold_bytes
    pos = max(y.mean(), 1e-9)
    wpos = elephant_weight if elephant_weight is not None else (1 - pos) / pos  # balanced
    w = np.where(y, wpos, 1.0)
    trees: dict[int, Tree] = {}
    metrics: dict[str, Any] = {"thresholdBytes": threshold_bytes, "trainFlows": n_train,
                               "testFlows": n_test, "seed": seed,
                               "elephantFraction": round(float(truth.mean()), 4),
                               "elephantWeight": round(float(wpos), 3), "byK": {}}
    for k in ks:
        X = np.array([feature_vector(r, k) for r in train_recs])
        tree = fit_tree(X, y.astype(float), w, k, max_depth=max_depth)
        trees[k] = tree
        s = score(predict(tree, test_recs), truth)
        # decision latency: flow time until the k-th packet, and the model's own compute time
        delays = [sum(r.gaps_us[:k]) / 1000 for r in test_recs if r.pkts >= k]
        t0 = time.perf_counter()
        for r in test_recs[:5000]:
            tree.classify(r)
        eval_us = (time.perf_counter() - t0) / min(5000, len(test_recs)) * 1e6
        metrics["byK"][str(k)] = {**s.as_dict(),
                                  "decisionDelayMsMedian": round(float(np.median(delays)), 2),
                                  "classifyMicros": round(eval_us, 2),
                                  "nodes": len(tree.nodes)}
    return Model(threshold_bytes=threshold_bytes, trees=trees, metrics=metrics)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="edgeweave flows-train", description=__doc__)
    ap.add_argument("--cdf", default=DEFAULT_CDF, help="flow-size CDF (bytes, cumulative percent)")
    ap.add_argument("--threshold-bytes", type=int, default=1_000_000, help="elephant if larger")
    ap.add_argument("--train", type=int, default=20000)
    ap.add_argument("--test", type=int, default=20000)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--max-depth", type=int, default=4)
    ap.add_argument("--elephant-weight", type=float, default=None,
                    help="class weight of elephants (default: balanced)")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--show", type=int, default=0, help="print the tree for this k")
    ns = ap.parse_args(argv)
    model = train(ns.cdf, ns.threshold_bytes, ns.train, ns.test, ns.seed, max_depth=ns.max_depth,
                  elephant_weight=ns.elephant_weight)
    ns.out.write_text(json.dumps(model.to_json(), indent=1) + "\n")
    for k, m in model.metrics["byK"].items():
        print(f"k={k}: {json.dumps(m)}")
    if ns.show:
        print(model.tree(ns.show).describe())
    print(f"wrote {ns.out}")
    return 0
