"""Per-job tokens for the node dispatcher's socket. Pure.

The dispatcher and the operator share one key (a Secret the chart creates). A job pod proves which
job it belongs to with token = HMAC-SHA256(key, "namespace/name/uid"), which the operator puts into a
per-job Secret that only that job's pods mount. The dispatcher recomputes the HMAC: a pod of one job
cannot act for another job (another namespace, another name or a recreated job's new uid), and the
dispatcher needs no API access to check a caller.
"""

from __future__ import annotations

import base64
import hashlib
import hmac

KEY_BYTES = 32


def job_key(namespace: str, name: str, uid: str) -> str:
    for part, what in ((namespace, "namespace"), (name, "name"), (uid, "uid")):
        if not part or "/" in part or len(part) > 253:
            raise ValueError(f"bad {what} {part[:40]!r}")
    return f"{namespace}/{name}/{uid}"


def output_subdir(namespace: str, name: str, uid: str) -> str:
    """A job's output directory below the node's output root: the job pods mount it, the
    dispatcher hands it to its group on hello (so pods running as non-root can write it)."""
    job_key(namespace, name, uid)  # the same checks: no "/" (no way out of the root), no empty part
    if namespace in (".", "..") or name in (".", ".."):
        raise ValueError("bad namespace or name")
    return f"{namespace}/{name}-{uid[:8]}"


def job_token(key: bytes, namespace: str, name: str, uid: str) -> str:
    mac = hmac.new(key, job_key(namespace, name, uid).encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac).decode().rstrip("=")


def verify(key: bytes, namespace: str, name: str, uid: str, token: str) -> bool:
    try:
        expected = job_token(key, namespace, name, uid)
    except ValueError:
        return False
    return hmac.compare_digest(expected.encode(), str(token).encode())


def load_key(path: str) -> bytes:
    """The shared key from a file (a mounted Secret): raw bytes, at least 16 of them."""
    with open(path, "rb") as f:
        key = f.read().strip()
    if len(key) < 16:
        raise ValueError(f"dispatcher key in {path} is {len(key)} bytes; need at least 16")
    return key
