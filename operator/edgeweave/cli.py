"""The `edgeweave` command: one entry point for the operator, the agent and the runtimes.

Subcommands import their implementation lazily so `edgeweave crds` does not pay for
kopf, and the agent image does not need CuPy.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

# name -> (module, function, help). Each function takes argv (list[str]) and returns an exit code.
SUBCOMMANDS: dict[str, tuple[str, str, str]] = {
    "operator": ("edgeweave.handlers.main", "main", "run the operator (kopf) against the current kubeconfig"),
    "agent": ("edgeweave.agent.main", "main", "run the node agent: flow classification, uplink pinning, page server"),
    "agent-site": ("edgeweave.agent.site", "main", "write the EdgeSite that selects a node (agent init step)"),
    "crds": ("edgeweave.api.crdgen", "main", "write the CRD YAML generated from the pydantic models"),
    "slice-run": ("edgeweave.gpu.slice_run", "main", "run a list of kernel slices (what GpuJob pods execute)"),
    "slice-report": ("edgeweave.gpu.slice_report", "main",
                     "run slice-run and report progress on the pod (the GpuJob pods' entry point)"),
    "memory-recover": ("edgeweave.memory.recover_cli", "recover_main", "recover a memory region: baseline + dirty pages"),
    "memory": ("edgeweave.memory.cli", "main", "memory-region tools: page server, baseline, inspect"),
    "flows-train": ("edgeweave.flows.train", "main", "train and export the elephant/mouse classifier"),
    "uninstall-cleanup": ("edgeweave.uninstall", "main",
                          "before helm uninstall: stop the operator, remove its finalizers (or delete its CRs)"),
    "fleet": ("edgeweave.sim.fleet", "main", "create a simulated kwok edge fleet (nodes + EdgeSites)"),
}


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="edgeweave", description=__doc__)
    parser.add_argument("command", choices=sorted(SUBCOMMANDS), help="what to run")
    if not argv or argv[0] in ("-h", "--help"):
        parser.print_help()
        for name, (_, _, text) in sorted(SUBCOMMANDS.items()):
            print(f"  {name:16s} {text}")
        return 0 if argv else 2
    ns = parser.parse_args(argv[:1])
    module, func, _ = SUBCOMMANDS[ns.command]
    entry = getattr(importlib.import_module(module), func)
    return int(entry(argv[1:]) or 0)


def operator_main() -> int:
    return main(["operator", *sys.argv[1:]])


def agent_main() -> int:
    return main(["agent", *sys.argv[1:]])


if __name__ == "__main__":
    raise SystemExit(main())
