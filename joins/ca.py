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

import base64
import binascii
import ipaddress
import os
import re
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidTag, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

PublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey
PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey

HOST_ROLES_OID = x509.ObjectIdentifier("2.25.214446185248403324578926939667762216225.1.1")

DEFAULT_CA_VALIDITY = timedelta(days=3652)
# Agents' clocks drift; a certificate valid from "now" would be refused for a minute by a peer
# whose clock runs behind ours.
CLOCK_SKEW = timedelta(minutes=1)

# Key strength bounds. The upper RSA bound keeps a request from making us handle huge numbers.
MIN_RSA_BITS = 2048
MAX_RSA_BITS = 8192
MIN_RSA_EXPONENT = 65537
ALLOWED_CURVES = (ec.SECP256R1, ec.SECP384R1)
SSH_KEY_TYPES = ("ssh-ed25519", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384", "ssh-rsa")

MAX_KEY_TEXT = 16 * 1024
MAX_NAMES = 64  # per list; keeps certificates small and under OpenSSH's principal limit
MAX_ROLES = 32
MAX_CLUSTER_NAME = 56  # "<name> Host CA" must fit the 64-character common name

# Purposes (HKDF info and AAD) of the two CA private keys when stored.
TLS_KEY_PURPOSE = "joinadmin host CA / tls"
SSH_KEY_PURPOSE = "joinadmin host CA / ssh"
MIN_SECRET_CHARS = 32
_BLOB_VERSION = "v1"
_HKDF_SALT = b"joinadmin ca private key wrap v1"
_NONCE_BYTES = 12
_MAX_BLOB = 64 * 1024

_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
_ROLE = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,63}")
_CLUSTER = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_PEM_BODY = re.compile(r"-----BEGIN PUBLIC KEY-----([A-Za-z0-9+/=\s]*)-----END PUBLIC KEY-----")
_PEM_LABEL = re.compile(r"-----BEGIN ([^-\r\n]{1,64})-----")


class KeyRejected(Exception):
    """A public key or a name from the request that we refuse to certify.

    `field` is the request field at fault; `message` says why and how to fix it, in words an
    operator can act on.
    """

    code = "invalid_request"

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


class CAError(Exception):
    """The CA itself cannot be used; a server-side problem, never the requester's fault."""

    code = "ca_error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class CAKeyError(CAError):
    """Stored CA material does not decrypt, does not parse or does not belong together."""

    code = "ca_key_invalid"


class CAUnusableError(CAError):
    """The CA cannot sign now: expired, not yet valid, or for another cluster."""

    code = "ca_unusable"


# --- agents' public keys -------------------------------------------------------------------


def _check_public_key(key: object, field: str) -> PublicKey:
    """Accept only key types and sizes we are willing to vouch for."""
    if isinstance(key, rsa.RSAPublicKey):
        bits, exponent = key.key_size, key.public_numbers().e
        if bits < MIN_RSA_BITS:
            raise KeyRejected(
                field,
                f"{field}: the RSA key has {bits} bits, below the minimum of {MIN_RSA_BITS}; "
                "generate a new key (Ed25519 or ECDSA P-256 preferred, RSA at least 2048 bits).",
            )
        if bits > MAX_RSA_BITS:
            raise KeyRejected(
                field,
                f"{field}: the RSA key has {bits} bits, above the maximum of {MAX_RSA_BITS}; "
                "use a key of 2048 to 4096 bits, or Ed25519 or ECDSA P-256.",
            )
        if exponent < MIN_RSA_EXPONENT or exponent % 2 == 0:
            raise KeyRejected(
                field,
                f"{field}: the RSA public exponent {exponent} is weak; generate a new key with "
                "the standard exponent 65537.",
            )
        return key
    if isinstance(key, ec.EllipticCurvePublicKey):
        if not isinstance(key.curve, ALLOWED_CURVES):
            raise KeyRejected(
                field,
                f"{field}: the elliptic curve {key.curve.name} is not accepted; use P-256 or "
                "P-384 (or Ed25519).",
            )
        return key
    if isinstance(key, ed25519.Ed25519PublicKey):
        return key
    name = type(key).__name__
    what = f"{name.removesuffix('PublicKey')} keys" if name.endswith("PublicKey") else "this value"
    raise KeyRejected(
        field,
        f"{field}: {what} cannot be certified; use Ed25519, ECDSA P-256/P-384 or RSA of at "
        "least 2048 bits.",
    )


def _require_text(value: object, field: str, what: str) -> str:
    if not isinstance(value, str):
        raise KeyRejected(field, f"{field}: expected {what} as a string.")
    if len(value) > MAX_KEY_TEXT:
        raise KeyRejected(
            field, f"{field}: {len(value)} characters is far too long for {what}; send one key."
        )
    return value


def load_public_tls_key(pem: str) -> PublicKey:
    """Parse the agent's TLS public key: exactly one PEM `PUBLIC KEY` (SubjectPublicKeyInfo).

    Private keys and certificates are named as such in the error, because sending the private
    key by mistake is the likeliest slip and the operator must learn it leaked. Raises
    KeyRejected(field="public_tls_key").
    """
    field_name = "public_tls_key"
    text = _require_text(pem, field_name, "a PEM public key").strip()
    labels = _PEM_LABEL.findall(text)
    if not labels:
        raise KeyRejected(
            field_name,
            f"{field_name}: not a PEM block; send the key as '-----BEGIN PUBLIC KEY-----' "
            "(for example from 'openssl pkey -pubout').",
        )
    if len(labels) > 1:
        raise KeyRejected(
            field_name, f"{field_name}: {len(labels)} PEM blocks found; send exactly one key."
        )
    label = labels[0]
    if "PRIVATE KEY" in label:
        raise KeyRejected(
            field_name,
            f"{field_name}: this is a private key, which must never leave the host; send only "
            "its public half ('openssl pkey -pubout') and consider this private key exposed.",
        )
    if "CERTIFICATE" in label:
        raise KeyRejected(
            field_name,
            f"{field_name}: this is a certificate; send the bare public key "
            "('openssl x509 -pubkey -noout').",
        )
    if label == "RSA PUBLIC KEY":
        raise KeyRejected(
            field_name,
            f"{field_name}: PKCS#1 'RSA PUBLIC KEY' is not accepted; convert it to "
            "SubjectPublicKeyInfo with 'openssl rsa -RSAPublicKey_in -pubout'.",
        )
    match = _PEM_BODY.fullmatch(text)
    if match is None:
        raise KeyRejected(
            field_name,
            f"{field_name}: expected one '-----BEGIN PUBLIC KEY-----' block and nothing else "
            f"(found '{label}' or extra text); send the output of 'openssl pkey -pubout'.",
        )
    try:
        der = base64.b64decode("".join(match.group(1).split()), validate=True)
        key = serialization.load_der_public_key(der)
    except (ValueError, UnsupportedAlgorithm):
        raise KeyRejected(
            field_name,
            f"{field_name}: the PEM body is not a valid public key; regenerate it with "
            "'openssl pkey -pubout'.",
        ) from None
    return _check_public_key(key, field_name)


def load_public_ssh_key(text: str) -> PublicKey:
    """Parse the agent's SSH public key: one OpenSSH line, `<type> <base64> [comment]`.

    The type is checked by name before parsing because the parser would silently take the key
    out of a certificate. Raises KeyRejected(field="public_ssh_key").
    """
    field_name = "public_ssh_key"
    line = _require_text(text, field_name, "an OpenSSH public key").strip()
    if "\n" in line or "\r" in line:
        raise KeyRejected(
            field_name, f"{field_name}: several lines found; send one OpenSSH public key line."
        )
    parts = line.split(None, 2)
    if len(parts) < 2:
        raise KeyRejected(
            field_name,
            f"{field_name}: expected '<type> <base64> [comment]' as in a .pub file, "
            "e.g. 'ssh-ed25519 AAAA... host'.",
        )
    key_type, body = parts[0], parts[1]
    if key_type.endswith("-cert-v01@openssh.com"):
        raise KeyRejected(
            field_name,
            f"{field_name}: this is an SSH certificate; send the plain public key (the .pub "
            "file), which we certify.",
        )
    if key_type == "ssh-dss":
        raise KeyRejected(
            field_name, f"{field_name}: DSA keys are not accepted; use ssh-ed25519 or ECDSA."
        )
    if key_type not in SSH_KEY_TYPES:
        raise KeyRejected(
            field_name,
            f"{field_name}: key type {key_type[:40]!r} is not accepted; use one of "
            f"{', '.join(SSH_KEY_TYPES)}.",
        )
    try:
        key = serialization.load_ssh_public_key(f"{key_type} {body}".encode("ascii"))
    except (ValueError, UnsupportedAlgorithm, UnicodeEncodeError):
        raise KeyRejected(
            field_name,
            f"{field_name}: the key does not parse as {key_type}; send the .pub file's line "
            "unchanged.",
        ) from None
    return _check_public_key(key, field_name)


# --- names ---------------------------------------------------------------------------------


def _is_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def _hostname(value: object, field: str) -> str:
    """A DNS host name (RFC 1123) in lower case, without a trailing dot; wildcards refused."""
    if not isinstance(value, str):
        raise KeyRejected(field, f"{field}: expected host names as strings.")
    shown = value[:80]
    if not value:
        raise KeyRejected(field, f"{field}: an empty name is not a host name.")
    if "*" in value:
        raise KeyRejected(
            field, f"{field}: {shown!r} is a wildcard; certificates name exact hosts only."
        )
    if not value.isascii():
        raise KeyRejected(
            field,
            f"{field}: {shown!r} has non-ASCII characters; give internationalised names in "
            "their 'xn--' form.",
        )
    # A trailing dot marks the same name as absolute; certificates carry it without.
    name = value.lower().removesuffix(".")
    if len(name) > 253:
        raise KeyRejected(field, f"{field}: {shown!r}... is longer than 253 characters.")
    labels = name.split(".")
    if _is_ip(name) or labels[-1].isdigit():
        raise KeyRejected(
            field,
            f"{field}: {shown!r} is (or looks like) an IP address; give IP addresses in "
            "additional_principals.",
        )
    for label in labels:
        if not _LABEL.fullmatch(label):
            raise KeyRejected(
                field,
                f"{field}: {shown!r} is not a valid host name; each dot-separated part must be "
                "1-63 letters, digits or hyphens, not starting or ending with a hyphen.",
            )
    return name


def _principal(value: object, field: str) -> str | ipaddress.IPv4Address | ipaddress.IPv6Address:
    """An IP address when the value parses as one, else a host name."""
    if isinstance(value, str):
        try:
            address = ipaddress.ip_address(value)
        except ValueError:
            pass
        else:
            if isinstance(address, ipaddress.IPv6Address) and address.scope_id:
                raise KeyRejected(
                    field, f"{field}: {value!r} has a zone index; give the address without it."
                )
            return address
    return _hostname(value, field)


def _name_list(values: Sequence[str], field: str) -> list[str]:
    if isinstance(values, str | bytes) or not isinstance(values, Sequence):
        raise KeyRejected(field, f"{field}: expected a list of names.")
    if len(values) > MAX_NAMES:
        raise KeyRejected(field, f"{field}: {len(values)} names; at most {MAX_NAMES} allowed.")
    return list(values)


def check_host_names(
    *, node_name: str, dns_names: Sequence[str], additional_principals: Sequence[str]
) -> None:
    """Refuse the names a join asks for before any other check runs, with the same rules the
    issuance applies, so that a bad name is an `invalid_request` and never a late failure."""
    if node_name:
        _hostname(node_name, "node_name")
    for name in _name_list(dns_names, "dns_names"):
        _hostname(name, "dns_names")
    for name in _name_list(additional_principals, "additional_principals"):
        _principal(name, "additional_principals")


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


def _der_tlv(tag: int, content: bytes) -> bytes:
    length = len(content)
    if length < 0x80:
        return bytes([tag, length]) + content
    size = length.to_bytes((length.bit_length() + 7) // 8, "big")
    return bytes([tag, 0x80 | len(size)]) + size + content


def _encode_roles(roles: Sequence[str]) -> bytes:
    return _der_tlv(0x30, b"".join(_der_tlv(0x0C, role.encode("utf-8")) for role in roles))


def _decode_roles(data: bytes) -> list[str]:
    def read(buf: bytes, pos: int, tag: int) -> tuple[bytes, int]:
        if pos + 2 > len(buf) or buf[pos] != tag:
            raise ValueError("unexpected tag")
        length, pos = buf[pos + 1], pos + 2
        if length & 0x80:
            count = length & 0x7F
            if not 1 <= count <= 2 or pos + count > len(buf):
                raise ValueError("bad length")
            length, pos = int.from_bytes(buf[pos : pos + count], "big"), pos + count
        if pos + length > len(buf):
            raise ValueError("truncated")
        return buf[pos : pos + length], pos + length

    body, end = read(data, 0, 0x30)
    if end != len(data):
        raise ValueError("trailing data")
    roles, pos = [], 0
    while pos < len(body):
        value, pos = read(body, pos, 0x0C)
        roles.append(value.decode("utf-8"))
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

    @property
    def cluster_name(self) -> str:
        """The cluster this CA serves, as written in its certificate's O attribute."""
        value = self.tls_cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value
        return value if isinstance(value, str) else value.decode()

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
    # Top bit set: serials then have a fixed printed length and are never zero.
    return secrets.randbits(bits - 1) | (1 << (bits - 1))


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


def _leaf_key_usage(key: PublicKey) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=isinstance(key, rsa.RSAPublicKey),
        data_encipherment=False,
        key_agreement=isinstance(key, ec.EllipticCurvePublicKey),
        key_cert_sign=False,
        crl_sign=False,
        encipher_only=False,
        decipher_only=False,
    )


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
) -> IssuedCredentials:
    """Sign a host's TLS certificate and, when it sent an SSH key, its SSH host certificate.

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

    sans: dict[tuple[str, str], x509.GeneralName] = {}
    principals: dict[str, None] = {}
    for value in [host, node, *dns, *extra]:
        if isinstance(value, str):
            sans.setdefault(("dns", value), x509.DNSName(value))
        else:
            sans.setdefault(("ip", str(value)), x509.IPAddress(value))
        principals.setdefault(str(value))

    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, cluster_name),
            *(x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, role) for role in role_list),
            x509.NameAttribute(NameOID.COMMON_NAME, host),
        ]
    )
    ca_ski = ca.tls_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    serial = _random_serial(128)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca.tls_cert.subject)
        .public_key(tls_key)
        .serial_number(serial)
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_leaf_key_usage(tls_key), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .add_extension(x509.SubjectAlternativeName(list(sans.values())), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(tls_key), critical=False)
        .add_extension(
            x509.UnrecognizedExtension(HOST_ROLES_OID, _encode_roles(role_list)), critical=False
        )
        .sign(ca.tls_key, hashes.SHA256())
    )

    ssh_cert: str | None = None
    ssh_serial: int | None = None
    if ssh_key is not None:
        ssh_serial = _random_serial(64)
        ssh_cert = (
            serialization.SSHCertificateBuilder()
            .public_key(ssh_key)
            .serial(ssh_serial)
            .type(serialization.SSHCertificateType.HOST)
            .key_id(host.encode("ascii"))
            .valid_principals([p.encode("ascii") for p in principals])
            .valid_after(int(not_before.timestamp()))
            .valid_before(int(not_after.timestamp()))
            .sign(ca.ssh_key)
            .public_bytes()
            .decode("ascii")
        )

    return IssuedCredentials(
        tls_cert_pem=cert.public_bytes(serialization.Encoding.PEM).decode("ascii"),
        tls_serial=format(serial, "x"),
        ssh_cert=ssh_cert,
        ssh_serial=ssh_serial,
        not_before=not_before,
        not_after=not_after,
    )


# --- CA keys at rest -----------------------------------------------------------------------


def _aead(secret: str, purpose: str) -> AESGCM:
    if not isinstance(secret, str) or len(secret) < MIN_SECRET_CHARS:
        raise CAKeyError(
            f"the key-encryption secret must be a string of at least {MIN_SECRET_CHARS} characters"
        )
    if not isinstance(purpose, str) or not purpose:
        raise CAKeyError("a non-empty purpose is required")
    key = HKDF(
        algorithm=hashes.SHA256(), length=32, salt=_HKDF_SALT, info=purpose.encode("utf-8")
    ).derive(secret.encode("utf-8"))
    return AESGCM(key)


def encrypt_private_key(key: PrivateKey, secret: str, purpose: str) -> str:
    """Seal a CA private key for storage as "v1:<b64 nonce>:<b64 ciphertext>".

    The purpose both derives the key and authenticates the blob, so a blob stored for one CA
    key cannot be passed off as another. Raises CAKeyError for a short secret or odd key.
    """
    if not isinstance(
        key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey
    ):
        raise CAKeyError("only RSA, ECDSA and Ed25519 private keys can be sealed")
    aead = _aead(secret, purpose)
    der = key.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    nonce = os.urandom(_NONCE_BYTES)
    sealed = aead.encrypt(nonce, der, purpose.encode("utf-8"))
    return ":".join(
        (_BLOB_VERSION, base64.b64encode(nonce).decode(), base64.b64encode(sealed).decode())
    )


def decrypt_private_key(blob: str, secret: str, purpose: str) -> PrivateKey:
    """Open a blob from encrypt_private_key.

    Raises CAKeyError for a wrong secret or purpose, any changed byte, or an unknown format;
    never returns a key that was not sealed with exactly these inputs.
    """
    if not isinstance(blob, str) or len(blob) > _MAX_BLOB:
        raise CAKeyError("the sealed key is not a string of sensible length")
    parts = blob.strip().split(":")
    if len(parts) != 3 or parts[0] != _BLOB_VERSION:
        raise CAKeyError("the sealed key is not in the 'v1:<nonce>:<ciphertext>' format")
    aead = _aead(secret, purpose)
    try:
        nonce = base64.b64decode(parts[1], validate=True)
        sealed = base64.b64decode(parts[2], validate=True)
    except binascii.Error:
        raise CAKeyError("the sealed key is not valid base64") from None
    if len(nonce) != _NONCE_BYTES:
        raise CAKeyError("the sealed key has a nonce of the wrong size")
    try:
        der = aead.decrypt(nonce, sealed, purpose.encode("utf-8"))
    except InvalidTag:
        raise CAKeyError(
            "the sealed key does not open: wrong secret, wrong purpose, or the data was changed"
        ) from None
    try:
        key = serialization.load_der_private_key(der, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise CAKeyError("the sealed data is not a PKCS#8 private key") from None
    if not isinstance(
        key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey
    ):
        raise CAKeyError("the sealed private key is of an unsupported type")
    return key


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
