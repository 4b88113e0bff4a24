"""A local certificate authority for a lab: CA, KME server and SAE client certificates.

``qkd pki --out DIR --kme alice-kme --kme bob-kme --sae SAE_A --sae SAE_B`` writes
``ca.pem``/``ca.key``, and for each name ``NAME.pem``/``NAME.key`` signed by the
CA. KME certificates carry serverAuth (and clientAuth, for KME-to-KME calls) with
subjectAltName 127.0.0.1/localhost plus any ``--host``; SAE certificates carry
clientAuth and the SAE ID as subject CN, which is what the KME reads to know
which SAE is calling (ETSI GS QKD 014 leaves the SAE authentication method to
the implementation; a client certificate is the usual choice).

Keys are ECDSA P-256, certificates valid for ``days`` (default 825; the CA 3650). Private
keys are written with mode 0600. This is a lab CA, not a production PKI: it
has no revocation. Built on pyca/cryptography (a well-kept library; writing
X.509 by hand would be worse in every way).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


@dataclass(frozen=True)
class Issued:
    cert: Path
    key: Path


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "qkd-link lab"),
                      x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    data = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)


def _load(path_cert: Path, path_key: Path):
    cert = x509.load_pem_x509_certificate(path_cert.read_bytes())
    key = serialization.load_pem_private_key(path_key.read_bytes(), password=None)
    return cert, key


def create_ca(out: Path, cn: str = "qkd-link lab CA", days: int = 3650) -> Issued:
    """Create ``out/ca.pem`` and ``out/ca.key`` (a self-signed CA)."""
    out.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(_name(cn)).issuer_name(_name(cn))
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False,
                                         encipher_only=False, decipher_only=False), critical=True)
            .sign(key, hashes.SHA256()))
    (out / "ca.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    _write_key(out / "ca.key", key)
    return Issued(out / "ca.pem", out / "ca.key")


def issue(out: Path, cn: str, *, server: bool, hosts: tuple[str, ...] = ("127.0.0.1", "localhost"),
          days: int = 825) -> Issued:
    """Issue ``out/CN.pem``/``out/CN.key`` signed by ``out/ca.pem``.

    ``server=True`` makes a KME certificate (serverAuth + clientAuth, SANs from
    ``hosts``); otherwise an SAE client certificate (clientAuth, CN = SAE ID).
    """
    if not cn or "/" in cn or cn.startswith("."):
        raise ValueError(f"cn: not a usable certificate name: {cn!r}")
    ca_cert, ca_key = _load(out / "ca.pem", out / "ca.key")
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    usages = [ExtendedKeyUsageOID.CLIENT_AUTH] + ([ExtendedKeyUsageOID.SERVER_AUTH] if server else [])
    b = (x509.CertificateBuilder().subject_name(_name(cn)).issuer_name(ca_cert.subject)
         .public_key(key.public_key()).serial_number(x509.random_serial_number())
         .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=days))
         .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
         .add_extension(x509.ExtendedKeyUsage(usages), critical=False))
    if server:
        sans: list[x509.GeneralName] = []
        for h in hosts:
            try:
                sans.append(x509.IPAddress(ipaddress.ip_address(h)))
            except ValueError:
                sans.append(x509.DNSName(h))
        b = b.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    cert = b.sign(ca_key, hashes.SHA256())
    (out / f"{cn}.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    _write_key(out / f"{cn}.key", key)
    return Issued(out / f"{cn}.pem", out / f"{cn}.key")


def create_lab_pki(out: Path, kmes: list[str], saes: list[str], hosts: tuple[str, ...] = ()) -> dict:
    """A CA plus one certificate per KME and per SAE; returns the paths by name."""
    ca = create_ca(out)
    issued: dict[str, Issued] = {"ca": ca}
    for k in kmes:
        issued[k] = issue(out, k, server=True, hosts=("127.0.0.1", "localhost", *hosts))
    for s in saes:
        issued[s] = issue(out, s, server=False)
    return issued
