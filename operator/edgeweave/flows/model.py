"""The exported elephant/mouse classifier: a small decision tree per decision point k.

Evaluation is a handful of comparisons (a few microseconds in Python), so the agent
classifies a flow the moment its k-th packet is announced.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import StrEnum
from importlib import resources
from pathlib import Path
from typing import Any

from .features import FlowRecord, feature_names, feature_vector

FORMAT = "edgeweave-flow-tree/1"


class FlowClass(StrEnum):
    Mouse = "mouse"
    Elephant = "elephant"


@dataclass(frozen=True)
class Tree:
    """nodes[i] = (feature, threshold, left, right) or (-1, p_elephant, 0, 0) for a leaf."""

    k: int
    features: tuple[str, ...]
    nodes: tuple[tuple[int, float, int, int], ...]

    def p_elephant(self, x: list[float]) -> float:
        i = 0
        while True:
            f, t, left, right = self.nodes[i]
            if f < 0:
                return t
            i = left if x[f] <= t else right

    def classify(self, rec: FlowRecord) -> FlowClass:
        p = self.p_elephant(feature_vector(rec, self.k))
        return FlowClass.Elephant if p >= 0.5 else FlowClass.Mouse

    def to_json(self) -> dict[str, Any]:
        return {"k": self.k, "features": list(self.features), "nodes": [list(n) for n in self.nodes]}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Tree:
        k = int(d["k"])
        feats = tuple(d["features"])
        if list(feats) != feature_names(k):
            raise ValueError(f"model features for k={k} do not match this agent's feature set")
        nodes = tuple((int(n[0]), float(n[1]), int(n[2]), int(n[3])) for n in d["nodes"])
        return cls(k=k, features=feats, nodes=nodes)

    def describe(self) -> str:
        """The tree as indented rules (for docs and `flows-train --show`)."""
        lines: list[str] = []

        def walk(i: int, depth: int) -> None:
            f, t, left, right = self.nodes[i]
            pad = "  " * depth
            if f < 0:
                lines.append(f"{pad}-> p(elephant)={t:.2f}")
                return
            lines.append(f"{pad}if {self.features[f]} <= {t:g}:")
            walk(left, depth + 1)
            lines.append(f"{pad}else:")
            walk(right, depth + 1)

        walk(0, 0)
        return "\n".join(lines)


@dataclass(frozen=True)
class Model:
    threshold_bytes: int
    trees: dict[int, Tree]
    metrics: dict[str, Any]

    def tree(self, k: int) -> Tree:
        if k not in self.trees:
            raise KeyError(f"no tree for decision_packets={k}; have {sorted(self.trees)}")
        return self.trees[k]

    def to_json(self) -> dict[str, Any]:
        return {"format": FORMAT, "thresholdBytes": self.threshold_bytes,
                "trees": {str(k): t.to_json() for k, t in sorted(self.trees.items())},
                "metrics": self.metrics}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Model:
        if d.get("format") != FORMAT:
            raise ValueError(f"not an {FORMAT} model")
        return cls(threshold_bytes=int(d["thresholdBytes"]),
                   trees={int(k): Tree.from_json(t) for k, t in d["trees"].items()},
                   metrics=dict(d.get("metrics", {})))


def load(path: str | Path | None = None) -> Model:
    """The model at `path`, or the one shipped in the package (flows/model.json)."""
    if path is None:
        text = resources.files("edgeweave.flows").joinpath("model.json").read_text()
    else:
        text = Path(path).read_text()
    return Model.from_json(json.loads(text))
