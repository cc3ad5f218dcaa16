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


def object_path(name: str = "flows", out_dir: Path | None = None) -> Path:
    """Where the compiled object goes: EDGEWEAVE_BPF_OUT, out_dir, or next to the source."""
    env = os.environ.get("EDGEWEAVE_BPF_OUT")
    base = Path(env) if env else (out_dir or BPF_DIR)
    return base / f"{name}.bpf.o"


def build(name: str = "flows", out_dir: Path | None = None, force: bool = False) -> Path:
    src = BPF_DIR / f"{name}.bpf.c"
    obj = object_path(name, out_dir)
    if not force and obj.exists() and obj.stat().st_mtime >= src.stat().st_mtime:
        return obj
    clang = shutil.which("clang")
    if clang is None:
        raise RuntimeError("clang is needed to compile the eBPF datapath (apt-get install clang libbpf-dev)")
    obj.parent.mkdir(parents=True, exist_ok=True)
    tmp = obj.with_suffix(f".tmp{os.getpid()}")
    cmd = [clang, "-O2", "-g", "-Wall", "-target", "bpf", *[f"-I{d}" for d in _include_dirs()],
           "-c", str(src), "-o", str(tmp)]
    subprocess.run(cmd, check=True, capture_output=True, text=True)
    os.replace(tmp, obj)  # atomic: parallel test workers never load a half-written object
    return obj


def main(argv: list[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(description="compile the edgeweave eBPF datapath")
    ap.add_argument("--out-dir", type=Path, default=None)
    ap.add_argument("--force", action="store_true")
    ns = ap.parse_args(argv)
    print(build(out_dir=ns.out_dir, force=ns.force))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
