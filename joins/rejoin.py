"""Re-join: a registered host proves it is still the same host, without an admin.

A host that joined once is refused `instance_already_joined` on every later join, because its
identity document is a bearer credential that any process on the instance (or an SSRF through
IMDSv1) can read. Yet a host whose agent lost nothing must be able to get new credentials after a
reboot, a stop/start or when its certificate expires. The identity document cannot say "now":
AWS signs it at launch and re-signs it only when the instance starts again, so a rebooted
instance presents the same document and a restarted one a newer `pendingTime`. Freshness and
continuity therefore come from two other things:

* a **challenge** from the server, fresh for every attempt, authenticated by the server (HMAC),
  bound to one host id, valid for `CHALLENGE_TTL_SECONDS`, and single use;
* a **signature** over that challenge with the private key of the TLS certificate the server
  last issued to this host (the server recorded the public key at issuance), over a canonical
  message that also names the host id, the SHA-256 of the submitted document and the new public
  keys the certificates are to be issued for.

The join service then also requires the document to be AWS-signed for the same instance, its
`pendingTime` to be no older than the one recorded at the host's last join, the token to allow
re-joins (`spec.allow_rejoin`) and to be the one the host joined with, its allow rules to still
match and the instance to be running. The proof replaces the token's `aws_iid_ttl` for re-joins.

Threat model (what the proof stops, and what it cannot):

* Someone holding only the document (any local process, SSRF, a leaked log) has no key: refused
  `rejoin_proof_invalid`; without a proof, `instance_already_joined` as before.
* Another registered host B holding its own key and A's document: the signature is checked with
  A's registered key only, so B's proof is refused; a challenge issued for B does not open A.
* A captured re-join request replayed: its challenge is spent (single use) or expired after a
  minute. Even before that, the signature binds the new public keys, so a replay could only
  obtain certificates for the legitimate host's own keys.
* A stolen key with an old document (e.g. an old backup of the data dir): once the instance was
  started again and re-joined, the recorded `pendingTime` moved on and the old document is
  refused `iid_replayed`. A stolen key *with* the current document is a full impersonation the
  server cannot tell apart; it is bounded by the running-instance check, recorded (every re-join
  is an attempt row with a `rejoin` trace entry and raises the host's `join_count`), and ended by
  forgetting or revoking the host, or by turning `allow_rejoin` off on the token.
* A forged or altered challenge fails its HMAC; the challenge endpoint keeps no state, answers
  alike for every well-formed host id (it is no oracle of which hosts are registered) and is
  rate limited, so strangers can neither fill a store nor learn anything from it.

Why the challenge is stateless rather than kept in the cache: the default deployment runs
several gunicorn processes with an in-process cache, so a challenge issued by one process would
be unknown to the next. An HMAC-authenticated challenge verifies on every process and server
that shares the secret key (which they must share anyway, to use the CA). Single use is kept in
the database, on the host row: a challenge is accepted only if it was issued after the one that
allowed the host's previous re-join, and accepting it records its issue time in the same
transaction that issues the certificates.

No Django here: the service passes in the secret and the clock, tests and tools call it alike.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import secrets
import struct
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

PublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey
PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey

REJOIN_CHALLENGE_INVALID = "rejoin_challenge_invalid"
REJOIN_PROOF_INVALID = "rejoin_proof_invalid"

CHALLENGE_TTL_SECONDS = 60
# Servers behind one name may disagree a little on the time; a challenge issued by a server
# whose clock runs ahead must still be accepted by the others.
CHALLENGE_CLOCK_SKEW_SECONDS = 30
MESSAGE_HEADER = b"joinadmin-rejoin-v1"
# An RSA-8192 signature is 1 KiB; anything longer is not a signature of an accepted key.
MAX_SIGNATURE_BYTES = 1024
MAX_CHALLENGE_CHARS = 256

_VERSION = 1
_NONCE_BYTES = 24
_MAC_BYTES = 32
# version (1) | issued, microseconds since the epoch (8, big endian) | nonce (24) | HMAC (32)
_LAYOUT = struct.Struct(f">BQ{_NONCE_BYTES}s")
CHALLENGE_BYTES = _LAYOUT.size + _MAC_BYTES
_HKDF_INFO = b"joinadmin rejoin challenge v1"
_HOST_ID = re.compile(r"[0-9]{12}-i-(?:[0-9a-f]{8}|[0-9a-f]{17})")
_ASCII_WHITESPACE = " \t\r\n\v\f"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class RejoinError(Exception):
    """A re-join proof refused; `code` is `REJOIN_CHALLENGE_INVALID` or `REJOIN_PROOF_INVALID`.

    `message` is what the agent is told, `reason` the exact cause for the auditor.
    """

    def __init__(self, code: str, message: str, reason: str = "") -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.reason = reason or message


@dataclass(frozen=True)
class RejoinProof:
    """The `rejoin` block of a join request, as the agent sent it (shape checked only)."""

    challenge: str
    signature: bytes


@dataclass(frozen=True)
class IssuedChallenge:
    """What the challenge endpoint answers."""

    text: str
    host_id: str
    issued_at: datetime
    expires: datetime


@dataclass(frozen=True)
class Challenge:
    """A challenge that passed `open_challenge`: ours, for this host, not expired."""

    raw: bytes
    host_id: str
    issued_us: int

    @property
    def issued_at(self) -> datetime:
        return _EPOCH + timedelta(microseconds=self.issued_us)

    @property
    def text(self) -> str:
        """The canonical base64 form, the one the signed message carries."""
        return base64.b64encode(self.raw).decode("ascii")


def is_host_id(value: object) -> bool:
    """Whether `value` is an EC2 host id, `<12-digit account>-<instance id>`."""
    return isinstance(value, str) and _HOST_ID.fullmatch(value) is not None


def challenge_key(secret: str | bytes) -> bytes:
    """The HMAC key of challenges, derived from the server's secret for this purpose only."""
    material = secret.encode("utf-8") if isinstance(secret, str) else secret
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_HKDF_INFO).derive(material)


def epoch_us(moment: datetime) -> int:
    """Microseconds since the epoch: a challenge's issue time, as the host row records it."""
    delta = moment.astimezone(UTC) - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def _mac(key: bytes, host_id: str, body: bytes) -> bytes:
    return hmac.new(key, b"%s\n%s\n" % (host_id.encode("ascii"), body), hashlib.sha256).digest()


def issue_challenge(key: bytes, host_id: str, now: datetime) -> IssuedChallenge:
    """A new challenge for `host_id`, valid `CHALLENGE_TTL_SECONDS` from `now`.

    Raises ValueError for a string that is not a host id (the caller checked it already).
    """
    if not is_host_id(host_id):
        raise ValueError(f"{host_id!r} is not a host id")
    issued_us = epoch_us(now)
    body = _LAYOUT.pack(_VERSION, issued_us, secrets.token_bytes(_NONCE_BYTES))
    raw = body + _mac(key, host_id, body)
    issued_at = _EPOCH + timedelta(microseconds=issued_us)
    return IssuedChallenge(
        text=base64.b64encode(raw).decode("ascii"),
        host_id=host_id,
        issued_at=issued_at,
        expires=issued_at + timedelta(seconds=CHALLENGE_TTL_SECONDS),
    )


def _challenge_refused(message: str, reason: str) -> RejoinError:
    return RejoinError(REJOIN_CHALLENGE_INVALID, message, reason)


def open_challenge(key: bytes, text: str, host_id: str, now: datetime) -> Challenge:
    """Check that `text` is a challenge this cluster issued for `host_id` and that it is current.

    Whether it was already used is the caller's to check (it needs the host row). Raises
    RejoinError(REJOIN_CHALLENGE_INVALID) saying which property failed.
    """
    try:
        raw = base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError):
        raise _challenge_refused(
            "the re-join challenge is not base64; ask for a new one",
            "the rejoin.challenge is not base64",
        ) from None
    if len(raw) != CHALLENGE_BYTES or raw[0] != _VERSION:
        raise _challenge_refused(
            "the re-join challenge is not one this server issues; ask for a new one",
            f"the challenge has {len(raw)} bytes (version {raw[0] if raw else '-'}); "
            f"a version {_VERSION} challenge has {CHALLENGE_BYTES}",
        )
    body, mac = raw[: _LAYOUT.size], raw[_LAYOUT.size :]
    if not hmac.compare_digest(mac, _mac(key, host_id, body)):
        raise _challenge_refused(
            f"the re-join challenge was not issued for host {host_id}; ask for a new one "
            "naming this host",
            f"the challenge's HMAC does not verify for host {host_id}: it was issued for another "
            "host, altered, or issued under another secret key",
        )
    _, issued_us, _ = _LAYOUT.unpack(body)
    challenge = Challenge(raw=raw, host_id=host_id, issued_us=issued_us)
    age = now - challenge.issued_at
    if age > timedelta(seconds=CHALLENGE_TTL_SECONDS):
        raise _challenge_refused(
            f"the re-join challenge expired (challenges are valid {CHALLENGE_TTL_SECONDS}s); "
            "ask for a new one",
            f"the challenge was issued at {challenge.issued_at.isoformat()}, "
            f"{age.total_seconds():.0f}s before {now.isoformat()}; it is valid "
            f"{CHALLENGE_TTL_SECONDS}s",
        )
    if age < -timedelta(seconds=CHALLENGE_CLOCK_SKEW_SECONDS):
        raise _challenge_refused(
            "the re-join challenge is from the future; check the join servers' clocks",
            f"the challenge was issued at {challenge.issued_at.isoformat()}, "
            f"{-age.total_seconds():.0f}s after {now.isoformat()}; "
            f"{CHALLENGE_CLOCK_SKEW_SECONDS}s of skew between servers are allowed",
        )
    return challenge


# --- the signed message ----------------------------------------------------------------------


def document_digest(document: str) -> str:
    """SHA-256 (hex) of the submitted document text with all ASCII whitespace removed.

    IMDS serves the base64 in lines; removing whitespace makes the digest independent of how the
    text was wrapped on the way, while any change of a base64 character changes it.
    """
    compact = document.translate(str.maketrans("", "", _ASCII_WHITESPACE))
    return hashlib.sha256(compact.encode("utf-8")).hexdigest()


def tls_key_digest(public_key: PublicKey) -> str:
    """SHA-256 (hex) of the key's DER SubjectPublicKeyInfo."""
    der = public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(der).hexdigest()


def ssh_key_digest(public_key: PublicKey | None) -> str:
    """SHA-256 (hex) of the key's OpenSSH line `<type> <base64>` (no comment), or `none`."""
    if public_key is None:
        return "none"
    line = public_key.public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    return hashlib.sha256(line).hexdigest()


def rejoin_message(
    *,
    challenge: str,
    host_id: str,
    document: str,
    tls_public_key: PublicKey,
    ssh_public_key: PublicKey | None,
) -> bytes:
    """The exact bytes a re-join signature covers (ASCII, one `name=value` per line)::

        joinadmin-rejoin-v1
        challenge=<the challenge, canonical base64>
        host_id=<accountId>-<instanceId>
        document_sha256=<hex, see document_digest>
        public_tls_key_sha256=<hex of the new TLS key's DER SubjectPublicKeyInfo>
        public_ssh_key_sha256=<hex of the new SSH key's OpenSSH line, or none>

    Every value is base64, hex or a host id, so no value can contain a line break or pose as
    another field. The agent builds the same bytes (joinadmin_agent/rejoin.py).
    """
    try:
        raw = base64.b64decode("".join(challenge.split()), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("the challenge is not base64") from None
    if not is_host_id(host_id):
        raise ValueError(f"{host_id!r} is not a host id")
    lines = [
        MESSAGE_HEADER,
        b"challenge=" + base64.b64encode(raw),
        b"host_id=" + host_id.encode("ascii"),
        b"document_sha256=" + document_digest(document).encode("ascii"),
        b"public_tls_key_sha256=" + tls_key_digest(tls_public_key).encode("ascii"),
        b"public_ssh_key_sha256=" + ssh_key_digest(ssh_public_key).encode("ascii"),
    ]
    return b"\n".join(lines) + b"\n"


def _ecdsa_hash(curve: ec.EllipticCurve) -> hashes.HashAlgorithm:
    # The hash that matches the curve's strength, as in JOSE's ES256/ES384/ES512.
    if curve.key_size > 384:
        return hashes.SHA512()
    if curve.key_size > 256:
        return hashes.SHA384()
    return hashes.SHA256()


def _pss() -> padding.PSS:
    return padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=padding.PSS.DIGEST_LENGTH)


def sign_message(private_key: PrivateKey, message: bytes) -> bytes:
    """Sign as `verify_signature` expects: ECDSA (DER, hash by curve), Ed25519, RSA-PSS SHA-256."""
    if isinstance(private_key, ec.EllipticCurvePrivateKey):
        return private_key.sign(message, ec.ECDSA(_ecdsa_hash(private_key.curve)))
    if isinstance(private_key, ed25519.Ed25519PrivateKey):
        return private_key.sign(message)
    if isinstance(private_key, rsa.RSAPrivateKey):
        return private_key.sign(message, _pss(), hashes.SHA256())
    raise TypeError(f"cannot sign with a {type(private_key).__name__}")


def verify_signature(public_key: PublicKey, message: bytes, signature: bytes) -> None:
    """Check a re-join signature; raises RejoinError(REJOIN_PROOF_INVALID) if it does not verify.

    Accepted: ECDSA with the curve's hash (SHA-256 for P-256, SHA-384 for P-384) and a DER
    signature; Ed25519; RSA-PSS with SHA-256, MGF1-SHA-256 and a 32-byte salt. One scheme per
    key type, so that no choice is left to the sender.
    """
    try:
        if isinstance(public_key, ec.EllipticCurvePublicKey):
            public_key.verify(signature, message, ec.ECDSA(_ecdsa_hash(public_key.curve)))
        elif isinstance(public_key, ed25519.Ed25519PublicKey):
            public_key.verify(signature, message)
        elif isinstance(public_key, rsa.RSAPublicKey):
            public_key.verify(signature, message, _pss(), hashes.SHA256())
        else:
            raise RejoinError(
                REJOIN_PROOF_INVALID,
                "the host's registered key cannot make re-join proofs",
                f"no signature scheme for a {type(public_key).__name__}",
            )
    except (InvalidSignature, ValueError, UnsupportedAlgorithm):
        raise RejoinError(
            REJOIN_PROOF_INVALID,
            "the re-join signature does not verify with the key this host was last issued a "
            "certificate for",
            f"the signature does not verify with the registered {describe_key(public_key)} over "
            "the message built from this request (wrong key, or a challenge, host id, document "
            "or new key other than the ones signed)",
        ) from None


def load_registered_key(pem: str) -> PublicKey:
    """The public key recorded on the host at its last issuance; ValueError if unusable."""
    try:
        key = serialization.load_pem_public_key(pem.encode("ascii"))
    except (ValueError, UnsupportedAlgorithm, UnicodeEncodeError) as exc:
        raise ValueError(f"the recorded key does not load: {exc}") from None
    if not isinstance(key, rsa.RSAPublicKey | ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey):
        raise ValueError(f"the recorded key is a {type(key).__name__}")
    return key


def public_pem(public_key: PublicKey) -> str:
    """The key as the host row records it: PEM SubjectPublicKeyInfo."""
    return public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode("ascii")


def describe_key(public_key: PublicKey) -> str:
    """E.g. `ECDSA P-256 key SHA256:1a2b3c4d5e6f7a8b`, for traces an auditor reads."""
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        kind = {"secp256r1": "ECDSA P-256", "secp384r1": "ECDSA P-384", "secp521r1": "ECDSA P-521"}
        name = kind.get(public_key.curve.name, f"ECDSA {public_key.curve.name}")
    elif isinstance(public_key, ed25519.Ed25519PublicKey):
        name = "Ed25519"
    elif isinstance(public_key, rsa.RSAPublicKey):
        name = f"RSA-{public_key.key_size}"
    else:
        name = type(public_key).__name__
    return f"{name} key SHA256:{tls_key_digest(public_key)[:16]}"
