"""`make bench-hostile`: a hostile tenant against a running cluster with the operator's admission on.

Real control plane + kwok fleet + Prometheus + the operator (validating webhook, failurePolicy Fail).
It applies the bad-input corpus (tests/integration/bad_inputs_corpus.py), then a flood of 1,000 bad
objects (the corpus' refusable cases, cycled, from 8 concurrent clients), then a GpuJob of 2^31 - 1
slices twice: once where admission sees it, once where it does not (a namespace excluded from the
webhook, standing in for an object stored while the webhook was down). Meanwhile it samples the
operator's RSS, watches for restarts, and keeps a bystander team's Deployment under observation.

Counted:
- bad_inputs: every bad object sent; rejected_or_conditioned: those refused at admission naming the
  field the corpus names, or admitted and given the expected condition and Warning Event.
- harmful_actions: pods created for bad objects, edgeweave taints on any node, bystander pods lost.
- operator_restarts, operator_rss_peak_mib (VmHWM/VmRSS sampled every 0.2 s).
- good_objects_served: after all of it, a good GpuJob is planned and gets its pod, a good
  WorkloadGroup is Ready, /readyz is 200.
Baseline, same run, same corpus: the CRD schema and CEL alone (the webhook configuration removed), i.e.
what a cluster without semantic admission refuses: `baseline_schema_only_rejected`.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "hack"))
sys.path.insert(0, str(REPO))
from clusterkit import free_port, load_hack, wait_for  # noqa: E402 - hack/ is a script dir

for _k, _v in {"EDGEWEAVE_RUN_DIR": str(REPO / ".run" / "bench-hostile"), "EDGEWEAVE_APISERVER_PORT": "28443",
               "EDGEWEAVE_ETCD_PORT": "28790", "EDGEWEAVE_ETCD_PEER_PORT": "28800", "EDGEWEAVE_KCM_PORT": "28257",
               "EDGEWEAVE_SCHED_PORT": "28259", "EDGEWEAVE_KWOK_PORT": "28280"}.items():
    os.environ.setdefault(_k, _v)

from tests.integration.bad_inputs_corpus import CASES, GROUP, PLURALS, VERSION, Case, post  # noqa: E402

ADMISSION_CONFIG = "validate-hostile.edgeweave.io"
STEER_CONFIG = "steer-hostile.edgeweave.io"
FLOOD = 1000
BIG = Case("gj-2^31-slices", "GpuJob", {"kernel": {"builtin": "saxpy", "problemSize": 4096}, "grid": [2**31 - 1],
                                       "block": [1], "vgpu": {"resource": "nvidia.com/gpu", "count": 1}},
           "reject", "spec.grid")


def log(msg: str) -> None:
    print(f"[bench-hostile {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


class RssSampler(threading.Thread):
    def __init__(self, pid_fn) -> None:
        super().__init__(daemon=True)
        self.pid_fn, self.peak_kib, self.stop = pid_fn, 0, threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                text = Path(f"/proc/{self.pid_fn()}/status").read_text()
                for line in text.splitlines():
                    if line.startswith(("VmRSS:", "VmHWM:")):
                        self.peak_kib = max(self.peak_kib, int(line.split()[1]))
            except (OSError, ValueError):
                pass
            self.stop.wait(0.2)


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.devcluster = load_hack("devcluster")
        self.prom: Any = None
        self.op: subprocess.Popen | None = None
        self.restarts = 0
        self.out = Path(args.out_dir)
        self.out.mkdir(parents=True, exist_ok=True)
        self.op_log = self.out / "operator.log"

    # -- setup -----------------------------------------------------------------------------------------------
    def start(self) -> None:
        from kubernetes import client, config

        from edgeweave.sim.fleet import FleetShape, create_fleet

        self.devcluster.stop()
        self.kubeconfig = self.devcluster.start()
        self.api = config.new_client_from_config(config_file=str(self.kubeconfig))
        self.core, self.custom = client.CoreV1Api(self.api), client.CustomObjectsApi(self.api)
        self.kubectl("apply", "-f", str(REPO / "crds"))
        self.kubectl("wait", "--for", "condition=established", "crd", "--all", "--timeout=60s")
        names = create_fleet(self.api, FleetShape(sites=3, nodes_per_site=2, gpu_every=3))
        wait_for(lambda: sum(1 for n in self.core.list_node().items if any(
            c.type == "Ready" and c.status == "True" for c in n.status.conditions or [])) >= len(names), 90,
            "kwok nodes Ready")
        self.prom = load_hack("promstack").PromStack(prom_port=free_port(), exporter_port=free_port())
        self.prom.start()
        suffix = uuid.uuid4().hex[:5]
        self.ns_admitted, self.ns_bypass, self.ns_bystander = (f"hostile-{suffix}", f"hostile-bypass-{suffix}",
                                                               f"bystander-{suffix}")
        for ns in (self.ns_admitted, self.ns_bypass, self.ns_bystander):
            self.core.create_namespace({"metadata": {"name": ns}})
            wait_for(lambda ns=ns: self.core.read_namespaced_service_account("default", ns), 30, "default SA")
        self.start_operator()
        self.start_bystander()

    def kubectl(self, *a: str, input: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run([str(self.devcluster.bin_dir() / "kubectl"), f"--kubeconfig={self.kubeconfig}", *a],
                              input=input, text=True, capture_output=True, check=check, timeout=120)

    def start_operator(self) -> None:
        self.probe = free_port()
        argv = [sys.executable, "-m", "edgeweave.cli", "operator", "--standalone", "--probe-host", "127.0.0.1",
                "--probe-port", str(self.probe), "--prometheus-url", self.prom.url, "--webhook-port", str(free_port()),
                "--webhook-config", STEER_CONFIG, "--admission-config", ADMISSION_CONFIG,
                "--webhook-cert-dir", str(self.out / "certs"), "--webhook-exclude-namespace", self.ns_bypass,
                "--namespace", "hostile-*"]
        env = {**os.environ, "KUBECONFIG": str(self.kubeconfig),
               "EDGEWEAVE_ADMISSION_ALLOWED_IMAGES": "registry.local/edgeweave/*"}
        logf = open(self.op_log, "ab")  # noqa: SIM115 - owned by the child
        self.op = subprocess.Popen(argv, stdout=logf, stderr=subprocess.STDOUT, env=env, cwd=REPO,
                                   start_new_session=True)
        wait_for(lambda: self.readyz()[0] == 200, 90, "operator /readyz")
        probe = next(c for c in CASES if c.id == "wg-unknown-uplink")
        wait_for(lambda: "no EdgeSite has an uplink" in post(self.api, probe, f"probe-{uuid.uuid4().hex[:6]}",
                                                              self.ns_admitted)[1], 30, "validating webhook answering")

    def readyz(self) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.probe}/readyz", timeout=2) as r:  # noqa: S310
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()
        except OSError as e:
            return 0, str(e)

    def check_alive(self) -> None:
        if self.op is not None and self.op.poll() is not None:
            self.restarts += 1
            log(f"operator exited rc={self.op.returncode}; restarting (restart {self.restarts})")
            self.start_operator()

    def start_bystander(self) -> None:
        from kubernetes import client
        dep = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "shop"},
               "spec": {"replicas": 4, "selector": {"matchLabels": {"app": "shop"}},
                        "template": {"metadata": {"labels": {"app": "shop", "app.kubernetes.io/part-of": "hostile"}},
                                     "spec": {"containers": [{"name": "c", "image": "registry.local/shop:1"}]}}}}
        client.AppsV1Api(self.api).create_namespaced_deployment(self.ns_bystander, dep)
        self.bystander_uids = wait_for(lambda: (lambda pods: pods if len(pods) == 4 else None)(
            {p.metadata.uid for p in self.core.list_namespaced_pod(self.ns_bystander).items
             if p.status.phase == "Running"}), 90, "bystander pods Running")

    # -- the run ---------------------------------------------------------------------------------------------
    def expect(self, case: Case, name: str, ns: str) -> bool:
        """Send one bad object; True when it was refused naming the field or got its condition and Event."""
        code, text = post(self.api, case, name, ns)
        if case.expect == "reject":
            if code in (200, 201):
                self.delete(case, name, ns)
                return False
            return case.field in text
        if code not in (200, 201):
            return False
        ctype, status, reason = case.condition
        ev_ns = ns if case.kind != "EdgeSite" else "default"

        def done() -> bool:
            obj = self.read(case, name, ns)
            conds = (obj.get("status") or {}).get("conditions") or []
            ok = any(c["type"] == ctype and c["status"] == status and c["reason"] == reason and case.says in c["message"]
                     for c in conds)
            evs = self.core.list_namespaced_event(ev_ns, field_selector=f"involvedObject.name={name}").items
            return ok and any(e.type == "Warning" and e.reason == case.event for e in evs)
        try:
            wait_for(done, 90, f"{case.id} conditioned")
            return True
        except Exception:  # noqa: BLE001 - a miss is counted, not fatal
            return False

    def read(self, case: Case, name: str, ns: str) -> dict:
        if case.kind == "EdgeSite":
            return self.custom.get_cluster_custom_object(GROUP, VERSION, PLURALS[case.kind], name)
        return self.custom.get_namespaced_custom_object(GROUP, VERSION, ns, PLURALS[case.kind], name)

    def delete(self, case: Case, name: str, ns: str) -> None:
        try:
            if case.kind == "EdgeSite":
                self.custom.delete_cluster_custom_object(GROUP, VERSION, PLURALS[case.kind], name)
            else:
                self.custom.delete_namespaced_custom_object(GROUP, VERSION, ns, PLURALS[case.kind], name)
        except Exception:  # noqa: BLE001
            pass

    def run(self) -> dict[str, Any]:
        sampler = RssSampler(lambda: self.op.pid if self.op else 0)
        sampler.start()
        sent = ok = 0
        misses: list[str] = []
        t0 = time.monotonic()
        for case in CASES:
            ns = self.ns_bypass if case.bypass else self.ns_admitted
            sent += 1
            if self.expect(case, f"c-{uuid.uuid4().hex[:8]}", ns):
                ok += 1
            else:
                misses.append(case.id)
            self.check_alive()
        corpus_s = time.monotonic() - t0
        log(f"corpus: {ok}/{sent} as expected in {corpus_s:.1f}s; misses {misses}")

        refusable = [c for c in CASES if c.expect == "reject"]
        t1 = time.monotonic()
        latencies: list[float] = []

        def one(i: int) -> bool:
            case = refusable[i % len(refusable)]
            t = time.monotonic()
            result = self.expect(case, f"f{i}-{uuid.uuid4().hex[:6]}", self.ns_admitted)
            latencies.append(time.monotonic() - t)
            return result

        with ThreadPoolExecutor(8) as pool:
            flood = list(pool.map(one, range(FLOOD)))
        sent += FLOOD
        ok += sum(flood)
        flood_s = time.monotonic() - t1
        misses += [f"flood-{i}" for i, r in enumerate(flood) if not r][:20]
        log(f"flood: {sum(flood)}/{FLOOD} refused naming the field in {flood_s:.1f}s")
        self.check_alive()

        # The GpuJob of 2^31 - 1 slices: refused where admission sees it; bounded where it does not.
        sent += 2
        ok += self.expect(BIG, "big-admitted", self.ns_admitted)
        bypass_big = Case(BIG.id + "-bypass", "GpuJob", BIG.spec, "condition",
                          condition=("Ready", "False", "InvalidSpec"), event="InvalidSpec", says="spec.grid", bypass=True)
        ok += self.expect(bypass_big, "big-bypass", self.ns_bypass)
        # Let it sit through a few reconciles (timer: 10 s) while RSS is sampled.
        end = time.monotonic() + self.args.soak
        while time.monotonic() < end:
            self.check_alive()
            time.sleep(1)
        self.check_alive()
        sampler.stop.set()
        sampler.join(2)

        harmful = self.harmful_actions()
        served = self.good_objects_served()
        readyz = self.readyz()
        tracebacks = self.op_log.read_text(errors="replace").count("Traceback")
        baseline = self.baseline_schema_only(refusable)
        lat = sorted(latencies)
        return {
            "bad_inputs": sent,
            "rejected_or_conditioned": ok,
            "harmful_actions": harmful["total"],
            "operator_restarts": self.restarts,
            "operator_rss_peak_mib": round(sampler.peak_kib / 1024, 1),
            "good_objects_served": served and readyz[0] == 200,
            "baseline_schema_only_rejected": baseline,
            "baseline_schema_only_of": len(refusable),
            "corpus_cases": len(CASES),
            "misses": misses,
            "harmful": harmful,
            "admission_p50_s": round(lat[len(lat) // 2], 4) if lat else None,
            "admission_p99_s": round(lat[int(len(lat) * 0.99)], 4) if lat else None,
            "flood_seconds": round(flood_s, 1),
            "operator_tracebacks": tracebacks,
            "readyz": readyz,
        }

    def harmful_actions(self) -> dict[str, Any]:
        nodes = self.core.list_node().items
        taints = sum(1 for n in nodes for t in (n.spec.taints or []) if t.key.startswith("edgeweave.io/"))
        bad_pods = 0
        for ns in (self.ns_admitted, self.ns_bypass):
            bad_pods += sum(1 for p in self.core.list_namespaced_pod(ns, label_selector="edgeweave.io/gpujob").items
                            if not p.metadata.labels.get("edgeweave.io/gpujob", "").startswith("good-"))
        now = {p.metadata.uid for p in self.core.list_namespaced_pod(self.ns_bystander).items}
        lost = len(self.bystander_uids - now)
        return {"total": taints + bad_pods + lost, "edgeweave_taints": taints, "pods_for_bad_objects": bad_pods,
                "bystander_pods_lost": lost}

    def good_objects_served(self) -> bool:
        ns = self.ns_admitted
        job = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "GpuJob", "metadata": {"name": "good-job"},
               "spec": {"kernel": {"builtin": "saxpy", "problemSize": 4096}, "grid": [16], "block": [256],
                        "vgpu": {"resource": "nvidia.com/gpu", "count": 1}, "profile": {"timePerBlockUs": 1000}}}
        group = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "WorkloadGroup", "metadata": {"name": "good-group"},
                 "spec": {"selector": {"app": "good"}, "mode": "DryRun"}}
        try:
            self.custom.create_namespaced_custom_object(GROUP, VERSION, ns, "gpujobs", job)
            self.custom.create_namespaced_custom_object(GROUP, VERSION, ns, "workloadgroups", group)

            def served() -> bool:
                j = self.custom.get_namespaced_custom_object(GROUP, VERSION, ns, "gpujobs", "good-job")
                g = self.custom.get_namespaced_custom_object(GROUP, VERSION, ns, "workloadgroups", "good-group")
                pods = self.core.list_namespaced_pod(ns, label_selector="edgeweave.io/gpujob=good-job").items
                ready = any(c["type"] == "Ready" and c["status"] == "True"
                            for c in (g.get("status") or {}).get("conditions", []))
                return (j.get("status") or {}).get("slicesTotal", 0) > 0 and bool(pods) and ready
            wait_for(served, 90, "good objects served")
            return True
        except Exception as e:  # noqa: BLE001
            log(f"good objects NOT served: {e}")
            return False

    def baseline_schema_only(self, refusable: list[Case]) -> int:
        """Same corpus, webhook configuration removed: what the CRD schema and CEL refuse on their own."""
        from kubernetes import client
        client.AdmissionregistrationV1Api(self.api).delete_validating_webhook_configuration(ADMISSION_CONFIG)
        ns = f"baseline-{uuid.uuid4().hex[:5]}"
        self.core.create_namespace({"metadata": {"name": ns}})
        wait_for(lambda: self.core.read_namespaced_service_account("default", ns), 30, "default SA")
        refused = 0
        for case in refusable:
            name = f"b-{uuid.uuid4().hex[:8]}"
            code, text = post(self.api, case, name, ns)
            if code not in (200, 201) and case.field in text:
                refused += 1
            elif code in (200, 201):
                self.delete(case, name, ns)
        return refused

    def stop(self) -> None:
        if self.op is not None and self.op.poll() is None:
            self.op.terminate()
            try:
                self.op.wait(15)
            except subprocess.TimeoutExpired:
                self.op.kill()
                self.op.wait(5)
        if self.prom is not None:
            self.prom.close()
        if not self.args.keep:
            self.devcluster.stop()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out-dir", default=str(REPO / "bench" / "out" / "hostile"))
    ap.add_argument("--soak", type=float, default=30.0, help="seconds the 2^31 GpuJob sits while RSS is sampled")
    ap.add_argument("--keep", action="store_true", help="leave the cluster running")
    args = ap.parse_args()
    bench = Bench(args)
    try:
        bench.start()
        result = bench.run()
    finally:
        bench.stop()
    (Path(args.out_dir) / "result.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
