"""What the operator puts in a replacement pod to recover its region (item 6 is the lead's).

Pure: builds the init container's command from the WorkloadGroup's MemoryRecovery settings.
The container mounts the store claim at `store_mount`, the token Secret at `token_dir`, and
shares /dev/shm (an emptyDir with medium Memory) with the application, which then opens the
recovered region file. The last line of its stdout is the RecoveryReport JSON to record in
status (epoch, pages, bytes, duration_s, source_reachable, mode).
"""

from __future__ import annotations

from edgeweave.api.workloadgroup import MemoryRecovery

STORE_MOUNT = "/var/lib/edgeweave/baselines"
TOKEN_DIR = "/var/run/edgeweave/memory-token"
DEFAULT_PORT = 7470


def region_file(region: str, shm_dir: str = "/dev/shm") -> str:
    return f"{shm_dir}/edgeweave-{region}"


def recover_command(settings: MemoryRecovery, region: str, source_host: str | None,
                    port: int = DEFAULT_PORT, store_mount: str = STORE_MOUNT, token_dir: str = TOKEN_DIR,
                    require_source: bool = False) -> list[str]:
    """argv for `edgeweave memory-recover` in the replacement pod's init container."""
    if not settings.enabled:
        raise ValueError("memory recovery is not enabled for this group")
    if not settings.token_secret:
        raise ValueError("memoryRecovery.tokenSecret is needed: page reads are authenticated per region")
    argv = ["edgeweave", "memory-recover", "--store", store_mount, "--region", region,
            "--dest", region_file(region), "--token-file", f"{token_dir}/token"]
    if source_host:
        argv += ["--source", f"{source_host}:{port}"]
    if require_source:
        argv.append("--require-source")
    return argv
