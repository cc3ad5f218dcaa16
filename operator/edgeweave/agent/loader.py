"""Load, pin and attach the tc program; open its maps.

bpftool creates the maps (so their sizes are runtime options) and loads the programs
against those pinned maps; tc attaches the pinned classifier to clsact ingress, and the
send-hint program is attached to the tcp_sendmsg_locked tracepoint through a bpf link
pinned beside it. Everything stays pinned under one bpffs directory, so a restarted agent
reopens the same tables and the datapath keeps deciding and marking while no agent runs.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from . import bpfsys
from .build import build
from .flowtable import CFG, HINT_VAL, HIST_KEY, HIST_VAL, KEY, SLOTS, TREE_NODE, TREE_NODES, VAL

log = logging.getLogger("edgeweave.agent")

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
            MapSpec("ewf_cfg", "array", 4, CFG.size, 1),
            MapSpec("ewf_tree", "array", 4, TREE_NODE.size, TREE_NODES),
            MapSpec("ewf_slots", "array", 4, 4, SLOTS),
            MapSpec("ewf_hist", "hash", HIST_KEY.size, HIST_VAL.size, 16384),
            MapSpec("ewf_hints", "lru_hash", KEY.size, HINT_VAL.size, 65536)]


def _pinned_value_size(path: str) -> int | None:
    try:
        info = json.loads(_run("bpftool", "-j", "map", "show", "pinned", path).stdout)
    except (subprocess.CalledProcessError, json.JSONDecodeError):
        return None
    return int(info.get("bytes_value", -1))


class Datapath:
    def __init__(self, pin_dir: str, interface: str, max_flows: int = 65536) -> None:
        self.pin_dir = pin_dir
        self.interface = interface
        self.max_flows = max_flows
        self.flows: bpfsys.Map | None = None
        self.ready: bpfsys.Map | None = None
        self.cfg: bpfsys.Map | None = None
        self.tree: bpfsys.Map | None = None
        self.slots: bpfsys.Map | None = None
        self.hist: bpfsys.Map | None = None
        self.hints: bpfsys.Map | None = None
        self.reused = False
        self.hint_error: str | None = None  # why the send hint is not attached, when it is not

    @property
    def prog_pin(self) -> str:
        return f"{self.pin_dir}/prog"

    def _map_pin(self, name: str) -> str:
        return f"{self.pin_dir}/{name}"

    def _pinned_prog_id(self) -> int | None:
        try:
            return int(json.loads(_run("bpftool", "-j", "prog", "show", "pinned", self.prog_pin).stdout)["id"])
        except (subprocess.CalledProcessError, json.JSONDecodeError, KeyError, ValueError):
            return None

    def _attached(self) -> bool:
        """Our filter slot holds OUR pinned program (another agent's leftover does not count)."""
        try:
            out = _run("tc", "-j", "filter", "show", "dev", self.interface, "ingress").stdout
        except subprocess.CalledProcessError:
            return False
        try:
            filters = json.loads(out or "[]")
        except json.JSONDecodeError:
            return False
        want = self._pinned_prog_id()
        return any(f.get("pref") == FILTER_PREF and f.get("kind") == "bpf"
                   and (f.get("options") or {}).get("prog", {}).get("id") == want for f in filters)

    def setup(self, reload: bool = False) -> None:
        """Idempotent: reuse what is pinned (restart), create what is missing."""
        ensure_bpffs()
        os.makedirs(self.pin_dir, exist_ok=True)
        specs = map_specs(self.max_flows)
        # a pin from an older datapath layout is replaced, not reused with the wrong sizes
        existing = all(os.path.exists(self._map_pin(s.name))
                       and _pinned_value_size(self._map_pin(s.name)) == s.value for s in specs)
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
        if reload or not self._attached():
            subprocess.run(["tc", "qdisc", "add", "dev", self.interface, "clsact"], capture_output=True)
            _run("tc", "filter", "replace", "dev", self.interface, "ingress", "pref", str(FILTER_PREF),
                 "handle", "1", "bpf", "direct-action", "pinned", self.prog_pin)

        self.setup_hint(reload)

    @property
    def hint_link_pin(self) -> str:
        return f"{self.pin_dir}/hint_link"

    def setup_hint(self, reload: bool = False) -> None:
        """Load and attach the tcp_sendmsg_locked program. Optional: a kernel without the
        tracepoint or BTF leaves the hint off (hint_error says why) and the rest runs."""
        if os.path.exists(self.hint_link_pin) and not reload:
            return
        prog = f"{self.pin_dir}/hint_prog"
        try:
            obj = build("hint")
            for pth in (prog, self.hint_link_pin):
                if os.path.exists(pth):
                    os.unlink(pth)
            _run("bpftool", "prog", "load", str(obj), prog, "map", "name", "ewf_hints", "pinned",
                 self._map_pin("ewf_hints"))
            fd = bpfsys.obj_get(prog)
            try:
                link = bpfsys.raw_tracepoint_open(fd)
                try:
                    bpfsys.obj_pin(link, self.hint_link_pin)
                finally:
                    os.close(link)
            finally:
                os.close(fd)
            self.hint_error = None
        except (RuntimeError, OSError, subprocess.CalledProcessError) as e:
            detail = getattr(e, "stderr", "") or str(e)
            self.hint_error = f"send hint not attached: {detail.strip()[:300]}"
            log.warning("%s", self.hint_error)

    def open(self) -> None:
        self.flows = bpfsys.Map(self._map_pin("ewf_flows"), KEY.size, VAL.size)
        self.ready = bpfsys.Map(self._map_pin("ewf_ready"), 0, KEY.size)
        self.cfg = bpfsys.Map(self._map_pin("ewf_cfg"), 4, CFG.size)
        self.tree = bpfsys.Map(self._map_pin("ewf_tree"), 4, TREE_NODE.size)
        self.slots = bpfsys.Map(self._map_pin("ewf_slots"), 4, 4)
        self.hist = bpfsys.Map(self._map_pin("ewf_hist"), HIST_KEY.size, HIST_VAL.size)
        self.hints = bpfsys.Map(self._map_pin("ewf_hints"), KEY.size, HINT_VAL.size)

    def close(self) -> None:
        for m in (self.flows, self.ready, self.cfg, self.tree, self.slots, self.hist, self.hints):
            if m is not None:
                m.close()

    def teardown(self) -> None:
        """Detach and unpin everything (agent --cleanup); assignments are lost."""
        self.close()
        subprocess.run(["tc", "filter", "del", "dev", self.interface, "ingress", "pref", str(FILTER_PREF)],
                       capture_output=True)
        if Path(self.pin_dir).is_dir():
            shutil.rmtree(self.pin_dir, ignore_errors=True)
