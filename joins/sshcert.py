"""OpenSSH host certificates, encoded from the format's specification.

No Django import. Why not cryptography's `SSHCertificateBuilder`: on the join path it spent two
thirds of a certificate's cost outside the signature (it writes the host key out in OpenSSH form
and parses it back, validates each part in Python, then assembles the blob), about 35 us of
60 per join under load (bench/RESULTS.md, throughput). A host certificate has a fixed shape, so
it is written here directly, field after field, as PROTOCOL.certkeys of OpenSSH lays it out:

    string  "<key type>-cert-v01@openssh.com"
    string  nonce (32 random bytes: makes the signed data unpredictable)
    ...     the host key's own public fields (as in its public key blob, after the type)
    uint64  serial
    uint32  type (2: host)
    string  key id
    string  valid principals (each a string)
    uint64  valid after
    uint64  valid before
    string  critical options (none for host certificates)
    string  extensions (none for host certificates)
    string  reserved (empty)
    string  signature key (the CA's public key blob)
    string  signature over everything above

The CA key is Ed25519, whose signature is deterministic: given the same nonce, this encoder and
cryptography's builder produce the same bytes, which is what the tests hold them to
(tests/joins/test_sshcert.py); `ssh-keygen -L` reads what it writes.
"""

from __future__ import annotations

import base64
import os
import struct
from collections.abc import Sequence

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

HOST_CERT = 2
NONCE_BYTES = 32
_UINT64_MAX = 2**64 - 1
_CURVES = {"secp256r1": b"nistp256", "secp384r1": b"nistp384", "secp521r1": b"nistp521"}

PublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey


def ssh_string(data: bytes) -> bytes:
    """An SSH wire `string` (RFC 4251, 5): a 32-bit length, then the bytes."""
    return struct.pack(">I", len(data)) + data


def _mpint(value: int) -> bytes:
    # Non-negative: big-endian with a leading zero byte when the top bit is set (RFC 4251).
    return ssh_string(value.to_bytes(value.bit_length() // 8 + 1, "big") if value else b"")


def _key_blob(key: PublicKey) -> bytes:
    """The key's OpenSSH public key blob (RFC 4253, 5656, 8709): `string type`, then its
    public fields."""
    if isinstance(key, ed25519.Ed25519PublicKey):
        raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return ssh_string(b"ssh-ed25519") + ssh_string(raw)
    if isinstance(key, ec.EllipticCurvePublicKey):
        curve = _CURVES.get(key.curve.name)
        if curve is None:
            raise ValueError(f"no OpenSSH name for the curve {key.curve.name}")
        point = key.public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )
        return ssh_string(b"ecdsa-sha2-" + curve) + ssh_string(curve) + ssh_string(point)
    if isinstance(key, rsa.RSAPublicKey):
        numbers = key.public_numbers()
        return ssh_string(b"ssh-rsa") + _mpint(numbers.e) + _mpint(numbers.n)
    raise ValueError(f"{type(key).__name__} keys have no OpenSSH certificate type here")


class CAKey:
    """An Ed25519 SSH CA key with its public blob, encoded once instead of for each cert."""

    def __init__(self, private_key: ed25519.Ed25519PrivateKey) -> None:
        self._key = private_key
        self.public_blob = ssh_string(_key_blob(private_key.public_key()))

    def sign(self, data: bytes) -> bytes:
        """The OpenSSH signature blob of `data`: `string "ssh-ed25519"`, `string signature`."""
        return ssh_string(ssh_string(b"ssh-ed25519") + ssh_string(self._key.sign(data)))


def host_certificate(
    ca: CAKey,
    host_key: PublicKey,
    *,
    serial: int,
    key_id: str,
    principals: Sequence[str],
    valid_after: int,
    valid_before: int,
    nonce: bytes | None = None,
) -> str:
    """An OpenSSH host certificate for `host_key`, as one `<type> <base64>` line.

    Principals and the key id must already be checked names (ASCII); times are seconds since
    the epoch. `nonce`: 32 random bytes, fresh for each certificate (by default read here, as
    OpenSSH does; a caller that reads its randomness in one go passes its own).
    """
    if not 0 <= serial <= _UINT64_MAX:
        raise ValueError("serial must fit in 64 bits")
    if not 0 <= valid_after <= valid_before <= _UINT64_MAX:
        raise ValueError("the validity must be ordered seconds since the epoch")
    nonce = os.urandom(NONCE_BYTES) if nonce is None else nonce
    if len(nonce) != NONCE_BYTES:
        raise ValueError(f"the nonce must be {NONCE_BYTES} bytes")
    key_blob = _key_blob(host_key)
    (type_length,) = struct.unpack_from(">I", key_blob)
    key_type = key_blob[4 : 4 + type_length]
    cert_type = key_type + b"-cert-v01@openssh.com"
    signed = b"".join(
        (
            ssh_string(cert_type),
            ssh_string(nonce),
            key_blob[4 + type_length :],  # the key's public fields, already in wire form
            struct.pack(">QI", serial, HOST_CERT),
            ssh_string(key_id.encode("ascii")),
            ssh_string(b"".join(ssh_string(name.encode("ascii")) for name in principals)),
            struct.pack(">QQ", valid_after, valid_before),
            ssh_string(b""),  # critical options
            ssh_string(b""),  # extensions
            ssh_string(b""),  # reserved
            ca.public_blob,
        )
    )
    blob = signed + ca.sign(signed)
    return f"{cert_type.decode('ascii')} {base64.b64encode(blob).decode('ascii')}"
