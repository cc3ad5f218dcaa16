"""Load, pin and attach the tc program; open its maps.

bpftool creates the maps (so their sizes are runtime options) and loads the program
against those pinned maps; tc attaches the pinned program to clsact ingress. Everything
stays pinned under one bpffs directory, so a restarted agent reopens the same flow
table and the datapath keeps marking packets while no agent runs.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from . import bpfsys
from .build import build
from .flowtable import CFG, KEY, VAL

BPFFS = "/sys/fs/bpf"
FILTER_PREF = 49  # our tc filter slot on the interface; `replace` swaps it atomically


def _run(*cmd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(cmd), check=True, capture_output=True, text=True)


def ensure_bpffs() -> None:
    with open("/proc/mounts") as f:
        if any(line.split()[1] == BPFFS and line.split()[2] == "bpf" for line in f):
            return
    os.makedirs(BPFFS, exist_ok=True)
    _run("mount", "-t", "bpf", "bpf", BPFFS)


@dataclass(frozen=True)
class MapSpec:
    name: str
    type: str
    key: int
    value: int
    entries: int


def map_specs(max_flows: int) -> list[MapSpec]:
    return [MapSpec("ewf_flows", "lru_hash", KEY.size, VAL.size, max_flows),
            MapSpec("ewf_ready", "queue", 0, KEY.size, 4096),
            MapSpec("ewf_cfg", "array", 4, CFG.size, 1)]


class Datapath:
    def __init__(self, pin_dir: str, interface: str, max_flows: int = 65536) -> None:
        self.pin_dir = pin_dir
        self.interface = interface
        self.max_flows = max_flows
        self.flows: bpfsys.Map | None = None
        self.ready: bpfsys.Map | None = None
        self.cfg: bpfsys.Map | None = None
        self.reused = False

    @property
    def prog_pin(self) -> str:
        return f"{self.pin_dir}/prog"

    def _map_pin(self, name: str) -> str:
        return f"{self.pin_dir}/{name}"

    def _attached(self) -> bool:
        try:
            out = _run("tc", "-j", "filter", "show", "dev", self.interface, "ingress").stdout
        except subprocess.CalledProcessError:
            return False
        try:
            filters = json.loads(out or "[]")
        except json.JSONDecodeError:
            return False
        return any(f.get("pref") == FILTER_PREF and f.get("kind") == "bpf" for f in filters)

    def setup(self, decision_packets: int, reload: bool = False) -> None:
        """Idempotent: reuse what is pinned (restart), create what is missing."""
        ensure_bpffs()
        os.makedirs(self.pin_dir, exist_ok=True)
        specs = map_specs(self.max_flows)
        existing = all(os.path.exists(self._map_pin(s.name)) for s in specs)
        self.reused = existing and os.path.exists(self.prog_pin)
        if not existing:
            for s in specs:
                if os.path.exists(self._map_pin(s.name)):
                    os.unlink(self._map_pin(s.name))
                _run("bpftool", "map", "create", self._map_pin(s.name), "type", s.type, "key", str(s.key),
                     "value", str(s.value), "entries", str(s.entries), "name", s.name)
        if reload or not os.path.exists(self.prog_pin):
            obj = build()
            tmp = f"{self.prog_pin}_new"
            if os.path.exists(tmp):
                os.unlink(tmp)
            args = ["bpftool", "prog", "load", str(obj), tmp, "type", "classifier"]
            for s in specs:
                args += ["map", "name", s.name, "pinned", self._map_pin(s.name)]
            _run(*args)
            # pin under the final name only once the load succeeded
            if os.path.exists(self.prog_pin):
                os.unlink(self.prog_pin)
            _run("bpftool", "prog", "pin", "pinned", tmp, self.prog_pin)
            os.unlink(tmp)
            self.reused = False
        self.open()
        self.set_decision_packets(decision_packets)
        if reload or not self._attached():
            subprocess.run(["tc", "qdisc", "add", "dev", self.interface, "clsact"], capture_output=True)
            _run("tc", "filter", "replace", "dev", self.interface, "ingress", "pref", str(FILTER_PREF),
                 "handle", "1", "bpf", "direct-action", "pinned", self.prog_pin)

    def open(self) -> None:
        self.flows = bpfsys.Map(self._map_pin("ewf_flows"), KEY.size, VAL.size)
        self.ready = bpfsys.Map(self._map_pin("ewf_ready"), 0, KEY.size)
        self.cfg = bpfsys.Map(self._map_pin("ewf_cfg"), 4, CFG.size)

    def set_decision_packets(self, k: int) -> None:
        assert self.cfg is not None
        self.cfg.update((0).to_bytes(4, "little"), CFG.pack(k, 0))

    def close(self) -> None:
        for m in (self.flows, self.ready, self.cfg):
            if m is not None:
                m.close()

    def teardown(self) -> None:
        """Detach and unpin everything (agent --cleanup); assignments are lost."""
        self.close()
        subprocess.run(["tc", "filter", "del", "dev", self.interface, "ingress", "pref", str(FILTER_PREF)],
                       capture_output=True)
        if Path(self.pin_dir).is_dir():
            shutil.rmtree(self.pin_dir, ignore_errors=True)
