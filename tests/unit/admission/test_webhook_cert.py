"""The webhook certificate: generated once per host and reused; a mounted Secret wins."""

from __future__ import annotations

from pathlib import Path

from edgeweave.handlers.webhook import load_or_create_cert


def test_generated_once_and_reused(tmp_path: Path) -> None:
    first = load_or_create_cert("127.0.0.1", tmp_path)
    again = load_or_create_cert("127.0.0.1", tmp_path)
    assert first.generated and not again.generated
    assert first.certfile == again.certfile and first.ca_pem == again.ca_pem
    assert first.keyfile.stat().st_mode & 0o077 == 0
    other = load_or_create_cert("webhook.ns.svc", tmp_path)
    assert other.generated and other.certfile != first.certfile


def test_a_mounted_secret_is_used_as_it_is(tmp_path: Path) -> None:
    (tmp_path / "tls.crt").write_bytes(b"CERT")
    (tmp_path / "tls.key").write_bytes(b"KEY")
    (tmp_path / "ca.crt").write_bytes(b"CA")
    cert = load_or_create_cert("anything", tmp_path)
    assert not cert.generated and cert.certfile == tmp_path / "tls.crt" and cert.ca_pem == b"CA"
