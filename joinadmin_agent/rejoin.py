"""Re-join: prove to the server that this host still holds the key it was last certified for.

A host that joined once is refused as "already joined" when it presents its identity document
again, because anyone on the instance can read that document. When the data dir still holds the
host's TLS key, the agent asks the server for a challenge (``POST /api/v1/join/challenge``) and
signs, with that key, a message binding the challenge, the host id, the SHA-256 of the document
it sends and the public keys it wants certified. The server checks the signature with the public
key it recorded when it issued the previous certificate, so a copied document alone opens
nothing. The token must allow it (``spec.allow_rejoin``); the server explains the rest in
``joins/rejoin.py``.

The message must be byte for byte the one the server builds, so its layout is fixed here::

    joinadmin-rejoin-v1
    challenge=<the challenge, canonical base64>
    host_id=<accountId>-<instanceId>
    document_sha256=<hex SHA-256 of the document text without ASCII whitespace>
    public_tls_key_sha256=<hex SHA-256 of the TLS key's DER SubjectPublicKeyInfo>
    public_ssh_key_sha256=<hex SHA-256 of the SSH key's "<type> <base64>" line, or none>

each line ending in a newline. ECDSA keys sign with the hash of their curve (SHA-256 for
P-256, DER signature), Ed25519 keys sign the message itself.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Callable

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

MESSAGE_HEADER = b"joinadmin-rejoin-v1"
_ASCII_WHITESPACE = " \t\r\n\v\f"

PublicKey = ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey
PrivateKey = ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey


def rejoin_message(
    *,
    challenge: str,
    host_id: str,
    document: str,
    tls_public_key: PublicKey,
    ssh_public_key: PublicKey | None,
) -> bytes:
    """The bytes the re-join signature covers (see the module docstring).

    Raises ValueError when the challenge is not base64 or the host id could break a line.
    """
    try:
        raw = base64.b64decode("".join(challenge.split()), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("the server's challenge is not base64") from None
    if not host_id.isascii() or any(char in host_id for char in "\r\n=") or not host_id:
        raise ValueError(f"{host_id!r} cannot be put into the re-join message")
    compact = document.translate(str.maketrans("", "", _ASCII_WHITESPACE))
    tls_der = tls_public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    ssh_digest = (
        hashlib.sha256(
            ssh_public_key.public_bytes(
                serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
            )
        ).hexdigest()
        if ssh_public_key is not None
        else "none"
    )
    lines = [
        MESSAGE_HEADER,
        b"challenge=" + base64.b64encode(raw),
        b"host_id=" + host_id.encode("ascii"),
        b"document_sha256=" + hashlib.sha256(compact.encode("utf-8")).hexdigest().encode(),
        b"public_tls_key_sha256=" + hashlib.sha256(tls_der).hexdigest().encode(),
        b"public_ssh_key_sha256=" + ssh_digest.encode(),
    ]
    return b"\n".join(lines) + b"\n"


def sign(private_key: PrivateKey, message: bytes) -> bytes:
    """Sign the message the way the server verifies it."""
    if isinstance(private_key, ec.EllipticCurvePrivateKey):
        size = private_key.curve.key_size
        digest: hashes.HashAlgorithm = (
            hashes.SHA512() if size > 384 else hashes.SHA384() if size > 256 else hashes.SHA256()
        )
        return private_key.sign(message, ec.ECDSA(digest))
    if isinstance(private_key, ed25519.Ed25519PrivateKey):
        return private_key.sign(message)
    raise TypeError(f"cannot make a re-join proof with a {type(private_key).__name__}")


def proof_signer(
    *,
    host_id: str,
    document: str,
    signing_key: PrivateKey,
    tls_public_key: PublicKey,
    ssh_public_key: PublicKey | None,
) -> Callable[[str], str]:
    """A function from a challenge to the base64 signature the ``rejoin`` block carries.

    ``signing_key`` is the key the server last certified; the public keys are the ones this
    request asks to be certified (the same keys, as long as the agent keeps its key pairs).
    """

    def signer(challenge: str) -> str:
        message = rejoin_message(
            challenge=challenge,
            host_id=host_id,
            document=document,
            tls_public_key=tls_public_key,
            ssh_public_key=ssh_public_key,
        )
        return base64.b64encode(sign(signing_key, message)).decode("ascii")

    return signer
