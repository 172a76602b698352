"""The cluster's host CAs: checking agents' public keys and signing their host credentials.

A joining host sends public keys only; the server answers with an X.509 certificate for the TLS
key and an OpenSSH host certificate for the SSH key, both signed by the cluster's CAs. This
module holds no Django import so that it can be tested with the real `openssl` and `ssh-keygen`
and reused by commands without settings.

Host roles in the X.509 certificate
-----------------------------------
Besides one subject OU per role (what most tools display), the roles are recorded in a
non-critical extension so that a relying party reads a typed list instead of parsing the
subject. The project's private OID arc is a UUID arc (ITU-T X.667, no registration needed):

    2.25.214446185248403324578926939667762216225        the project
    2.25.214446185248403324578926939667762216225.1      X.509 extensions
    2.25.214446185248403324578926939667762216225.1.1    host roles:
                                                        SEQUENCE OF UTF8String, in issue order

Unknown non-critical extensions are ignored by relying parties that do not know the OID.
"""

from __future__ import annotations

import ipaddress
import re
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import NameOID

from joins.ca_errors import CAError, CAKeyError, CAUnusableError
from joins.iid_der import SEQUENCE, UTF8_STRING, Cursor, encode
from joins.keys import (
    ALLOWED_CURVES,
    MAX_KEY_TEXT,
    MAX_NAMES,
    MAX_RSA_BITS,
    MIN_RSA_BITS,
    MIN_RSA_EXPONENT,
    SSH_KEY_TYPES,
    KeyRejected,
    PublicKey,
    _check_public_key,
    _hostname,
    _name_list,
    _principal,
    check_host_names,
    load_public_ssh_key,
    load_public_tls_key,
)
from joins.keywrap import MIN_SECRET_CHARS, PrivateKey, decrypt_private_key, encrypt_private_key
from joins.leafcert import LeafEncoder
from joins.sshcert import NONCE_BYTES, CAKey, host_certificate

# Public key checks (`joins.keys`), key sealing (`joins.keywrap`) and the CA errors
# (`joins.ca_errors`) live in their own modules; callers keep importing every name from here.
__all__ = [
    "ALLOWED_CURVES",
    "CLOCK_SKEW",
    "DEFAULT_CA_VALIDITY",
    "HOST_ROLES_OID",
    "MAX_CLUSTER_NAME",
    "MAX_KEY_TEXT",
    "MAX_NAMES",
    "MAX_ROLES",
    "MAX_RSA_BITS",
    "MIN_RSA_BITS",
    "MIN_RSA_EXPONENT",
    "MIN_SECRET_CHARS",
    "RECORD_FIELDS",
    "SSH_KEY_PURPOSE",
    "SSH_KEY_TYPES",
    "TLS_KEY_PURPOSE",
    "CAError",
    "CAKeyError",
    "CAUnusableError",
    "HostCA",
    "IssuedCredentials",
    "KeyRejected",
    "PrivateKey",
    "PublicKey",
    "ca_from_record",
    "ca_to_record",
    "check_host_names",
    "decrypt_private_key",
    "encrypt_private_key",
    "generate_host_ca",
    "issue_host_credentials",
    "load_public_ssh_key",
    "load_public_tls_key",
    "read_host_roles",
]

HOST_ROLES_OID = x509.ObjectIdentifier("2.25.214446185248403324578926939667762216225.1.1")

DEFAULT_CA_VALIDITY = timedelta(days=3652)
# Agents' clocks drift; a certificate valid from "now" would be refused for a minute by a peer
# whose clock runs behind ours.
CLOCK_SKEW = timedelta(minutes=1)

MAX_ROLES = 32
MAX_CLUSTER_NAME = 56  # "<name> Host CA" must fit the 64-character common name

# Purposes (HKDF info and AAD) of the two CA private keys when stored.
TLS_KEY_PURPOSE = "joinadmin host CA / tls"
SSH_KEY_PURPOSE = "joinadmin host CA / ssh"

_ROLE = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,63}")
_CLUSTER = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def _roles(roles: Sequence[str]) -> list[str]:
    if isinstance(roles, str | bytes) or not isinstance(roles, Sequence) or not roles:
        raise KeyRejected("roles", "roles: expected a non-empty list of role names.")
    if len(roles) > MAX_ROLES:
        raise KeyRejected("roles", f"roles: {len(roles)} roles; at most {MAX_ROLES} allowed.")
    for role in roles:
        if not isinstance(role, str) or not _ROLE.fullmatch(role):
            raise KeyRejected(
                "roles", f"roles: {str(role)[:80]!r} is not a role name such as 'Node'."
            )
    return list(dict.fromkeys(roles))


def _check_cluster_name(cluster_name: object) -> str:
    if (
        not isinstance(cluster_name, str)
        or len(cluster_name) > MAX_CLUSTER_NAME
        or not _CLUSTER.fullmatch(cluster_name)
    ):
        raise CAUnusableError(
            f"cluster name {str(cluster_name)[:80]!r} is not usable; use up to "
            f"{MAX_CLUSTER_NAME} letters, digits, '.', '_' or '-'."
        )
    return cluster_name


def _encode_roles(roles: Sequence[str]) -> bytes:
    return encode(SEQUENCE, b"".join(encode(UTF8_STRING, role.encode("utf-8")) for role in roles))


def _decode_roles(data: bytes) -> list[str]:
    """The roles `_encode_roles` wrote: a SEQUENCE of UTF8Strings, nothing after it (ValueError,
    as `DERError` is one, for anything else)."""
    cursor = Cursor(data)
    cursor.enter(SEQUENCE)
    roles = []
    while not cursor.at_end():
        roles.append(cursor.primitive(UTF8_STRING).decode("utf-8"))
    cursor.leave()
    if not cursor.done():
        raise ValueError("trailing data after the roles")
    return roles


def read_host_roles(cert: x509.Certificate) -> list[str]:
    """The roles recorded in a host certificate's roles extension (see the module docstring).

    Raises ValueError when the extension is missing or malformed, so that a relying party
    cannot mistake "no roles readable" for "no roles".
    """
    try:
        ext = cert.extensions.get_extension_for_oid(HOST_ROLES_OID)
    except x509.ExtensionNotFound:
        raise ValueError("the certificate has no host roles extension") from None
    if not isinstance(ext.value, x509.UnrecognizedExtension):
        raise ValueError("the host roles extension has an unexpected form")
    try:
        return _decode_roles(ext.value.value)
    except (ValueError, UnicodeDecodeError):
        raise ValueError("the host roles extension is malformed") from None


# --- the CA ----------------------------------------------------------------------------------


def _utc_seconds(value: datetime) -> datetime:
    # X.509 and OpenSSH carry whole seconds; rounding here keeps our records equal to the certs.
    if not isinstance(value, datetime) or value.utcoffset() is None:
        raise ValueError("times must be timezone-aware datetimes")
    return value.astimezone(UTC).replace(microsecond=0)


@dataclass(frozen=True)
class HostCA:
    """The cluster's two signing keys and the TLS CA certificate; private keys live in memory.

    Construction checks that the parts belong together, so a swapped or corrupted database row
    fails here (CAKeyError) rather than producing certificates nobody can verify.
    """

    tls_key: ec.EllipticCurvePrivateKey = field(repr=False)
    tls_cert: x509.Certificate
    ssh_key: ed25519.Ed25519PrivateKey = field(repr=False)
    # What signing needs of the CA, encoded once (joins/leafcert.py, joins/sshcert.py).
    leaf_encoder: LeafEncoder = field(init=False, repr=False, compare=False)
    ssh_ca_key: CAKey = field(init=False, repr=False, compare=False)
    cluster_name: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.tls_key, ec.EllipticCurvePrivateKey) or not isinstance(
            self.tls_key.curve, ec.SECP256R1
        ):
            raise CAKeyError("the TLS CA key must be an ECDSA P-256 private key")
        if not isinstance(self.tls_cert, x509.Certificate):
            raise CAKeyError("the TLS CA certificate is not an X.509 certificate")
        if self.tls_cert.public_key() != self.tls_key.public_key():
            raise CAKeyError("the TLS CA certificate does not match the TLS CA private key")
        try:
            constraints = self.tls_cert.extensions.get_extension_for_class(x509.BasicConstraints)
        except x509.ExtensionNotFound:
            raise CAKeyError("the TLS CA certificate is not a CA certificate") from None
        if not constraints.value.ca:
            raise CAKeyError("the TLS CA certificate is not a CA certificate")
        if not isinstance(self.ssh_key, ed25519.Ed25519PrivateKey):
            raise CAKeyError("the SSH CA key must be an Ed25519 private key")
        names = self.tls_cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)
        if len(names) != 1:
            raise CAKeyError("the TLS CA certificate must name exactly one organisation")
        try:
            leaf_encoder = LeafEncoder(self.tls_key, self.tls_cert, roles_oid=HOST_ROLES_OID)
        except x509.ExtensionNotFound:
            raise CAKeyError("the TLS CA certificate has no subject key identifier") from None
        # The cluster this CA serves is the one written in its certificate's O attribute.
        value = names[0].value
        object.__setattr__(
            self, "cluster_name", value if isinstance(value, str) else value.decode()
        )
        object.__setattr__(self, "leaf_encoder", leaf_encoder)
        object.__setattr__(self, "ssh_ca_key", CAKey(self.ssh_key))

    @property
    def not_after(self) -> datetime:
        """End of the CA's validity; nothing it signs outlives it."""
        return self.tls_cert.not_valid_after_utc

    @property
    def tls_cert_pem(self) -> str:
        """The CA certificate for agents' trust stores."""
        return self.tls_cert.public_bytes(serialization.Encoding.PEM).decode("ascii")

    @property
    def ssh_public_key(self) -> str:
        """The SSH CA key as one authorized_keys/known_hosts line with a naming comment."""
        line = self.ssh_key.public_key().public_bytes(
            serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
        )
        return f"{line.decode('ascii')} host-ca@{self.cluster_name}"


def _random_serial(bits: int) -> int:
    return _serial(secrets.token_bytes(bits // 8))


def _serial(random: bytes) -> int:
    """A serial of 8 x len(random) bits from those random bytes: the top bit set (serials then
    have a fixed printed length and are never zero), the others random."""
    bits = 8 * len(random)
    return (int.from_bytes(random, "big") >> 1) | (1 << (bits - 1))


def generate_host_ca(
    cluster_name: str, now: datetime, validity: timedelta = DEFAULT_CA_VALIDITY
) -> HostCA:
    """Create a new cluster CA: a self-signed P-256 X.509 CA and an Ed25519 SSH CA key.

    The X.509 CA may sign leaves only (path length 0), so a leaked host certificate can never
    act as an intermediate. Raises CAUnusableError for an unusable cluster name.
    """
    cluster_name = _check_cluster_name(cluster_name)
    if validity <= CLOCK_SKEW:
        raise ValueError("validity must be longer than the clock-skew allowance")
    start = _utc_seconds(now)
    tls_key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, cluster_name),
            x509.NameAttribute(NameOID.COMMON_NAME, f"{cluster_name} Host CA"),
        ]
    )
    public = tls_key.public_key()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public)
        .serial_number(_random_serial(128))
        .not_valid_before(start - CLOCK_SKEW)
        .not_valid_after(start + validity)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .sign(tls_key, hashes.SHA256())
    )
    return HostCA(tls_key=tls_key, tls_cert=cert, ssh_key=ed25519.Ed25519PrivateKey.generate())


# --- issuing -------------------------------------------------------------------------------


@dataclass(frozen=True)
class IssuedCredentials:
    """What a host receives, with the facts the join service records about it."""

    tls_cert_pem: str
    tls_serial: str
    ssh_cert: str | None
    ssh_serial: int | None
    not_before: datetime
    not_after: datetime


def issue_host_credentials(
    ca: HostCA,
    *,
    host_id: str,
    node_name: str,
    roles: Sequence[str],
    tls_public_key: PublicKey,
    ssh_public_key: PublicKey | None,
    dns_names: Sequence[str],
    additional_principals: Sequence[str],
    cluster_name: str,
    now: datetime,
    ttl: timedelta,
    crl_url: str | None = None,
) -> IssuedCredentials:
    """Sign a host's TLS certificate and, when it sent an SSH key, its SSH host certificate.

    With `crl_url` the TLS certificate names it as its CRL distribution point (RFC 5280,
    4.2.1.13), so that relying parties that fetch CRLs find the list that may revoke it.

    Both name the host by host_id and node_name plus the requested DNS names and principals,
    and share one validity window: from a minute ago until now + ttl, never past the CA's own
    expiry. Raises KeyRejected (field named) for a weak key or a bad name, CAUnusableError when
    the CA cannot sign now or belongs to another cluster.
    """
    if cluster_name != ca.cluster_name:
        raise CAUnusableError(
            f"the CA belongs to cluster {ca.cluster_name!r}, not {str(cluster_name)[:80]!r}"
        )
    if ttl <= timedelta(0):
        raise ValueError("ttl must be positive")
    tls_key = _check_public_key(tls_public_key, "public_tls_key")
    ssh_key = (
        None if ssh_public_key is None else _check_public_key(ssh_public_key, "public_ssh_key")
    )
    host = _hostname(host_id, "host_id")
    if len(host) > 64:
        raise KeyRejected("host_id", "host_id: longer than the 64 characters a certificate allows.")
    node = _hostname(node_name, "node_name")
    role_list = _roles(roles)
    dns = [_hostname(name, "dns_names") for name in _name_list(dns_names, "dns_names")]
    extra = [
        _principal(value, "additional_principals")
        for value in _name_list(additional_principals, "additional_principals")
    ]

    start = _utc_seconds(now)
    ca_start, ca_end = ca.tls_cert.not_valid_before_utc, ca.not_after
    if ca_start > start:
        raise CAUnusableError(f"the CA is not valid before {ca_start.isoformat()}")
    if ca_end <= start:
        raise CAUnusableError(f"the CA expired at {ca_end.isoformat()}; rotate it")
    not_before = max(start - CLOCK_SKEW, ca_start)
    # Compared before adding so that an absurd ttl cannot overflow the datetime.
    not_after = ca_end if ttl >= ca_end - start else start + ttl

    # The certificate's names in order, each once: host names, then IP addresses as such.
    sans: dict[tuple[str, str], str | ipaddress.IPv4Address | ipaddress.IPv6Address] = {}
    principals: dict[str, None] = {}
    for value in [host, node, *dns, *extra]:
        sans.setdefault(("dns" if isinstance(value, str) else "ip", str(value)), value)
        principals.setdefault(str(value))

    # All the randomness a join's certificates take, in one read of the system's source:
    # the X.509 serial (128 bits), the SSH serial (64) and the SSH certificate's nonce.
    entropy = secrets.token_bytes(16 + 8 + NONCE_BYTES)
    serial = _serial(entropy[:16])
    tls_cert_pem = ca.leaf_encoder.issue(
        public_key=tls_key,
        serial=serial,
        not_before=not_before,
        not_after=not_after,
        organization=cluster_name,
        units=role_list,
        common_name=host,
        names=list(sans.values()),
        roles=_encode_roles(role_list),
        crl_url=crl_url,
    )

    ssh_cert: str | None = None
    ssh_serial: int | None = None
    if ssh_key is not None:
        ssh_serial = _serial(entropy[16:24])
        ssh_cert = host_certificate(
            ca.ssh_ca_key,
            ssh_key,
            serial=ssh_serial,
            key_id=host,
            principals=list(principals),
            valid_after=int(not_before.timestamp()),
            valid_before=int(not_after.timestamp()),
            nonce=entropy[24:],
        )

    return IssuedCredentials(
        tls_cert_pem=tls_cert_pem,
        tls_serial=format(serial, "x"),
        ssh_cert=ssh_cert,
        ssh_serial=ssh_serial,
        not_before=not_before,
        not_after=not_after,
    )


RECORD_FIELDS = (
    "cluster_name",
    "tls_cert_pem",
    "tls_key_encrypted",
    "ssh_public_key",
    "ssh_key_encrypted",
)


def ca_to_record(ca: HostCA, secret: str) -> dict[str, str]:
    """The CA as plain strings named like the database columns (see RECORD_FIELDS)."""
    return {
        "cluster_name": ca.cluster_name,
        "tls_cert_pem": ca.tls_cert_pem,
        "tls_key_encrypted": encrypt_private_key(ca.tls_key, secret, TLS_KEY_PURPOSE),
        "ssh_public_key": ca.ssh_public_key,
        "ssh_key_encrypted": encrypt_private_key(ca.ssh_key, secret, SSH_KEY_PURPOSE),
    }


def ca_from_record(record: Mapping[str, str] | Any, secret: str) -> HostCA:
    """Rebuild a HostCA from ca_to_record's strings, a mapping or any object with those fields.

    Every part is cross-checked (certificate against key, stored SSH public key against the
    decrypted key, cluster name against the certificate); raises CAKeyError on any mismatch.
    """

    def get(name: str) -> str:
        value = record.get(name) if isinstance(record, Mapping) else getattr(record, name, None)
        if not isinstance(value, str) or not value:
            raise CAKeyError(f"the CA record has no {name}")
        return value

    cert_pem = get("tls_cert_pem")
    if cert_pem.count("-----BEGIN") != 1:
        raise CAKeyError("the CA record's certificate must be exactly one PEM block")
    try:
        cert = x509.load_pem_x509_certificate(cert_pem.encode("ascii"))
    except (ValueError, UnicodeEncodeError):
        raise CAKeyError("the CA record's certificate does not parse") from None
    tls_key = decrypt_private_key(get("tls_key_encrypted"), secret, TLS_KEY_PURPOSE)
    ssh_key = decrypt_private_key(get("ssh_key_encrypted"), secret, SSH_KEY_PURPOSE)
    if not isinstance(tls_key, ec.EllipticCurvePrivateKey):
        raise CAKeyError("the CA record's TLS key is not an ECDSA key")
    if not isinstance(ssh_key, ed25519.Ed25519PrivateKey):
        raise CAKeyError("the CA record's SSH key is not an Ed25519 key")
    ca = HostCA(tls_key=tls_key, tls_cert=cert, ssh_key=ssh_key)
    if get("ssh_public_key").split()[:2] != ca.ssh_public_key.split()[:2]:
        raise CAKeyError("the CA record's SSH public key does not match its SSH private key")
    if get("cluster_name") != ca.cluster_name:
        raise CAKeyError("the CA record's cluster name differs from its certificate's")
    return ca
