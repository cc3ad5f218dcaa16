"""GpuJob pods: names, labels, the progress annotation, and the pod manifest. Pure.

One pod per vGPU assignment of the plan (`plan.PodAssignment`). Names are deterministic,
`<job>-s<index>-a<attempt>`, so an operator that restarts between recording the plan and creating
the pods gets 409 Conflict for the ones that exist instead of creating them twice.

Progress: the pod's slice runtime (`python -m edgeweave.gpu.slice_report`) sets the annotation
`edgeweave.io/slices-done` on its own pod to the slice indices it finished ("0-3,7"); the operator
reads it from the pod. Phase Succeeded means every slice of the pod finished.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from .. import GROUP, VERSION, __version__
from ..api.gpujob import GpuJobSpec
from .dispatch_auth import output_subdir
from .plan import PodAssignment, SlicePlan, encode_slices, pod_env
from .ranges import RangeSet

LABEL_JOB = "edgeweave.io/gpujob"
LABEL_SLICE_POD = "edgeweave.io/slice-pod"
LABEL_ATTEMPT = "edgeweave.io/attempt"
ANNOTATION_DONE = "edgeweave.io/slices-done"
ANNOTATION_SLICES = "edgeweave.io/slices"
ENV_POD_NAME = "EDGEWEAVE_POD_NAME"
ENV_POD_NAMESPACE = "EDGEWEAVE_POD_NAMESPACE"
CONTAINER = "slice-run"
IMAGE_ENV = "EDGEWEAVE_GPUJOB_IMAGE"
DEFAULT_IMAGE = f"ghcr.io/edgeweave/edgeweave:{__version__}"

_NAME = re.compile(r"^(?P<job>.+)-s(?P<index>\d+)-a(?P<attempt>\d+)$")


def pod_name(job: str, index: int, attempt: int) -> str:
    return f"{job}-s{index}-a{attempt}"


def parse_pod_name(name: str) -> tuple[str, int, int] | None:
    """(job, index, attempt) of a job pod's name, or None if it is not one."""
    m = _NAME.match(name)
    if not m:
        return None
    return m["job"], int(m["index"]), int(m["attempt"])


def job_label_value(job: str) -> str:
    """Label values hold at most 63 characters; longer job names keep a prefix and a hash."""
    if len(job) <= 63:
        return job
    digest = hashlib.sha256(job.encode()).hexdigest()[:10]
    return f"{job[:52].rstrip('-.')}-{digest}"


def job_selector(job: str) -> str:
    return f"{LABEL_JOB}={job_label_value(job)}"


# Runs a progress annotation may hold: a pod finishes its slices in order, so honest progress is one
# or two runs; this bounds what a status entry can grow to (see docs/gpu.md, "Bounded").
MAX_ANNOTATION_RUNS = 16


def encode_runs(indices: Iterable[int] | RangeSet) -> str:
    """Indices as runs: [0, 1, 2, 3, 7] -> "0-3,7"."""
    return (indices if isinstance(indices, RangeSet) else RangeSet.of(indices)).encode()


def decode_runs(text: str, max_runs: int = MAX_ANNOTATION_RUNS) -> RangeSet:
    """Inverse of `encode_runs`; ValueError on anything malformed or with more than `max_runs` runs."""
    return RangeSet.decode(text, max_runs=max_runs)


def default_image() -> str:
    return os.environ.get(IMAGE_ENV) or DEFAULT_IMAGE


SOCKET_DIR = "/run/edgeweave/gpu"  # in the pod; the chart's dispatcher socket dir on the host
OUTPUT_DIR = "/var/lib/edgeweave/gpu/out"
WORKER_UID = 65532  # the image's user; the chart runs the dispatcher in this group


@dataclass(frozen=True)
class DispatcherWiring:
    """Where the node's slice dispatcher listens and the job's token (dispatch_auth.job_token).

    The token travels in the pod's env: who can read the job's pods — its own namespace — can act
    as that job on the GPU, and nobody else (the token is bound to namespace, name and uid)."""

    host_socket_dir: str
    host_output_dir: str
    token: str
    env: tuple[tuple[str, str], ...] = ()  # more env for the worker (e.g. CUDA_MPS_PIPE_DIRECTORY)


def job_pod(job: Mapping[str, Any], spec: GpuJobSpec, plan: SlicePlan, assignment: PodAssignment,
            image: str | None = None, dispatcher: DispatcherWiring | None = None,
            extra_env: Iterable[tuple[str, str]] = ()) -> dict[str, Any]:
    """The manifest of the pod that runs `assignment`'s slices.

    `job` is the GpuJob's metadata (name, namespace, uid). restartPolicy Never: a kubelet restart
    would run the pod's finished slices again; a failed pod is replaced by the operator instead,
    with only its unfinished slices. `extra_env` (the operator's EDGEWEAVE_GPU_JOB_POD_ENV) goes to
    every job pod, with or without a dispatcher.
    """
    name, namespace, uid = job["name"], job["namespace"], job["uid"]
    resource = spec.vgpu.resource
    command = ["python", "-m", "edgeweave.gpu.slice_report"]
    args = ["--backend", "auto"]
    volumes: list[dict[str, Any]] = []
    mounts: list[dict[str, Any]] = []
    security: dict[str, Any] = {}
    one = {resource: "1"}  # extended resources: request must equal limit
    env = [{"name": k, "value": v} for k, v in pod_env(spec, plan.model_copy(update={"pods": (assignment,)}),
                                                        assignment.pod).items()]
    env += [
        {"name": ENV_POD_NAME, "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": ENV_POD_NAMESPACE, "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
    ]
    if dispatcher is None:
        env += [{"name": k, "value": v} for k, v in extra_env]
    else:
        # Grants come from the node's dispatcher (sizes from the live load, order across jobs);
        # each committed grant's output goes to the job's directory on the node.
        out = f"{dispatcher.host_output_dir.rstrip('/')}/{output_subdir(namespace, name, uid)}"
        command = ["python", "-m", "edgeweave.gpu.slice_worker"]
        args = ["--backend", "auto", "--frag-dir", OUTPUT_DIR, "--worker-id",
                pod_name(name, assignment.pod, assignment.attempt)]
        env += [{"name": "EDGEWEAVE_DISPATCHER_SOCKET", "value": f"{SOCKET_DIR}/dispatch.sock"},
                {"name": "EDGEWEAVE_JOB_TOKEN", "value": dispatcher.token},
                {"name": "EDGEWEAVE_JOB_NAME", "value": name}, {"name": "EDGEWEAVE_JOB_UID", "value": uid},
                *({"name": k, "value": v} for k, v in (*dispatcher.env, *extra_env))]
        volumes = [{"name": "dispatcher", "hostPath": {"path": dispatcher.host_socket_dir, "type": "Directory"}},
                   {"name": "output", "hostPath": {"path": out, "type": "DirectoryOrCreate"}}]
        mounts = [{"name": "dispatcher", "mountPath": SOCKET_DIR}, {"name": "output", "mountPath": OUTPUT_DIR}]
        # The dispatcher's group: its socket is 0660 and it hands the job's output directory to that
        # group on hello (the kubelet creates hostPath directories as root). Non-root, no capabilities.
        security = {"runAsUser": WORKER_UID, "runAsGroup": WORKER_UID, "runAsNonRoot": True,
                    "allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": pod_name(name, assignment.pod, assignment.attempt),
            "namespace": namespace,
            "labels": {
                LABEL_JOB: job_label_value(name),
                LABEL_SLICE_POD: str(assignment.pod),
                LABEL_ATTEMPT: str(assignment.attempt),
                "app.kubernetes.io/managed-by": "edgeweave",
                "app.kubernetes.io/component": "gpujob",
            },
            "annotations": {ANNOTATION_SLICES: encode_slices(plan, assignment.slices)},
            "ownerReferences": [{
                "apiVersion": f"{GROUP}/{VERSION}", "kind": "GpuJob", "name": name, "uid": uid,
                "controller": True, "blockOwnerDeletion": True,
            }],
        },
        "spec": {
            "restartPolicy": "Never",
            "enableServiceLinks": False,
            # GPU nodes commonly carry a NoSchedule taint named after the resource (GPU Operator).
            "tolerations": [{"key": resource, "operator": "Exists", "effect": "NoSchedule"}],
            "containers": [{
                "name": CONTAINER,
                "image": image or spec.image or default_image(),
                "command": command,
                "args": args,
                "env": env,
                "resources": {"requests": dict(one), "limits": dict(one)},
                **({"volumeMounts": mounts} if mounts else {}),
                **({"securityContext": security} if security else {}),
            }],
            **({"volumes": volumes} if volumes else {}),
        },
    }
