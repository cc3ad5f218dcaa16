"""Admission: steer replacement pods of an in-flight move onto its target device.

This is how a move stays GitOps-safe: the user's Deployment/StatefulSet is never edited (Argo CD or
Flux would revert it); only the new pod its controller creates gets a required node affinity, and only
while a move recorded in a WorkloadGroup's status is waiting for it. failurePolicy is Ignore, so an
operator that is down never blocks pod creation — the pod is then scheduled as usual and the move
reports that its replacement landed elsewhere.
"""

from __future__ import annotations

import datetime
import ipaddress
import tempfile
from pathlib import Path
from typing import Any

import kopf

from ..actuate.moves import STEERED_ANNOTATION
from ..actuate.steering import STEERING, affinity_patch
from ..actuate.steering_probe import PROBE_PREFIX


@kopf.on.mutate("pods", operation="CREATE", ignore_failures=True, id="steer-moved-pods")
async def steer(body: kopf.Body, patch: kopf.Patch, namespace: str | None, logger: Any, **_: Any) -> None:
    # Async: an in-memory lookup must never wait for a worker thread behind slow handlers.
    owner = next((f"{r['kind']}/{r['name']}" for r in body.get("metadata", {}).get("ownerReferences", [])
                  if r.get("controller")), None)
    if not owner or not namespace:
        return
    entry = STEERING.lookup(namespace, owner)
    if entry is None:
        return
    if entry.to_node:
        patch.spec["affinity"] = affinity_patch(body.get("spec", {}).get("affinity"), entry.to_node)
    if entry.spec_patch is not None:
        for key, value in entry.spec_patch(dict(body.get("spec", {}))).items():
            patch.spec[key] = value
    patch.metadata.setdefault("annotations", {})[STEERED_ANNOTATION] = entry.move_id
    # The mover's liveness probe (a dry-run pod) comes through here every sweep: not worth a line each.
    log = logger.debug if entry.move_id.startswith(PROBE_PREFIX) else logger.info
    log("steering a new pod of %s/%s to %s (%s)", namespace, owner, entry.to_node or "any device", entry.move_id)


def self_signed(host: str, directory: Path) -> tuple[Path, Path]:
    """A serving certificate for the webhook; its own CA bundle goes into the webhook configuration."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    try:
        san: x509.GeneralName = x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        san = x509.DNSName(host)
    now = datetime.datetime.now(datetime.UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)])
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=365))
            .add_extension(x509.SubjectAlternativeName([san]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    directory.mkdir(parents=True, exist_ok=True)
    certfile, keyfile = directory / "webhook.crt", directory / "webhook.key"
    certfile.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    keyfile.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))
    keyfile.chmod(0o600)
    return certfile, keyfile


def configure(settings: kopf.OperatorSettings, *, port: int, host: str, bind: str, config_name: str) -> None:
    certfile, keyfile = self_signed(host, Path(tempfile.mkdtemp(prefix="edgeweave-webhook-")))
    settings.admission.server = kopf.WebhookServer(addr=bind, port=port, host=host, certfile=str(certfile),
                                                   pkeyfile=str(keyfile))
    settings.admission.managed = config_name
