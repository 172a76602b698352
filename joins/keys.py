"""What a joining host asks us to certify: its public keys and the names it claims.

No Django import. A join request carries a TLS public key (PEM), an SSH public key (an OpenSSH
line) and host names; each is checked here before anything is signed, with a `KeyRejected` that
names the request field and tells the operator how to fix it. `joins.request` uses these checks
to refuse a bad request early, and `joins.ca` applies the same ones again at issuance.
"""

from __future__ import annotations

import base64
import ipaddress
import re
from collections.abc import Sequence

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

__all__ = [
    "ALLOWED_CURVES",
    "MAX_KEY_TEXT",
    "MAX_NAMES",
    "MAX_RSA_BITS",
    "MIN_RSA_BITS",
    "MIN_RSA_EXPONENT",
    "SSH_KEY_TYPES",
    "KeyRejected",
    "PublicKey",
    "check_host_names",
    "load_public_ssh_key",
    "load_public_tls_key",
]

PublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey

# Key strength bounds. The upper RSA bound keeps a request from making us handle huge numbers.
MIN_RSA_BITS = 2048
MAX_RSA_BITS = 8192
MIN_RSA_EXPONENT = 65537
ALLOWED_CURVES = (ec.SECP256R1, ec.SECP384R1)
SSH_KEY_TYPES = ("ssh-ed25519", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384", "ssh-rsa")

MAX_KEY_TEXT = 16 * 1024
MAX_NAMES = 64  # per list; keeps certificates small and under OpenSSH's principal limit

_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
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
    # An IPv4 address ends in digits; an IPv6 address has colons (no host name has either).
    if labels[-1].isdigit() or (":" in name and _is_ip(name)):
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
