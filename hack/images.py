#!/usr/bin/env python3
"""Container images built from this repo as OCI archives, for `ctr images import` on the real nodes.

No registry is reachable here, so nothing is pulled: each image is one layer assembled by hand from
what this repo builds (static C programs today), with a config and a manifest, written as an OCI image
layout tar. Archives are cached under ~/.cache/edgeweave/images/ keyed by a hash of their inputs (sources,
compiler version), so a warm build is a file lookup. Stdlib only.

  python hack/images.py build [pause|demo|edgeweave ...]   -> prints "ref archive" per image
(no names: pause and demo, what the real nodes need; `edgeweave` is built on request)
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
SRC = HERE / "images"
REGISTRY = "edgeweave.local"
TAG = "dev"


@dataclass(frozen=True)
class Image:
    name: str
    ref: str
    archive: Path


def cache_dir() -> Path:
    return Path(os.environ.get("EDGEWEAVE_CACHE", Path.home() / ".cache" / "edgeweave")) / "images"


def _cc_version() -> str:
    out = subprocess.run(["gcc", "--version"], check=True, capture_output=True, text=True).stdout
    return out.splitlines()[0]


def _static_binary(source: Path, out: Path) -> None:
    subprocess.run(["gcc", "-O2", "-static", "-s", "-o", str(out), str(source), "-lpthread"], check=True,
                   capture_output=True)


def _layer(files: dict[str, tuple[bytes, int]]) -> bytes:
    """A deterministic tar: fixed mtimes/owners, sorted names, parent dirs first."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        dirs = sorted({str(Path(p).parents[i]) for p in files for i in range(len(Path(p).parents) - 1)})
        for d in dirs:
            info = tarfile.TarInfo(d)
            info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, 0
            tar.addfile(info)
        for path in sorted(files):
            data, mode = files[path]
            info = tarfile.TarInfo(path)
            info.size, info.mode, info.mtime = len(data), mode, 0
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _blob(blobs: dict[str, bytes], data: bytes) -> str:
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    blobs[digest] = data
    return digest


def write_oci_archive(out: Path, ref: str, layers: list[bytes], entrypoint: list[str],
                      env: list[str] | None = None, cmd: list[str] | None = None, user: str = "") -> None:
    blobs: dict[str, bytes] = {}
    digests = [_blob(blobs, layer) for layer in layers]
    config = {
        "architecture": "amd64", "os": "linux",
        "config": {"Entrypoint": entrypoint, "Env": env or ["PATH=/usr/local/bin:/usr/bin:/bin"],
                   **({"Cmd": cmd} if cmd else {}), **({"User": user} if user else {})},
        "rootfs": {"type": "layers", "diff_ids": digests},
        "history": [{"created_by": "edgeweave hack/images.py"}],
    }
    config_bytes = json.dumps(config, sort_keys=True).encode()
    config_digest = _blob(blobs, config_bytes)
    manifest = {
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest,
                   "size": len(config_bytes)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": d, "size": len(layer)}
                   for d, layer in zip(digests, layers, strict=True)],
    }
    manifest_bytes = json.dumps(manifest, sort_keys=True).encode()
    manifest_digest = _blob(blobs, manifest_bytes)
    index = {"schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": manifest_digest,
        "size": len(manifest_bytes), "platform": {"architecture": "amd64", "os": "linux"},
        "annotations": {"io.containerd.image.name": ref, "org.opencontainers.image.ref.name": ref.rsplit(":", 1)[1]},
    }]}
    tmp = out.with_suffix(".tmp")
    with tarfile.open(tmp, "w") as tar:
        def add(name: str, data: bytes) -> None:
            info = tarfile.TarInfo(name)
            info.size, info.mtime = len(data), 0
            tar.addfile(info, io.BytesIO(data))
        add("oci-layout", b'{"imageLayoutVersion":"1.0.0"}')
        add("index.json", json.dumps(index).encode())
        for digest, data in sorted(blobs.items()):
            add(f"blobs/sha256/{digest.split(':', 1)[1]}", data)
    tmp.replace(out)


# name -> (sources, entrypoint)
STATIC_IMAGES: dict[str, tuple[str, list[str]]] = {
    "pause": ("pause.c", ["/pause"]),
    "demo": ("demo.c", ["/demo"]),
}


def build(name: str) -> Image:
    source, entrypoint = STATIC_IMAGES[name]
    h = hashlib.sha256()
    h.update((SRC / source).read_bytes())
    h.update(_cc_version().encode())
    h.update(Path(__file__).read_bytes())
    key = h.hexdigest()[:16]
    ref = f"{REGISTRY}/{name}:{TAG}"
    out = cache_dir() / f"{name}-{key}.oci.tar"
    if not out.exists():
        out.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="edgeweave-img-") as tmp:
            binary = Path(tmp) / name
            _static_binary(SRC / source, binary)
            layer = _layer({entrypoint[0].lstrip("/"): (binary.read_bytes(), 0o755)})
        write_oci_archive(out, ref, [layer], entrypoint)
    return Image(name, ref, out)


# --- the edgeweave image: the Dockerfile's recipe without a Docker engine ------------------------------
REPO = HERE.parent
BASE_SUITE = "bookworm"
# bpftool: the agent creates and pins its maps with it (agent/loader.py); tc comes with iproute2.
BASE_PACKAGES = ["python3.11", "iproute2", "bpftool", "ca-certificates"]


def _apt_sources() -> str:
    """The host's own apt sources (the only package mirror this machine may reach)."""
    for p in (Path("/etc/apt/sources.list.d/debian.sources"), Path("/etc/apt/sources.list")):
        if p.exists() and p.read_text().strip():
            return str(p)
    raise RuntimeError("no apt sources on this host for mmdebstrap")


def base_rootfs() -> Path:
    """Debian bookworm minbase + python3.11 + iproute2 as a tar (mmdebstrap), cached by its inputs."""
    key = hashlib.sha256(json.dumps([BASE_SUITE, BASE_PACKAGES]).encode()).hexdigest()[:16]
    out = cache_dir() / f"base-{BASE_SUITE}-{key}.tar"
    if out.exists():
        return out
    if shutil.which("mmdebstrap") is None:
        raise RuntimeError("mmdebstrap not found: run `bash hack/install-deps.sh`")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp.tar")
    subprocess.run(["mmdebstrap", "--variant=minbase", "--include=" + ",".join(BASE_PACKAGES),
                    "--dpkgopt=path-exclude=/usr/share/doc/*", "--dpkgopt=path-exclude=/usr/share/man/*",
                    "--dpkgopt=path-exclude=/usr/share/locale/*",
                    BASE_SUITE, str(tmp), _apt_sources()], check=True, capture_output=True)
    tmp.replace(out)
    return out


def _app_inputs() -> bytes:
    h = hashlib.sha256()
    for p in sorted([REPO / "pyproject.toml", *(REPO / "operator").rglob("*.py"),
                     *(REPO / "operator").rglob("*.c"), Path(__file__)]):
        h.update(str(p.relative_to(REPO)).encode())
        h.update(p.read_bytes())
    return h.digest()


def _app_layer(tmp: Path) -> bytes:
    """The wheel and its dependencies under /usr/local (pip, from the pip cache), the eBPF object compiled
    here (as the Dockerfile's bpf stage does), and the entry point."""
    py = REPO / ".venv" / "bin" / "python"
    subprocess.run([str(py), "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(tmp / "wheels"), str(REPO)],
                   check=True, capture_output=True)
    site = tmp / "root" / "usr" / "local" / "lib" / "python3.11" / "dist-packages"
    subprocess.run([str(py), "-m", "pip", "install", "-q", "--no-compile", "--target", str(site),
                    *map(str, (tmp / "wheels").glob("*.whl"))], check=True, capture_output=True)
    bpf = tmp / "root" / "usr" / "local" / "lib" / "edgeweave" / "bpf"
    bpf.mkdir(parents=True)
    # The agent's own build (edgeweave.agent.build: -mcpu=v3, vmlinux.h for the send hint), so the image
    # carries exactly the objects the e2e tests load; --force: never a stale object from the source tree.
    env = {k: v for k, v in os.environ.items() if k != "EDGEWEAVE_BPF_OUT"}
    r = subprocess.run([str(py), "-m", "edgeweave.agent.build", "--out-dir", str(bpf), "--force"], env=env,
                       capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"eBPF build for the image failed:\n{r.stderr[-2000:]}")
    files: dict[str, tuple[bytes, int]] = {}
    for p in sorted((tmp / "root").rglob("*")):
        if p.is_file() and not p.is_symlink() and "/bin/" not in str(p.relative_to(tmp / "root")):
            files[str(p.relative_to(tmp / "root"))] = (p.read_bytes(), 0o755 if os.access(p, os.X_OK) else 0o644)
    # A name for uid/gid 65532 (the image's USER): kopf's peering identity calls getpass.getuser(),
    # which raises for a uid without a passwd entry. Appended to the base's own files (the Dockerfile's
    # `useradd`).
    with tarfile.open(base_rootfs()) as base:
        for name, line in (("etc/passwd", "edgeweave:x:65532:65532::/nonexistent:/usr/sbin/nologin\n"),
                           ("etc/group", "edgeweave:x:65532:\n")):
            member = next(m for m in base.getmembers() if m.name.lstrip("./") == name)
            files[name] = (base.extractfile(member).read() + line.encode(), 0o644)  # type: ignore[union-attr]
    # The Dockerfile's base (python:3.11-slim) has `python`; GpuJob pods run `python -m ...`.
    files["usr/local/bin/python"] = (b'#!/bin/sh\nexec /usr/bin/python3.11 "$@"\n', 0o755)
    files["usr/local/bin/edgeweave"] = (b"#!/usr/bin/python3.11\nimport sys\nfrom edgeweave.cli import main\n"
                                        b"sys.exit(main())\n", 0o755)
    return _layer(files)


def build_edgeweave() -> Image:
    base = base_rootfs()
    key = hashlib.sha256(base.name.encode() + _app_inputs()).hexdigest()[:16]
    ref = f"{REGISTRY}/edgeweave:{TAG}"
    out = cache_dir() / f"edgeweave-{key}.oci.tar"
    if not out.exists():
        with tempfile.TemporaryDirectory(prefix="edgeweave-img-") as tmp:
            app = _app_layer(Path(tmp))
        write_oci_archive(out, ref, [base.read_bytes(), app], ["edgeweave"],
                          # sbin too: the agent runs tc and bpftool (the Dockerfile's base has them on PATH).
                          env=["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                               "EDGEWEAVE_BPF_OUT=/usr/local/lib/edgeweave/bpf"],
                          cmd=["operator"], user="65532:65532")
    return Image("edgeweave", ref, out)


ALL = [*STATIC_IMAGES, "edgeweave"]


def build_all(names: list[str] | None = None) -> list[Image]:
    return [build_edgeweave() if n == "edgeweave" else build(n) for n in names or list(STATIC_IMAGES)]


def main(argv: list[str]) -> int:
    if not argv or argv[0] != "build":
        print(__doc__, file=sys.stderr)
        return 2
    for img in build_all(argv[1:] or None):
        print(img.ref, img.archive)
    return 0


if __name__ == "__main__":
    if shutil.which("gcc") is None:
        raise SystemExit("gcc is needed to build the images")
    raise SystemExit(main(sys.argv[1:]))
