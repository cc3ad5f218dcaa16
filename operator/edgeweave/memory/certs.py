"""A CA and per-host certificates for the page server's mutual TLS (files, as a Secret mounts them).

In a cluster the certificates come from cert-manager or the chart's Secret; this writes the
same layout (ca.crt, tls.crt, tls.key) for a given host IP, for `make run`, tests and benches.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _pem_key(k: ec.EllipticCurvePrivateKey) -> bytes:
    return k.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                           serialization.NoEncryption())


def make_pki(out: str | Path, hosts: dict[str, str], days: int = 30) -> dict[str, dict[str, Path]]:
    """CA + one cert per host name -> IP; returns {host: {cert, key, ca}} paths under `out`."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (x509.CertificateBuilder().subject_name(_name("edgeweave-memory-ca")).issuer_name(_name("edgeweave-memory-ca"))
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=days))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .sign(ca_key, hashes.SHA256()))
    (out / "ca.crt").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    res = {}
    for host, ip in hosts.items():
        k = ec.generate_private_key(ec.SECP256R1())
        c = (x509.CertificateBuilder().subject_name(_name(host)).issuer_name(ca.subject).public_key(k.public_key())
             .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
             .not_valid_after(now + dt.timedelta(days=days))
             .add_extension(x509.SubjectAlternativeName([x509.DNSName(host),
                                                         x509.IPAddress(ipaddress.ip_address(ip))]), critical=False)
             .sign(ca_key, hashes.SHA256()))
        d = out / host
        d.mkdir(exist_ok=True)
        (d / "tls.crt").write_bytes(c.public_bytes(serialization.Encoding.PEM))
        (d / "tls.key").write_bytes(_pem_key(k))
        (d / "tls.key").chmod(0o600)
        res[host] = {"cert": d / "tls.crt", "key": d / "tls.key", "ca": out / "ca.crt"}
    return res
