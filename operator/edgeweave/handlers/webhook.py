"""Admission: steer replacement pods of an in-flight move onto its target device.

This is how a move stays GitOps-safe: the user's Deployment/StatefulSet is never edited (Argo CD or
Flux would revert it); only the new pod its controller creates gets a required node affinity, and only
while a move recorded in a WorkloadGroup's status is waiting for it. failurePolicy is Ignore, so an
operator that is down never blocks pod creation — the pod is then scheduled as usual and the move
reports that its replacement landed elsewhere.
"""

from __future__ import annotations

import asyncio
import base64
import datetime
import ipaddress
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import kopf

from ..actuate.moves import STEERED_ANNOTATION
from ..actuate.steering import STEERING, affinity_patch
from ..actuate.steering_probe import PROBE_PREFIX
from ..admission.config import mutating_configuration, validating_configuration

log = logging.getLogger("edgeweave.webhook")


@kopf.on.mutate("pods", operations=["CREATE"], ignore_failures=True, id="steer-moved-pods")
async def steer(body: kopf.Body, patch: kopf.Patch, namespace: str | None, logger: Any, **_: Any) -> None:
    # Async: an in-memory lookup must never wait for a worker thread behind slow handlers.
    owner = next((f"{r['kind']}/{r['name']}" for r in body.get("metadata", {}).get("ownerReferences", [])
                  if r.get("controller")), None)
    if not owner or not namespace:
        return
    entry = STEERING.lookup(namespace, owner)
    if entry is None:
        return
    fields: dict | None = {}
    if entry.spec_patch is not None:
        fields = entry.spec_patch(dict(body.get("spec", {})))
        deadline = time.monotonic() + entry.pending_s
        while fields is None and time.monotonic() < deadline:
            await asyncio.sleep(0.05)  # the pod index catches up on the event loop meanwhile
            fields = entry.spec_patch(dict(body.get("spec", {})))
    if fields is None and not entry.to_node:
        return  # a standing failover, and this pod replaces nobody (a scale-up): left as it is
    if entry.to_node:
        patch.spec["affinity"] = affinity_patch(body.get("spec", {}).get("affinity"), entry.to_node)
    for key, value in (fields or {}).items():
        patch.spec[key] = value
    patch.metadata.setdefault("annotations", {})[STEERED_ANNOTATION] = entry.move_id
    # The mover's liveness probe (a dry-run pod) comes through here every sweep: not worth a line each.
    say = logger.debug if entry.move_id.startswith(PROBE_PREFIX) else logger.info
    say("steering a new pod of %s/%s to %s (%s)", namespace, owner, entry.to_node or "any device", entry.move_id)


@dataclass(frozen=True)
class ServingCert:
    certfile: Path
    keyfile: Path
    ca_pem: bytes  # what the webhook configurations' caBundle must hold
    generated: bool


def load_or_create_cert(host: str, directory: Path) -> ServingCert:
    """The webhook's serving certificate, kept across restarts.

    In the chart, `directory` is the mounted Secret (cert-manager's Certificate, or the one the chart
    generates once and keeps: `tls.crt`, `tls.key`, and `ca.crt` when a CA signed it). Elsewhere (`make
    run`, tests) the first start writes a self-signed certificate there and every later start reuses it,
    so a configuration that holds its CA stays valid across operator restarts.
    """
    certfile, keyfile, cafile = directory / "tls.crt", directory / "tls.key", directory / "ca.crt"
    if certfile.exists() and keyfile.exists():
        ca = cafile.read_bytes() if cafile.exists() and cafile.stat().st_size else certfile.read_bytes()
        return ServingCert(certfile, keyfile, ca, generated=False)
    # A generated one is kept per host name, so operators reached under different names never share one.
    directory = directory / f"generated-{host}"
    certfile, keyfile = directory / "tls.crt", directory / "tls.key"
    if certfile.exists() and keyfile.exists():
        return ServingCert(certfile, keyfile, certfile.read_bytes(), generated=False)
    cert_pem, key_pem = self_signed(host)
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    # Written under temporary names and renamed: a crash mid-write never leaves half a key to reuse.
    for path, data, mode in ((keyfile, key_pem, 0o600), (certfile, cert_pem, 0o644)):
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        tmp.replace(path)
    return ServingCert(certfile, keyfile, cert_pem, generated=True)


def self_signed(host: str) -> tuple[bytes, bytes]:
    """A self-signed serving certificate (its own CA) for `host`: PEM certificate and PKCS#8 key."""
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
    return (cert.public_bytes(serialization.Encoding.PEM),
            key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption()))


@dataclass(frozen=True)
class WebhookOptions:
    port: int
    host: str
    bind: str
    config_name: str  # MutatingWebhookConfiguration (steering)
    admission_config: str = ""  # ValidatingWebhookConfiguration; "" = no semantic admission
    cert_dir: Path = Path(".run/webhook")
    manage: bool = True  # apply the configurations (make run, tests); the chart installs them itself
    excluded_namespaces: Sequence[str] = ()
    failure_policy: str = "Fail"


def configure(settings: kopf.OperatorSettings, options: WebhookOptions) -> list[dict[str, Any]]:
    """Serve the webhooks; returns the configurations this operator manages (applied by `apply`)."""
    cert = load_or_create_cert(options.host, options.cert_dir)
    settings.admission.server = kopf.WebhookServer(addr=options.bind, port=options.port, host=options.host,
                                                   certfile=str(cert.certfile), pkeyfile=str(cert.keyfile))
    settings.admission.managed = None  # ours, with namespaceSelector and a short timeout (admission/config.py)
    log.info("webhook certificate %s (%s)", cert.certfile, "generated" if cert.generated else "reused")
    if not options.manage:
        return []
    client = {"url": f"https://{options.host}:{options.port}"}
    ca = base64.b64encode(cert.ca_pem).decode()
    configs = [mutating_configuration(options.config_name, client, ca_bundle=ca,
                                      excluded_namespaces=options.excluded_namespaces)]
    if options.admission_config:
        configs.append(validating_configuration(options.admission_config, client, ca_bundle=ca,
                                                excluded_namespaces=options.excluded_namespaces,
                                                failure_policy=options.failure_policy))
    return configs


def apply(api: Any, configs: Sequence[dict[str, Any]]) -> None:
    """Create or replace each configuration (dev and test clusters; the chart owns them elsewhere)."""
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    adm = client.AdmissionregistrationV1Api(api)
    for cfg in configs:
        kind, name = cfg["kind"], cfg["metadata"]["name"]
        create, read, replace = ((adm.create_validating_webhook_configuration,
                                  adm.read_validating_webhook_configuration,
                                  adm.replace_validating_webhook_configuration)
                                 if kind == "ValidatingWebhookConfiguration" else
                                 (adm.create_mutating_webhook_configuration, adm.read_mutating_webhook_configuration,
                                  adm.replace_mutating_webhook_configuration))
        try:
            create(cfg)
        except ApiException as e:
            if e.status != 409:
                raise
            current = read(name)
            replace(name, {**cfg, "metadata": {**cfg["metadata"], "resourceVersion": current.metadata.resource_version}})


def remove(api: Any, configs: Sequence[dict[str, Any]]) -> None:
    """On a clean stop, take down what `apply` put up: a validating configuration with failurePolicy Fail
    and no operator behind it would refuse every write of our kinds."""
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    adm = client.AdmissionregistrationV1Api(api)
    for cfg in configs:
        delete = (adm.delete_validating_webhook_configuration if cfg["kind"] == "ValidatingWebhookConfiguration"
                  else adm.delete_mutating_webhook_configuration)
        try:
            delete(cfg["metadata"]["name"])
        except ApiException as e:
            if e.status != 404:
                raise
