"""Building the X.509 certificate revocation list (CRL) of the host CA.

No Django here: `joins.revocation` decides what is revoked and when a new list is due, and
calls `build_crl` to sign it. The list follows RFC 5280 section 5: version 2, signed with the
CA's key (ECDSA P-256 with SHA-256), the CA's subject as issuer, an Authority Key Identifier that
names the CA key, and a CRL number that the caller makes grow with every list issued. Each entry
carries its revocation date and, when known, a reason code.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

#: The reason written for a host whose instance AWS reports terminated or no longer knows: the
#: host ceased to operate; its key was not (known to be) compromised.
REASON_CESSATION = x509.ReasonFlags.cessation_of_operation
#: RFC 5280 caps CRL numbers at 20 octets.
MAX_CRL_NUMBER = 2**159


@dataclass(frozen=True)
class Revocation:
    """One revoked certificate: its serial, when it was revoked, and why (None: unspecified)."""

    serial: int
    revoked_at: datetime
    reason: x509.ReasonFlags | None = REASON_CESSATION


def parse_serial(text: str) -> int:
    """A serial as the join records it (lower-case hex, `Host.tls_cert_serial`) as a number.

    Raises ValueError for anything that is not a positive hex number of at most 20 octets, the
    limit RFC 5280 sets for serial numbers.
    """
    value = int(text, 16)
    if value <= 0 or value.bit_length() > 160:
        raise ValueError(f"{text!r} is not a certificate serial number")
    return value


def _whole_seconds(moment: datetime) -> datetime:
    # A CRL carries whole seconds in UTC; rounding here keeps what we store equal to the list.
    if moment.utcoffset() is None:
        raise ValueError("times must be timezone-aware")
    return moment.astimezone(UTC).replace(microsecond=0)


def build_crl(
    *,
    issuer_certificate: x509.Certificate,
    issuer_key: ec.EllipticCurvePrivateKey,
    revocations: Iterable[Revocation],
    number: int,
    this_update: datetime,
    next_update: datetime,
) -> x509.CertificateRevocationList:
    """Sign a CRL listing `revocations` (each serial once) with the CA's key.

    Raises ValueError when the key does not belong to the certificate, when `next_update` is
    not after `this_update`, or when `number` is out of range: a list nobody could verify, or
    one that claims to be older than it is, must never be published.
    """
    if issuer_certificate.public_key() != issuer_key.public_key():
        raise ValueError("the CRL signing key does not belong to the CA certificate")
    if not 0 <= number < MAX_CRL_NUMBER:
        raise ValueError("the CRL number must be between 0 and 2**159")
    start, end = _whole_seconds(this_update), _whole_seconds(next_update)
    if end <= start:
        raise ValueError("nextUpdate must be after thisUpdate")
    try:
        key_id = issuer_certificate.extensions.get_extension_for_class(
            x509.SubjectKeyIdentifier
        ).value
        authority_key_id = x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(key_id)
    except x509.ExtensionNotFound:
        authority_key_id = x509.AuthorityKeyIdentifier.from_issuer_public_key(
            issuer_key.public_key()
        )
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(issuer_certificate.subject)
        .last_update(start)
        .next_update(end)
        .add_extension(x509.CRLNumber(number), critical=False)
        .add_extension(authority_key_id, critical=False)
    )
    seen: set[int] = set()
    for item in sorted(revocations, key=lambda r: (r.revoked_at, r.serial)):
        if item.serial in seen:
            continue
        seen.add(item.serial)
        entry = (
            x509.RevokedCertificateBuilder()
            .serial_number(item.serial)
            .revocation_date(_whole_seconds(item.revoked_at))
        )
        if item.reason is not None and item.reason != x509.ReasonFlags.unspecified:
            # RFC 5280 5.3.1: the reason code should be absent rather than `unspecified`.
            entry = entry.add_extension(x509.CRLReason(item.reason), critical=False)
        builder = builder.add_revoked_certificate(entry.build())
    return builder.sign(issuer_key, hashes.SHA256())


def crl_pem(der: bytes) -> str:
    """The PEM form (`-----BEGIN X509 CRL-----`) of a DER-encoded CRL."""
    crl = x509.load_der_x509_crl(der)
    return crl.public_bytes(serialization.Encoding.PEM).decode("ascii")
