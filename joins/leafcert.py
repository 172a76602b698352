"""Hosts' X.509 certificates, encoded in DER directly around what stays the same per CA.

No Django import. Why not cryptography's `CertificateBuilder`: every join built the issuer, the
extensions and the builder's checks of each of them again in Python before the signature, which
is a fifth of what the builder costs; on the join path the whole builder took 100 to 120 us of
CPU per certificate under load (bench/RESULTS.md, throughput). A host certificate always has
the same shape, so `LeafEncoder` encodes, once per CA, everything that does not change from one
host to the next (the signature algorithm, the issuer, the constant extensions) and per host
only the serial, the validity, the subject, the key and the names (RFC 5280, section 4.1):

    Certificate  ::= SEQUENCE { tbsCertificate, signatureAlgorithm, signatureValue BIT STRING }
    TBSCertificate ::= SEQUENCE {
        [0] EXPLICIT version (v3), serialNumber, signature, issuer, validity, subject,
        subjectPublicKeyInfo, [3] EXPLICIT extensions }

with the extensions in this order: basic constraints (critical, not a CA), key usage
(critical), extended key usage (server and client auth), subject alternative names, authority
key identifier, subject key identifier, the host roles extension and, when the server has a
public URL, the CRL distribution point. Strings are encoded as cryptography encodes them
(UTF8String for the names, UTCTime before 2050 and GeneralizedTime from then on), so that for
the same serial and validity the signed part is the same bytes as the builder's: the tests hold
the two equal over generated names, keys and dates (tests/joins/test_leafcert.py), and `openssl
verify` checks the result against the CA.

The signature is the CA's ECDSA P-256 with SHA-256 (ecdsa-with-SHA256), from cryptography.
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
from collections.abc import Sequence
from datetime import datetime

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from pyasn1.codec.der import encoder as der_encoder
from pyasn1.type import univ

from joins.iid_der import (
    BIT_STRING,
    GENERALIZED_TIME,
    OCTET_STRING,
    SEQUENCE,
    SET,
    UTC_TIME,
    UTF8_STRING,
    Cursor,
    encode,
    encode_integer,
)

PublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey

# A BOOLEAN TRUE element, whole (the critical flag of an extension).
_BOOLEAN_TRUE = b"\x01\x01\xff"

# Object identifiers, DER-encoded with their tag.
_OID_ORGANIZATION = b"\x06\x03\x55\x04\x0a"  # 2.5.4.10
_OID_ORGANIZATIONAL_UNIT = b"\x06\x03\x55\x04\x0b"  # 2.5.4.11
_OID_COMMON_NAME = b"\x06\x03\x55\x04\x03"  # 2.5.4.3
_ECDSA_WITH_SHA256 = b"\x30\x0a\x06\x08\x2a\x86\x48\xce\x3d\x04\x03\x02"  # 1.2.840.10045.4.3.2
_EXT_SUBJECT_KEY_IDENTIFIER = b"\x06\x03\x55\x1d\x0e"  # 2.5.29.14
_EXT_KEY_USAGE = b"\x06\x03\x55\x1d\x0f"  # 2.5.29.15
_EXT_SUBJECT_ALT_NAME = b"\x06\x03\x55\x1d\x11"  # 2.5.29.17
_EXT_BASIC_CONSTRAINTS = b"\x06\x03\x55\x1d\x13"  # 2.5.29.19
_EXT_CRL_DISTRIBUTION_POINTS = b"\x06\x03\x55\x1d\x1f"  # 2.5.29.31
_EXT_AUTHORITY_KEY_IDENTIFIER = b"\x06\x03\x55\x1d\x23"  # 2.5.29.35
_EXT_EXTENDED_KEY_USAGE = b"\x06\x03\x55\x1d\x25"  # 2.5.29.37
_SERVER_AUTH = b"\x06\x08\x2b\x06\x01\x05\x05\x07\x03\x01"  # 1.3.6.1.5.5.7.3.1
_CLIENT_AUTH = b"\x06\x08\x2b\x06\x01\x05\x05\x07\x03\x02"  # 1.3.6.1.5.5.7.3.2

# KeyUsage bits (BIT STRING, bit 0 first, trailing zero bits dropped as DER requires):
# digitalSignature alone; with keyEncipherment (RSA keys); with keyAgreement (EC keys).
_KEY_USAGE_SIGN = b"\x03\x02\x07\x80"
_KEY_USAGE_SIGN_ENCIPHER = b"\x03\x02\x05\xa0"
_KEY_USAGE_SIGN_AGREE = b"\x03\x02\x03\x88"

# UTCTime covers 1950 to 2049; later dates are GeneralizedTime (RFC 5280, 4.1.2.5).
_UTC_TIME_LAST_YEAR = 2049


def _time(value: datetime) -> bytes:
    # Whole seconds in UTC: the caller passes `_utc_seconds` values (joins/ca.py).
    if value.year <= _UTC_TIME_LAST_YEAR:
        return encode(UTC_TIME, value.strftime("%y%m%d%H%M%SZ").encode("ascii"))
    return encode(GENERALIZED_TIME, value.strftime("%Y%m%d%H%M%SZ").encode("ascii"))


def _attribute(oid: bytes, value: str) -> bytes:
    """One relative distinguished name holding one attribute, as a UTF8String."""
    return encode(SET, encode(SEQUENCE, oid + encode(UTF8_STRING, value.encode("utf-8"))))


def _extension(oid: bytes, value: bytes, *, critical: bool = False) -> bytes:
    return encode(
        SEQUENCE, oid + (_BOOLEAN_TRUE if critical else b"") + encode(OCTET_STRING, value)
    )


def _general_name(name: str | ipaddress.IPv4Address | ipaddress.IPv6Address) -> bytes:
    if isinstance(name, str):
        return encode(0x82, name.encode("ascii"))  # [2] dNSName, IA5String
    return encode(0x87, name.packed)  # [7] iPAddress


class LeafEncoder:
    """Signs host certificates for one CA: its key, and its certificate for the issuer name and
    key identifier. Built once per CA (joins/ca.py keeps it with the CA); thread-safe."""

    def __init__(
        self,
        ca_key: ec.EllipticCurvePrivateKey,
        ca_cert: x509.Certificate,
        *,
        roles_oid: x509.ObjectIdentifier,
    ) -> None:
        if not isinstance(ca_key, ec.EllipticCurvePrivateKey) or not isinstance(
            ca_key.curve, ec.SECP256R1
        ):
            raise ValueError("the CA key must be an ECDSA P-256 private key")
        self._key = ca_key
        self._signature = ec.ECDSA(hashes.SHA256())
        ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
        # version v3, then (after the serial) the signature algorithm and the issuer.
        self._version = encode(0xA0, encode_integer(2))
        self._algorithm_and_issuer = _ECDSA_WITH_SHA256 + ca_cert.subject.public_bytes()
        self._basic_constraints = _extension(
            _EXT_BASIC_CONSTRAINTS, encode(SEQUENCE, b""), critical=True
        )
        self._extended_key_usage = _extension(
            _EXT_EXTENDED_KEY_USAGE, encode(SEQUENCE, _SERVER_AUTH + _CLIENT_AUTH)
        )
        self._authority_key_id = _extension(
            _EXT_AUTHORITY_KEY_IDENTIFIER, encode(SEQUENCE, encode(0x80, ski))
        )
        self._roles_oid = bytes(der_encoder.encode(univ.ObjectIdentifier(roles_oid.dotted_string)))
        self._crl_points: dict[str, bytes] = {}

    def issue(
        self,
        *,
        public_key: PublicKey,
        serial: int,
        not_before: datetime,
        not_after: datetime,
        organization: str,
        units: Sequence[str],
        common_name: str,
        names: Sequence[str | ipaddress.IPv4Address | ipaddress.IPv6Address],
        roles: bytes,
        crl_url: str | None,
    ) -> str:
        """The signed certificate in PEM. Names and keys must already be checked (joins/ca.py:
        host names, principals, key types and sizes); this only encodes them. `roles` is the
        value of the roles extension (the OID given at construction)."""
        spki = public_key.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        subject = encode(
            SEQUENCE,
            _attribute(_OID_ORGANIZATION, organization)
            + b"".join(_attribute(_OID_ORGANIZATIONAL_UNIT, unit) for unit in units)
            + _attribute(_OID_COMMON_NAME, common_name),
        )
        extensions = [
            self._basic_constraints,
            _extension(_EXT_KEY_USAGE, _key_usage(public_key), critical=True),
            self._extended_key_usage,
            _extension(
                _EXT_SUBJECT_ALT_NAME,
                encode(SEQUENCE, b"".join(_general_name(name) for name in names)),
            ),
            self._authority_key_id,
            _extension(_EXT_SUBJECT_KEY_IDENTIFIER, encode(OCTET_STRING, _key_identifier(spki))),
            _extension(self._roles_oid, roles),
        ]
        if crl_url:
            extensions.append(self._crl_point(crl_url))
        tbs = encode(
            SEQUENCE,
            self._version
            + encode_integer(serial)
            + self._algorithm_and_issuer
            + encode(SEQUENCE, _time(not_before) + _time(not_after))
            + subject
            + spki
            + encode(0xA3, encode(SEQUENCE, b"".join(extensions))),
        )
        signature = self._key.sign(tbs, self._signature)
        der = encode(SEQUENCE, tbs + _ECDSA_WITH_SHA256 + encode(BIT_STRING, b"\x00" + signature))
        return _pem(der)

    def _crl_point(self, url: str) -> bytes:
        """The CRL distribution points extension naming `url` (one per server: kept)."""
        encoded = self._crl_points.get(url)
        if encoded is None:
            # DistributionPoint { distributionPoint [0] { fullName [0] { [6] URI } } }
            point = encode(SEQUENCE, encode(0xA0, encode(0xA0, encode(0x86, url.encode("ascii")))))
            encoded = _extension(_EXT_CRL_DISTRIBUTION_POINTS, encode(SEQUENCE, point))
            self._crl_points = {url: encoded}  # one URL per server; replaced, never grows
        return encoded


def _key_identifier(spki: bytes) -> bytes:
    """The subject key identifier of a SubjectPublicKeyInfo: SHA-1 of its subjectPublicKey bits
    (RFC 5280, 4.2.1.2, method 1), read from the DER that was just encoded for the certificate
    instead of encoding the key once more."""
    cursor = Cursor(spki)
    cursor.enter(SEQUENCE)
    cursor.element(SEQUENCE)  # the algorithm
    bits = cursor.primitive(BIT_STRING)
    cursor.leave()
    if not cursor.done() or not bits or bits[0] != 0:
        raise ValueError("not a SubjectPublicKeyInfo with whole-byte key bits")
    return hashlib.sha1(bits[1:], usedforsecurity=False).digest()


def _key_usage(key: PublicKey) -> bytes:
    if isinstance(key, rsa.RSAPublicKey):
        return _KEY_USAGE_SIGN_ENCIPHER
    if isinstance(key, ec.EllipticCurvePublicKey):
        return _KEY_USAGE_SIGN_AGREE
    return _KEY_USAGE_SIGN


def _pem(der: bytes) -> str:
    body = base64.b64encode(der).decode("ascii")
    lines = "\n".join(body[i : i + 64] for i in range(0, len(body), 64))
    return f"-----BEGIN CERTIFICATE-----\n{lines}\n-----END CERTIFICATE-----\n"
