"""Compile agent/bpf/*.bpf.c with clang when the object is missing or older than its source."""

from __future__ import annotations

import os
import shutil
import subprocess
import sysconfig
from pathlib import Path

BPF_DIR = Path(__file__).resolve().parent / "bpf"


def _include_dirs() -> list[str]:
    # asm/ headers live under the multiarch include dir on Debian.
    multiarch = sysconfig.get_config_var("MULTIARCH") or f"{os.uname().machine}-linux-gnu"
    return [d for d in (f"/usr/include/{multiarch}",) if Path(d).is_dir()]


def vmlinux_dir() -> Path:
    """A directory holding vmlinux.h for the running kernel (hint.bpf.c needs kernel types).

    Dumped from /sys/kernel/btf/vmlinux with bpftool, cached outside the clone and keyed by
    kernel release, so a warm build does not dump it again."""
    rel = os.uname().release
    d = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "edgeweave" / "bpf" / rel
    hdr = d / "vmlinux.h"
    if not hdr.exists():
        btf = Path("/sys/kernel/btf/vmlinux")
        if not btf.exists():
            raise RuntimeError("this kernel exposes no BTF (/sys/kernel/btf/vmlinux): the send hint "
                               "program cannot be built")
        d.mkdir(parents=True, exist_ok=True)
        out = subprocess.run(["bpftool", "btf", "dump", "file", str(btf), "format", "c"], check=True,
                             capture_output=True, text=True).stdout
        tmp = hdr.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(out)
        os.replace(tmp, hdr)
    return d


def object_path(name: str = "flows", out_dir: Path | None = None) -> Path:
    """Where the compiled object goes: EDGEWEAVE_BPF_OUT, out_dir, or next to the source."""
    env = os.environ.get("EDGEWEAVE_BPF_OUT")
    base = Path(env) if env else (out_dir or BPF_DIR)
    return base / f"{name}.bpf.o"


def build(name: str = "flows", out_dir: Path | None = None, force: bool = False) -> Path:
    src = BPF_DIR / f"{name}.bpf.c"
    obj = object_path(name, out_dir)
    newest = max(src.stat().st_mtime, (BPF_DIR / "flows.h").stat().st_mtime)
    if not force and obj.exists() and obj.stat().st_mtime >= newest:
        return obj
    clang = shutil.which("clang")
    if clang is None:
        raise RuntimeError("clang is needed to compile the eBPF datapath (apt-get install clang libbpf-dev)")
    obj.parent.mkdir(parents=True, exist_ok=True)
    tmp = obj.with_suffix(f".tmp{os.getpid()}")
    incs = [*_include_dirs(), str(BPF_DIR)]
    if name == "hint":
        incs.append(str(vmlinux_dir()))
    arch = {"x86_64": "x86", "aarch64": "arm64"}.get(os.uname().machine, os.uname().machine)
    cmd = [clang, "-O2", "-g", "-Wall", "-target", "bpf", "-mcpu=v3", f"-D__TARGET_ARCH_{arch}", *[f"-I{d}" for d in incs],
           "-c", str(src), "-o", str(tmp)]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"clang failed on {src.name}:\n{r.stderr}")
    os.replace(tmp, obj)  # atomic: parallel test workers never load a half-written object
    return obj


def main(argv: list[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(description="compile the edgeweave eBPF datapath")
    ap.add_argument("--out-dir", type=Path, default=None)
    ap.add_argument("--force", action="store_true")
    ns = ap.parse_args(argv)
    for name in ("flows", "hint"):
        print(build(name, out_dir=ns.out_dir, force=ns.force))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
