"""Digests, signatures and chain checks of audit seals: the pure part, with no Django import.

`audit.sealing` reads rows from the database and stores seals; everything that decides what a
seal says, and whether a stored seal still says it, lives here so that it can be read and tested
on its own. The formats are versioned by the domain labels below (`...-v1`); a change of any of
them is a new version, never an edit of this one, or old seals would stop verifying.

Row hash (32 bytes)
    SHA-256 over `ROW_LABEL`, the stream name, a NUL, and the row's canonical serialisation: a
    JSON array of the values of the sealed columns in the seal's column order (aware datetimes
    as UTC ISO 8601 with microseconds, floats as Python's shortest round-trip text, JSON columns
    as their decoded values), dumped with sorted keys, no spaces and ASCII escapes, so that one
    stored row always gives the same bytes.

Range digest (32 bytes, hex in the seal)
    SHA-256 over `RANGE_LABEL`, the stream name, a NUL, then for every row of the range in id
    order its id (8 bytes, big endian, signed) and its full row hash.

Leaves (per-row record, so that verification can name rows)
    For every row, its id (8 bytes) and the first 16 bytes of its row hash, concatenated in id
    order and zlib-compressed. 16 bytes are plenty to tell which row differs; detection itself
    never rests on them, because the signed range digest is over the full 32-byte hashes, so a
    crafted collision of truncated hashes gains an attacker nothing. `leaves_digest` (SHA-256
    over `LEAVES_LABEL` and the uncompressed records) is signed too, so altered leaves are
    reported instead of believed.

Seal payload
    `PAYLOAD_LABEL` and a newline, then a JSON object (sorted keys, no spaces) of the stream,
    sequence number, id range, row count, earliest and latest row time, column list, range and
    leaves digests, previous seal's digest (`GENESIS_DIGEST` for the first seal of a stream),
    creation time and the signer's public key. The seal's digest is SHA-256 of these bytes; the
    signature is Ed25519 over them. Chains are per stream: seal n+1 names seal n's digest.

Signing key
    Ed25519, its 32-byte seed derived with HKDF-SHA256 from the server secret and a purpose
    label. Every server with the same secret derives the same key; nothing is stored.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import struct
import uuid
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

ROW_LABEL = b"joinadmin-seal-row-v1\x00"
RANGE_LABEL = b"joinadmin-seal-range-v1\x00"
LEAVES_LABEL = b"joinadmin-seal-leaves-v1\x00"
PAYLOAD_LABEL = b"joinadmin-seal-v1\n"
PRUNE_LABEL = b"joinadmin-seal-prune-v1\n"
VERIFICATION_LABEL = b"joinadmin-seal-verification-v1\n"
KEY_PURPOSE = b"joinadmin audit seal signing key v1"
KEY_SALT = b"joinadmin"

GENESIS_DIGEST = "0" * 64
LEAF_BYTES = 16
_ID = struct.Struct(">q")
_RECORD_BYTES = _ID.size + LEAF_BYTES
_LEAVES_VERSION = b"\x01"
MIN_SECRET_LENGTH = 16


class SealFormatError(ValueError):
    """A value or stored blob that this format cannot represent or read."""


# --- Canonical rows --------------------------------------------------------------------------


def _special(value: Any) -> Any:
    """The JSON form of a column value that JSON has no type for (json.dumps' `default` hook).

    Raises SealFormatError for anything without one exact text (a naive datetime could be read
    in two zones; an unknown type could print differently tomorrow): sealing fails closed.
    """
    if isinstance(value, datetime):
        if value.tzinfo is None or value.utcoffset() is None:
            raise SealFormatError(f"naive datetime {value!r} cannot be sealed")
        return value.astimezone(UTC).isoformat(timespec="microseconds")
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, bytes | bytearray | memoryview):
        return {"$bytes": base64.b64encode(bytes(value)).decode("ascii")}
    if isinstance(value, uuid.UUID):
        return str(value)
    raise SealFormatError(f"a {type(value).__name__} value cannot be sealed")


def canonical_row(values: Sequence[Any]) -> bytes:
    """The bytes of one row: its values as compact, key-sorted, ASCII-only JSON.

    Non-finite floats (which SQLite can return from a JSON column) come out as the `NaN` and
    `Infinity` tokens: not strict JSON, but one fixed text, which is all a hash needs.
    """
    return json.dumps(
        list(values),
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=True,
        allow_nan=True,
        default=_special,
    ).encode("ascii")


def row_hash(stream: str, values: Sequence[Any]) -> bytes:
    """The 32-byte hash of one row of `stream`."""
    return hashlib.sha256(
        ROW_LABEL + stream.encode("ascii") + b"\x00" + canonical_row(values)
    ).digest()


class RangeHasher:
    """Folds the rows of one range, in id order, into its range digest and its leaves."""

    def __init__(self, stream: str) -> None:
        self.stream = stream
        self.count = 0
        self.last_id: int | None = None
        self._range = hashlib.sha256(RANGE_LABEL + stream.encode("ascii") + b"\x00")
        self._records: list[bytes] = []

    def add(self, row_id: int, values: Sequence[Any]) -> None:
        """Add the next row. Ids must strictly increase: the digest is defined in id order."""
        if self.last_id is not None and row_id <= self.last_id:
            raise SealFormatError(f"row {row_id} comes after row {self.last_id}")
        full = row_hash(self.stream, values)
        packed_id = _ID.pack(row_id)
        self._range.update(packed_id + full)
        self._records.append(packed_id + full[:LEAF_BYTES])
        self.count += 1
        self.last_id = row_id

    def range_digest(self) -> str:
        return self._range.hexdigest()

    def leaves(self) -> list[tuple[int, bytes]]:
        """(id, truncated hash) of every row added, in id order."""
        return [(_ID.unpack(r[: _ID.size])[0], r[_ID.size :]) for r in self._records]

    def leaves_raw(self) -> bytes:
        return b"".join(self._records)

    def leaves_blob(self) -> bytes:
        """The leaves as stored in the seal row: a version byte, then zlib-compressed records."""
        return _LEAVES_VERSION + zlib.compress(self.leaves_raw(), 6)


def leaves_digest(raw: bytes) -> str:
    """SHA-256 of the uncompressed leaf records, so the digest does not depend on zlib."""
    return hashlib.sha256(LEAVES_LABEL + raw).hexdigest()


def read_leaves(blob: bytes, row_count: int) -> bytes:
    """The uncompressed records of a stored leaves blob.

    The output is capped at what `row_count` rows need, so an altered blob cannot make the
    verifier inflate gigabytes. Raises SealFormatError when the blob does not open.
    """
    if not blob or blob[:1] != _LEAVES_VERSION:
        raise SealFormatError("the stored row hashes are missing or of an unknown version")
    limit = row_count * _RECORD_BYTES
    try:
        inflater = zlib.decompressobj()
        raw = inflater.decompress(blob[1:], limit + 1)
    except zlib.error as exc:
        raise SealFormatError(f"the stored row hashes do not decompress: {exc}") from None
    if len(raw) != limit or not inflater.eof:
        raise SealFormatError("the stored row hashes do not match the seal's row count")
    return raw


def split_leaves(raw: bytes) -> list[tuple[int, bytes]]:
    """(id, truncated hash) pairs of uncompressed leaf records."""
    return [
        (_ID.unpack_from(raw, offset)[0], raw[offset + _ID.size : offset + _RECORD_BYTES])
        for offset in range(0, len(raw), _RECORD_BYTES)
    ]


@dataclass
class LeafDiff:
    """Rows that differ between the sealed leaves and the rows now stored, by id."""

    changed: list[int] = field(default_factory=list)
    deleted: list[int] = field(default_factory=list)
    inserted: list[int] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.changed or self.deleted or self.inserted)


def diff_leaves(sealed: Sequence[tuple[int, bytes]], live: Sequence[tuple[int, bytes]]) -> LeafDiff:
    """Merge two id-ordered leaf lists and name every id whose row changed, went or appeared."""
    diff = LeafDiff()
    i = j = 0
    while i < len(sealed) or j < len(live):
        if j >= len(live) or (i < len(sealed) and sealed[i][0] < live[j][0]):
            diff.deleted.append(sealed[i][0])
            i += 1
        elif i >= len(sealed) or live[j][0] < sealed[i][0]:
            diff.inserted.append(live[j][0])
            j += 1
        else:
            if sealed[i][1] != live[j][1]:
                diff.changed.append(sealed[i][0])
            i += 1
            j += 1
    return diff


def id_ranges(ids: Iterable[int]) -> str:
    """`3, 7-9, 12`: a sorted id list with consecutive runs folded, for readable reports."""
    parts: list[str] = []
    run: list[int] = []
    for row_id in sorted(ids):
        if run and row_id == run[-1] + 1:
            run.append(row_id)
            continue
        if run:
            parts.append(str(run[0]) if len(run) == 1 else f"{run[0]}-{run[-1]}")
        run = [row_id]
    if run:
        parts.append(str(run[0]) if len(run) == 1 else f"{run[0]}-{run[-1]}")
    return ", ".join(parts)


# --- Keys and signatures ---------------------------------------------------------------------


def derive_signing_key(secret: str) -> Ed25519PrivateKey:
    """The seal signing key of a server secret (HKDF-SHA256, fixed salt and purpose).

    Raises SealFormatError for a secret too short to be one: a guessable secret would make every
    signature forgeable, so it is refused rather than used.
    """
    if len(secret or "") < MIN_SECRET_LENGTH:
        raise SealFormatError(
            f"the seal key secret must be at least {MIN_SECRET_LENGTH} characters long"
        )
    seed = HKDF(algorithm=hashes.SHA256(), length=32, salt=KEY_SALT, info=KEY_PURPOSE).derive(
        secret.encode("utf-8")
    )
    return Ed25519PrivateKey.from_private_bytes(seed)


def public_key_text(key: Ed25519PrivateKey) -> str:
    """The raw 32-byte public key, base64: what seals carry and auditors compare."""
    raw = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    return base64.b64encode(raw).decode("ascii")


def fingerprint(public_key: str) -> str:
    """`SHA256:<base64>` of the raw public key, the way OpenSSH shows key fingerprints."""
    try:
        raw = base64.b64decode(public_key, validate=True)
    except (binascii.Error, ValueError):
        return "SHA256:(invalid key)"
    return "SHA256:" + base64.b64encode(hashlib.sha256(raw).digest()).decode().rstrip("=")


def sign(key: Ed25519PrivateKey, message: bytes) -> str:
    return base64.b64encode(key.sign(message)).decode("ascii")


def signature_valid(public_key: str, message: bytes, signature: str) -> bool:
    """Whether `signature` (base64) is `public_key`'s Ed25519 signature of `message`."""
    try:
        key = Ed25519PublicKey.from_public_bytes(base64.b64decode(public_key, validate=True))
        key.verify(base64.b64decode(signature, validate=True), message)
    except (InvalidSignature, ValueError, binascii.Error):
        return False
    return True


def _json_bytes(label: bytes, fields: dict[str, Any]) -> bytes:
    return label + json.dumps(fields, sort_keys=True, separators=(",", ":")).encode("ascii")


def time_text(value: datetime | None) -> str:
    """A stored time as it enters signed statements ("" for none): UTC, with microseconds."""
    return "" if value is None else str(_special(value))


# --- Seals -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class SealPayload:
    """What a seal states, and signs."""

    stream: str
    seq: int
    first_id: int
    last_id: int
    row_count: int
    first_time: str
    last_time: str
    columns: tuple[str, ...]
    range_digest: str
    leaves_digest: str
    previous_digest: str
    created_at: str
    public_key: str

    def to_bytes(self) -> bytes:
        return _json_bytes(
            PAYLOAD_LABEL,
            {
                "v": 1,
                "stream": self.stream,
                "seq": self.seq,
                "first_id": self.first_id,
                "last_id": self.last_id,
                "row_count": self.row_count,
                "first_time": self.first_time,
                "last_time": self.last_time,
                "columns": list(self.columns),
                "range_digest": self.range_digest,
                "leaves_digest": self.leaves_digest,
                "previous_digest": self.previous_digest,
                "created_at": self.created_at,
                "public_key": self.public_key,
            },
        )

    def digest(self) -> str:
        return hashlib.sha256(self.to_bytes()).hexdigest()


@dataclass(frozen=True)
class StoredSeal:
    """A seal as read back: its payload and what was stored beside it."""

    payload: SealPayload
    digest: str
    signature: str
    pruned_at: str = ""
    prune_signature: str = ""


def prune_statement(stream: str, seq: int, digest: str, pruned_at: str) -> bytes:
    """The signed statement that a seal's rows were pruned on purpose.

    Without it, marking a seal pruned would let someone delete its rows unnoticed; with it, only
    a holder of the signing key can turn a range of rows into a legitimately empty one.
    """
    return _json_bytes(
        PRUNE_LABEL,
        {"v": 1, "stream": stream, "seq": seq, "digest": digest, "pruned_at": pruned_at},
    )


def verification_statement(fields: dict[str, Any]) -> bytes:
    """The signed statement of one verification run (so a faked "all good" is detectable)."""
    return _json_bytes(VERIFICATION_LABEL, {"v": 1, **fields})


@dataclass(frozen=True)
class Problem:
    """One thing wrong with the sealed record. `kind` is a stable code, `detail` plain words."""

    stream: str
    seq: int | None
    kind: str
    detail: str
    row_ids: tuple[int, ...] = ()

    def line(self) -> str:
        where = f"{self.stream} seal #{self.seq}" if self.seq is not None else self.stream
        return f"{where}: {self.detail}"


def check_link(
    seal: StoredSeal, previous: StoredSeal | None, trusted_keys: Iterable[str]
) -> list[Problem]:
    """Problems of one seal on its own and as the successor of `previous` (None: the first).

    Checks, in plain words: the stored digest is the digest of what the seal states; the signer
    is a trusted key and the signature holds; the sequence continues without a gap; the seal
    names its predecessor's digest; its id range starts right after its predecessor's; a pruned
    mark carries a valid signed statement.
    """
    p = seal.payload
    problems: list[Problem] = []

    def add(kind: str, detail: str) -> None:
        problems.append(Problem(p.stream, p.seq, kind, detail))

    message = p.to_bytes()
    computed = hashlib.sha256(message).hexdigest()
    if computed != seal.digest:
        add("seal_altered", "the seal's fields do not match its stored digest (seal row altered)")
    trusted = set(trusted_keys)
    if p.public_key not in trusted:
        add(
            "untrusted_key",
            f"signed by key {fingerprint(p.public_key)}, which is not a trusted seal key",
        )
    elif not signature_valid(p.public_key, message, seal.signature):
        add("signature_invalid", "the signature does not match the seal (seal row altered)")
    if p.last_id < p.first_id or p.row_count < 1 or p.row_count > p.last_id - p.first_id + 1:
        add("seal_malformed", f"impossible range: ids {p.first_id}-{p.last_id}, {p.row_count} rows")
    if previous is None:
        if p.seq != 1:
            add("seal_missing", f"the chain starts at seal #{p.seq}; seals before it are missing")
        elif p.previous_digest != GENESIS_DIGEST:
            add("chain_broken", "the first seal names a predecessor")
    else:
        prev = previous.payload
        if p.seq != prev.seq + 1:
            add("seal_missing", f"seals #{prev.seq + 1}-#{p.seq - 1} are missing from the chain")
        if p.previous_digest != prev.digest():
            add("chain_broken", f"does not name seal #{prev.seq}'s digest as its predecessor")
        if p.first_id != prev.last_id + 1:
            add(
                "chain_broken",
                f"its range starts at id {p.first_id}, seal #{prev.seq} ended at {prev.last_id}",
            )
    if seal.pruned_at:
        statement = prune_statement(p.stream, p.seq, computed, seal.pruned_at)
        if p.public_key not in trusted or not signature_valid(
            p.public_key, statement, seal.prune_signature
        ):
            add("prune_mark_invalid", "marked pruned without a valid signed prune statement")
    return problems


def valid_prune(seal: StoredSeal, trusted_keys: Iterable[str]) -> bool:
    """Whether the seal carries a genuine prune statement (its rows may be gone)."""
    p = seal.payload
    if not seal.pruned_at or p.public_key not in set(trusted_keys):
        return False
    statement = prune_statement(p.stream, p.seq, p.digest(), seal.pruned_at)
    return signature_valid(p.public_key, statement, seal.prune_signature)
