"""Sealing the CA private keys for storage: AES-GCM under a key derived from a server secret.

No Django import. The database holds only sealed blobs ("v1:<nonce>:<ciphertext>"), so a copy
of it alone does not let anyone sign host certificates. The purpose string both derives the key
and authenticates the blob, so that one stored key cannot be swapped in for another.
"""

from __future__ import annotations

import base64
import binascii
import os

from cryptography.exceptions import InvalidTag, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from joins.ca_errors import CAKeyError

__all__ = ["MIN_SECRET_CHARS", "PrivateKey", "decrypt_private_key", "encrypt_private_key"]

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey

MIN_SECRET_CHARS = 32
_BLOB_VERSION = "v1"
_HKDF_SALT = b"joinadmin ca private key wrap v1"
_NONCE_BYTES = 12
_MAX_BLOB = 64 * 1024

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
