"""The exported classifier: one decision tree over the datapath feature vector, plus the
history and hint rules the datapath applies around it.

The same decision runs in three places and must agree: the tc program (bpf/flows.bpf.c,
tree written into ewf_tree by the agent), the agent's user-space fallback, and the
offline evaluation. `decide_at_first_packet` and `decide_at_k` are that decision.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from enum import StrEnum
from importlib import resources
from pathlib import Path
from typing import Any

from .features import DATAPATH_FEATURES, DatapathFeatures

FORMAT = "edgeweave-flow-tree/2"


class FlowClass(StrEnum):
    Mouse = "mouse"
    Elephant = "elephant"
    Medium = "medium"   # not an elephant, but above miceBytes: kept off the mice uplink


FULL_SEG = 1300  # IP length at or above which a segment is full-sized (bpf FULL_SEG)


@dataclass(frozen=True)
class HistoryRule:
    """History alone decides at packet 1 once `min_n` finished flows back it."""

    min_n: int = 8
    hi_permille: int = 900
    lo_permille: int = 20
    medium_hi_permille: int = 500


@dataclass(frozen=True)
class Tree:
    """nodes[i] = (feature, threshold, left, right) or (-1, p_elephant, 0, 0) for a leaf;
    a leaf says elephant when p_elephant >= cut."""

    features: tuple[str, ...]
    nodes: tuple[tuple[int, float, int, int], ...]
    cut: float = 0.5

    def p_elephant(self, x: list[int]) -> float:
        i = 0
        while True:
            f, t, left, right = self.nodes[i]
            if f < 0:
                return t
            # x is integer, so x <= t is x <= floor(t): the kernel's u32 comparison
            i = left if x[f] <= math.floor(t) else right

    def is_elephant(self, feats: DatapathFeatures) -> bool:
        return self.p_elephant(feats.vector()) >= self.cut

    @property
    def depth(self) -> int:
        def d(i: int) -> int:
            f, _, left, right = self.nodes[i]
            return 0 if f < 0 else 1 + max(d(left), d(right))
        return d(0)

    def to_json(self) -> dict[str, Any]:
        return {"features": list(self.features), "cut": self.cut, "nodes": [list(n) for n in self.nodes]}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Tree:
        feats = tuple(d["features"])
        if feats != DATAPATH_FEATURES:
            raise ValueError("model features do not match this agent's datapath feature set")
        nodes = tuple((int(n[0]), float(n[1]), int(n[2]), int(n[3])) for n in d["nodes"])
        return cls(features=feats, nodes=nodes, cut=float(d.get("cut", 0.5)))

    def describe(self) -> str:
        """The tree as indented rules (for docs and `flows-train --show`)."""
        lines: list[str] = []

        def walk(i: int, depth: int) -> None:
            f, t, left, right = self.nodes[i]
            pad = "  " * depth
            if f < 0:
                cls = "elephant" if t >= self.cut else "mouse"
                lines.append(f"{pad}-> {cls} (p={t:.2f})")
                return
            lines.append(f"{pad}if {self.features[f]} <= {math.floor(t)}:")
            walk(left, depth + 1)
            lines.append(f"{pad}else:")
            walk(right, depth + 1)

        walk(0, 0)
        return "\n".join(lines)


def decide_at_first_packet(hist_p: int, hist_n: int, rule: HistoryRule) -> FlowClass | None:
    if hist_n >= rule.min_n and hist_p >= rule.hi_permille:
        return FlowClass.Elephant
    if hist_n >= rule.min_n and hist_p <= rule.lo_permille:
        return FlowClass.Mouse
    return None


def small_class_at_first_packet(p_medium: int, rule: HistoryRule, mice_bytes: int) -> FlowClass | None:
    """After history said "not an elephant": medium, mouse, or wait for packet k."""
    if not mice_bytes:
        return FlowClass.Mouse
    if p_medium >= rule.medium_hi_permille:
        return FlowClass.Medium
    return FlowClass.Mouse if p_medium <= rule.lo_permille else None


def small_class_at_k(feats: DatapathFeatures, k: int, mice_bytes: int) -> FlowClass:
    """Not an elephant at packet k: medium when the hint says the write is above
    `mice_bytes`, or (no hint) k-2 full segments and no FIN (more than (k-2) MSS)."""
    if not mice_bytes:
        return FlowClass.Mouse
    if feats.hint_seen:
        return FlowClass.Medium if max(feats.hint_write, feats.hint_backlog) > mice_bytes else FlowClass.Mouse
    if not feats.end and feats.data_pkts + 2 >= k and feats.min_data >= FULL_SEG:
        return FlowClass.Medium
    return FlowClass.Mouse


def decide_at_k(tree: Tree, feats: DatapathFeatures, threshold_bytes: int) -> FlowClass:
    # An application that handed TCP more than the threshold in one write (or queued that
    # much) is an elephant whatever the tree learned from flows without such a hint.
    if feats.hint_seen and max(feats.hint_write, feats.hint_backlog) > threshold_bytes:
        return FlowClass.Elephant
    return FlowClass.Elephant if tree.is_elephant(feats) else FlowClass.Mouse


@dataclass(frozen=True)
class Model:
    threshold_bytes: int
    decision_packets: int
    tree: Tree
    metrics: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {"thresholdBytes": self.threshold_bytes, "decisionPackets": self.decision_packets,
                "tree": self.tree.to_json(), "metrics": self.metrics}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Model:
        return cls(threshold_bytes=int(d["thresholdBytes"]), decision_packets=int(d["decisionPackets"]),
                   tree=Tree.from_json(d["tree"]), metrics=dict(d.get("metrics", {})))


@dataclass(frozen=True)
class ModelSet:
    """Trees trained for several elephant thresholds; the agent takes the one nearest
    (in log scale) to its EdgeSite's elephantThresholdBytes and applies the exact
    threshold itself in the hint rule and in the history labels."""

    models: tuple[Model, ...]

    def for_threshold(self, threshold_bytes: int) -> Model:
        return min(self.models, key=lambda m: abs(math.log(m.threshold_bytes / threshold_bytes)))

    def to_json(self) -> dict[str, Any]:
        return {"format": FORMAT, "models": [m.to_json() for m in self.models]}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> ModelSet:
        if d.get("format") != FORMAT:
            raise ValueError(f"not an {FORMAT} model")
        return cls(models=tuple(Model.from_json(m) for m in d["models"]))


def load(path: str | Path | None = None) -> ModelSet:
    """The models at `path`, or the ones shipped in the package (flows/model.json)."""
    if path is None:
        text = resources.files("edgeweave.flows").joinpath("model.json").read_text()
    else:
        text = Path(path).read_text()
    return ModelSet.from_json(json.loads(text))
