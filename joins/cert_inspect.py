"""What an admin needs to know about an AWS regional certificate, and whether one may be trusted.

No Django here: the trusted-certificates page, its form and the tests share these functions.
The identity-document verifier pins the exact certificate of a region (its issuer, serial and
public key, see `joins.iid`); it never builds a chain. So whether a certificate is self-signed
changes nothing about what it proves, and both kinds are accepted (AWS's own are self-signed);
what matters is that the text holds exactly one certificate, with an RSA key of at least 2048
bits (the rsa2048 document is signed with RSA), for a region name a document can carry, and
that it has not expired.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa

from joins.iid import MIN_RSA_KEY_BITS, CertificateStore, is_region_name

#: A certificate this close to its end is flagged on its page and on the dashboard: AWS
#: announces rotations weeks ahead, and an admin needs time to add the new certificate.
EXPIRY_WARNING_DAYS = 90
#: A pasted or uploaded certificate file is a few kilobytes; anything far larger is not one.
MAX_PEM_BYTES = 64 * 1024

STATUS_OK = "ok"
STATUS_EXPIRING = "expiring"
STATUS_EXPIRED = "expired"


class CertificateRejected(ValueError):
    """A certificate an admin offered was refused; the message says why, in plain words."""


@dataclass(frozen=True)
class CertificateFacts:
    """The facts shown for one certificate (all text ready for a page or a log)."""

    subject: str
    issuer: str
    serial: str
    fingerprint: str
    not_before: datetime
    not_after: datetime
    key: str
    self_signed: bool

    def expiry_status(self, now: datetime, warn_days: int = EXPIRY_WARNING_DAYS) -> str:
        """`expired`, `expiring` (within `warn_days`) or `ok`."""
        return expiry_status(self.not_after, now, warn_days)

    def days_left(self, now: datetime) -> int:
        """Whole days until the certificate expires (negative once it has)."""
        return (self.not_after - now).days


def expiry_status(not_after: datetime, now: datetime, warn_days: int = EXPIRY_WARNING_DAYS) -> str:
    """`expired` from `not_after` on, `expiring` within `warn_days` of it, else `ok`."""
    if now >= not_after:
        return STATUS_EXPIRED
    if not_after - now <= timedelta(days=warn_days):
        return STATUS_EXPIRING
    return STATUS_OK


def fingerprint(certificate: x509.Certificate) -> str:
    """SHA-256 of the DER, as `AB:CD:...` (the form `openssl x509 -fingerprint -sha256` prints)."""
    digest = hashlib.sha256(certificate.public_bytes(serialization.Encoding.DER)).hexdigest()
    return ":".join(digest[i : i + 2] for i in range(0, len(digest), 2)).upper()


def _key_text(certificate: x509.Certificate) -> str:
    key = certificate.public_key()
    if isinstance(key, rsa.RSAPublicKey):
        return f"RSA {key.key_size} bits"
    if isinstance(key, dsa.DSAPublicKey):
        return f"DSA {key.key_size} bits"
    if isinstance(key, ec.EllipticCurvePublicKey):
        return f"ECDSA {key.curve.name}"
    if isinstance(key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
        return type(key).__name__.removesuffix("PublicKey")
    return type(key).__name__


def describe(certificate: x509.Certificate) -> CertificateFacts:
    """The facts of a certificate: names, serial, fingerprint, validity and key."""
    return CertificateFacts(
        subject=certificate.subject.rfc4514_string() or "(empty)",
        issuer=certificate.issuer.rfc4514_string() or "(empty)",
        serial=format(certificate.serial_number, "x"),
        fingerprint=fingerprint(certificate),
        not_before=certificate.not_valid_before_utc,
        not_after=certificate.not_valid_after_utc,
        key=_key_text(certificate),
        self_signed=certificate.issuer == certificate.subject,
    )


def pem_of(certificate: x509.Certificate) -> str:
    """The certificate as PEM text, the form stored and offered for download."""
    return certificate.public_bytes(serialization.Encoding.PEM).decode("ascii")


def parse_region_certificate(
    region: str, pem: str | bytes, now: datetime | None
) -> x509.Certificate:
    """The certificate in `pem`, if it may be trusted for `region`; else CertificateRejected.

    Refused: a region name no document could carry; text that is not exactly one PEM
    certificate (a private key is named as such, so that nobody pastes one twice); a key that
    is not RSA of at least 2048 bits; a certificate that has expired at `now`, which could only
    ever refuse documents (`now=None` skips that check, for a stored certificate that has
    expired since it was added: the verifier refuses what it signed after its end). Anything
    the verifier itself could not load is refused with its reason, so that a stored
    certificate always loads on every server.
    """
    region = (region or "").strip()
    if not is_region_name(region):
        raise CertificateRejected(
            f"{region[:60]!r} is not an AWS region name; use the form of the document's "
            "region field, e.g. us-west-2 or ap-southeast-5."
        )
    data = pem.encode("utf-8", "replace") if isinstance(pem, str) else bytes(pem)
    if len(data) > MAX_PEM_BYTES:
        raise CertificateRejected(
            f"The file is larger than {MAX_PEM_BYTES // 1024} KiB; a certificate is a few KiB."
        )
    if b"PRIVATE KEY-----" in data:
        raise CertificateRejected(
            "This text holds a private key. Never upload a private key; AWS publishes only the "
            "certificate (-----BEGIN CERTIFICATE-----). Treat that key as exposed."
        )
    try:
        certificates = x509.load_pem_x509_certificates(data)
    except ValueError:
        raise CertificateRejected(
            "This is not a PEM certificate; it must start with -----BEGIN CERTIFICATE-----."
        ) from None
    if len(certificates) != 1:
        raise CertificateRejected(
            f"The text holds {len(certificates)} certificates; give exactly the one AWS "
            f"publishes for {region}."
        )
    certificate = certificates[0]
    key = certificate.public_key()
    if not isinstance(key, rsa.RSAPublicKey):
        raise CertificateRejected(
            f"The certificate holds a {_key_text(certificate)} key; the rsa2048 identity "
            "document is signed with RSA, so only the RSA certificate of the region can verify "
            "it (AWS publishes it under 'RSA-2048' in its identity document documentation)."
        )
    if key.key_size < MIN_RSA_KEY_BITS:
        raise CertificateRejected(
            f"The certificate's RSA key has {key.key_size} bits; at least {MIN_RSA_KEY_BITS} "
            "are required (the 1024-bit certificates belong to the older /signature form)."
        )
    if now is not None and certificate.not_valid_after_utc <= now:
        raise CertificateRejected(
            f"The certificate expired on {certificate.not_valid_after_utc:%Y-%m-%d}; it could "
            "only ever refuse documents."
        )
    try:
        CertificateStore([(region, certificate, "upload")])
    except ValueError as exc:
        raise CertificateRejected(f"The verifier cannot use this certificate: {exc}") from None
    return certificate
