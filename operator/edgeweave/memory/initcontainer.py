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
TLS_DIR = "/var/run/edgeweave/memory-tls"  # ca.crt, tls.crt, tls.key (a kubernetes.io/tls Secret + CA)
PRESTAGE_DIR = "/var/lib/edgeweave/prestaged"  # the node agent's pre-staged baselines (hostPath)
LAZY_ENV = "EDGEWEAVE_MEMORY_LAZY_SOCKET"  # an app container that sets it attaches lazily (lazy.LazyRegion)
DEFAULT_PORT = 7470


def source_region(namespace: str, source_pod_uid: str, name: str) -> str:
    """The agent key of the failed pod's region (regions are named by namespace/pod UID/name)."""
    from .naming import RegionId

    return RegionId(namespace, source_pod_uid, name).key


def region_file(region: str, shm_dir: str = "/dev/shm") -> str:
    return f"{shm_dir}/edgeweave-{region.replace('/', '_')}"


def recover_command(settings: MemoryRecovery, region: str, source_host: str | None,
                    port: int = DEFAULT_PORT, store_mount: str = STORE_MOUNT, token_dir: str = TOKEN_DIR,
                    require_source: bool = False, tls_dir: str | None = TLS_DIR,
                    local_cache: str | None = None, lazy_socket: str | None = None,
                    wait_owner_exit: float = 0.0) -> list[str]:
    """argv for `edgeweave memory-recover` in the replacement pod's init container."""
    if not settings.enabled:
        raise ValueError("memory recovery is not enabled for this group")
    if not settings.token_secret:
        raise ValueError("memoryRecovery.tokenSecret is needed: page reads are authenticated per region")
    argv = ["edgeweave", "memory-recover", "--store", store_mount, "--region", region,
            "--dest", region_file(region), "--token-file", f"{token_dir}/token"]
    if source_host:
        argv += ["--source", f"{source_host}:{port}"]
        if wait_owner_exit > 0:  # a move's replacement starts while the old pod still terminates
            argv += ["--wait-owner-exit", f"{wait_owner_exit:g}"]
    if tls_dir:
        # The page server speaks TLS by default; without these the source would look unreachable.
        argv += ["--tls-cert", f"{tls_dir}/tls.crt", "--tls-key", f"{tls_dir}/tls.key", "--tls-ca", f"{tls_dir}/ca.crt"]
    if local_cache:
        argv += ["--local-cache", local_cache]
    if require_source:
        argv.append("--require-source")
    if lazy_socket:
        argv += ["--lazy", lazy_socket]
    return argv
