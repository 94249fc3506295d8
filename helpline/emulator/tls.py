"""The emulator's own TLS certificate, for the Voice SDK's signalling (the SDK only speaks `wss://`).

Made once, self-signed, for localhost and this machine's names and addresses, and kept in the
instance folder (owner-only) so that a browser that accepted it once keeps accepting it.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import socket
from pathlib import Path

#: How long the certificate lasts; a new one is made when it is this close to running out.
VALID_DAYS = 825
RENEW_BEFORE_DAYS = 30
CERT_NAME = "emulator-tls.crt"
KEY_NAME = "emulator-tls.key"


def _names() -> tuple[list[str], list[str]]:
    """DNS names and IP addresses the certificate vouches for."""
    names = {"localhost", socket.gethostname()}
    addresses = {"127.0.0.1", "::1"}
    try:
        for info in socket.getaddrinfo(socket.gethostname(), None):
            addresses.add(str(info[4][0]).split("%")[0])
    except OSError:
        pass
    return sorted(n for n in names if n), sorted(addresses)


def _still_good(cert_path: Path) -> bool:
    from cryptography import x509

    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    except (OSError, ValueError):
        return False
    left = cert.not_valid_after_utc - dt.datetime.now(dt.timezone.utc)
    return left > dt.timedelta(days=RENEW_BEFORE_DAYS)


def ensure_certificate(folder: str | os.PathLike[str]) -> tuple[Path, Path]:
    """The certificate and key files in `folder`, made (or renewed) if need be."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    base = Path(folder)
    base.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = base / CERT_NAME, base / KEY_NAME
    if cert_path.exists() and key_path.exists() and _still_good(cert_path):
        return cert_path, key_path
    key = ec.generate_private_key(ec.SECP256R1())
    names, addresses = _names()
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Helpline Twilio emulator (local)")])
    now = dt.datetime.now(dt.timezone.utc)
    alternatives: list[x509.GeneralName] = [x509.DNSName(name) for name in names]
    for address in addresses:
        try:
            alternatives.append(x509.IPAddress(ipaddress.ip_address(address)))
        except ValueError:
            continue
    cert = (
        x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=VALID_DAYS))
        .add_extension(x509.SubjectAlternativeName(alternatives), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(key, hashes.SHA256())
    )
    key_bytes = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption())
    # Written beside and renamed into place: a second emulator starting at once sees a whole pair.
    for path, data, mode in ((key_path, key_bytes, 0o600), (cert_path, cert.public_bytes(serialization.Encoding.PEM), 0o644)):
        scratch = path.with_name(f".{path.name}.{os.getpid()}")
        descriptor = os.open(scratch, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(data)
        os.replace(scratch, path)
    return cert_path, key_path
