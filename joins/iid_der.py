"""A strict reader for the few BER/DER shapes found in an AWS-signed identity document, and the
DER encoders the verifier and the host certificates (joins/leafcert.py) write with.

The verifier walks the CMS structure with this cursor instead of a general ASN.1 decoder for two
measured reasons: pyasn1's BER decoder cannot read AWS's documents (an indefinite-length open type
loses its end-of-contents octets, pyasn1 issue #66, and the explicitly tagged indefinite eContent
then fails to decode), and decoding even the definite-length SignerInfo with it costs about 30
RSA-2048 verifications. The cursor accepts only what the verifier asks for, element by element,
so anything unexpected is refused rather than interpreted. No Django here.
"""

from __future__ import annotations

from datetime import UTC, datetime

SEQUENCE = 0x30
SET = 0x31
INTEGER = 0x02
BIT_STRING = 0x03
OCTET_STRING = 0x04
OCTET_STRING_CONSTRUCTED = 0x24
OBJECT_IDENTIFIER = 0x06
NULL = 0x05
UTF8_STRING = 0x0C
UTC_TIME = 0x17
GENERALIZED_TIME = 0x18
CONTEXT_0 = 0xA0
CONTEXT_1 = 0xA1

# Nesting bound for skipping opaque elements (embedded certificates), so that a crafted blob
# cannot drive the reader into deep recursion.
_MAX_SKIP_DEPTH = 16


class DERError(ValueError):
    """An encoding the reader refuses; the verifier turns it into a coded error."""


class Cursor:
    """A position in a byte string plus the stack of containers entered so far.

    Definite-length containers bound their children; an indefinite-length container ends at its
    end-of-contents octets and is bounded only by its parent. Every read checks the bound of the
    innermost container, so a length can never point outside the element that holds it. The
    methods are written flat because they run some fifty times per document on the join path.
    """

    __slots__ = ("_data", "_indefinite", "_limit", "_stack", "pos")

    def __init__(self, data: bytes) -> None:
        self._data = data
        self.pos = 0
        self._limit = len(data)
        self._indefinite = False
        self._stack: list[tuple[int, bool]] = []

    def _length(self, pos: int, constructed: bool) -> int:
        """Consume the length octets at `pos`; return the length, or -1 for the indefinite form."""
        data = self._data
        limit = self._limit
        first = data[pos]
        if first < 0x80:
            pos += 1
            length = first
        elif first == 0x80:
            if not constructed:
                raise DERError(f"indefinite length on a primitive element at byte {pos}")
            self.pos = pos + 1
            return -1
        else:
            count = first & 0x7F
            if count > 3 or pos + 1 + count > limit:
                raise DERError(f"bad length at byte {pos}")
            length = int.from_bytes(data[pos + 1 : pos + 1 + count], "big")
            # Only the shortest form is accepted, so that one value has one encoding.
            if length < 0x80 or data[pos + 1] == 0:
                raise DERError(f"length not in its shortest form at byte {pos}")
            pos += 1 + count
        if pos + length > limit:
            raise DERError(f"element at byte {pos} is longer than its container")
        self.pos = pos
        return length

    def _open(self, tag: int) -> int:
        """Consume the header of an element that must have exactly `tag`; return its length."""
        pos = self.pos
        if pos + 2 > self._limit:
            raise DERError(f"truncated at byte {pos}")
        found = self._data[pos]
        if found != tag:
            raise DERError(f"expected tag {tag:#04x} at byte {pos}, found {found:#04x}")
        return self._length(pos + 1, bool(tag & 0x20))

    def _open_any(self) -> tuple[int, int]:
        """Consume the header of an element of any low-numbered tag; return (tag, length)."""
        pos = self.pos
        if pos + 2 > self._limit:
            raise DERError(f"truncated at byte {pos}")
        tag = self._data[pos]
        if tag & 0x1F == 0x1F:
            raise DERError(f"unexpected high tag number at byte {pos}")
        return tag, self._length(pos + 1, bool(tag & 0x20))

    def peek(self) -> int | None:
        """The tag of the next element, or None at the end of the current container or input."""
        if self.at_end() or self.pos >= self._limit:
            return None
        return self._data[self.pos]

    def at_end(self) -> bool:
        """Whether the current container has no further element."""
        pos = self.pos
        if self._indefinite:
            data = self._data
            return pos + 2 <= self._limit and data[pos] == 0 and data[pos + 1] == 0
        return pos >= self._limit

    def enter(self, tag: int, *, indefinite_ok: bool = False) -> None:
        """Open a constructed element with exactly this tag; `leave` must close it."""
        length = self._open(tag)
        self._stack.append((self._limit, self._indefinite))
        if length < 0:
            if not indefinite_ok:
                raise DERError(f"indefinite length where DER is required, byte {self.pos}")
            self._indefinite = True
        else:
            self._limit = self.pos + length
            self._indefinite = False

    def leave(self) -> None:
        """Close the current container, refusing anything left unread inside it."""
        pos = self.pos
        if self._indefinite:
            data = self._data
            if pos + 2 > self._limit or data[pos] != 0 or data[pos + 1] != 0:
                raise DERError(f"expected end-of-contents at byte {pos}")
            self.pos = pos + 2
        elif pos != self._limit:
            raise DERError(f"unexpected bytes at byte {pos}")
        if not self._stack:
            raise DERError("no element to close")
        self._limit, self._indefinite = self._stack.pop()

    def primitive(self, tag: int) -> bytes:
        """Read a definite-length element with exactly this tag and return its contents."""
        length = self._open(tag)
        if length < 0:
            raise DERError(f"indefinite length where DER is required, byte {self.pos}")
        start = self.pos
        self.pos = start + length
        return self._data[start : self.pos]

    def element(self, tag: int | None = None) -> bytes:
        """Read one definite-length element (of this tag, if given) and return its encoding."""
        start = self.pos
        length = self._open_any()[1] if tag is None else self._open(tag)
        if length < 0:
            raise DERError(f"indefinite length where DER is required, byte {start}")
        self.pos += length
        return self._data[start : self.pos]

    def skip(self, depth: int = 0) -> None:
        """Step over one element of any shape without interpreting it."""
        if depth > _MAX_SKIP_DEPTH:
            raise DERError(f"nesting too deep at byte {self.pos}")
        tag, length = self._open_any()
        if tag == 0:
            raise DERError(f"unexpected end-of-contents at byte {self.pos - 2}")
        if length >= 0:
            self.pos += length
            return
        self._stack.append((self._limit, self._indefinite))
        self._indefinite = True
        while not self.at_end():
            self.skip(depth + 1)
        self.leave()

    def done(self) -> bool:
        """Whether every container was closed and the whole input consumed."""
        return not self._stack and self.pos == len(self._data)


def parse_time(tag: int, value: bytes) -> datetime:
    """Read a DER UTCTime (YYMMDDHHMMSSZ) or GeneralizedTime (YYYYMMDDHHMMSSZ) as aware UTC.

    Only the DER forms are accepted: seconds present, no fraction, no offset, `Z` suffix.
    """
    if tag == UTC_TIME and len(value) == 13:
        year = int(value[0:2]) if value[0:2].isdigit() else -1
        # RFC 5280's window: two-digit years 50-99 are 19xx, 00-49 are 20xx.
        year += 1900 if year >= 50 else 2000
        rest = value[2:12]
    elif tag == GENERALIZED_TIME and len(value) == 15:
        year = int(value[0:4]) if value[0:4].isdigit() else -1
        rest = value[4:14]
    else:
        raise DERError("time is not a DER UTCTime or GeneralizedTime")
    if year < 0 or not rest.isdigit() or value[-1:] != b"Z":
        raise DERError("time is not a DER UTCTime or GeneralizedTime")
    try:
        return datetime(
            year,
            int(rest[0:2]),
            int(rest[2:4]),
            int(rest[4:6]),
            int(rest[6:8]),
            int(rest[8:10]),
            tzinfo=UTC,
        )
    except ValueError as exc:
        raise DERError(f"time out of range: {exc}") from None


def encode_length(length: int) -> bytes:
    """The DER length octets for a contents length."""
    if length < 0x80:
        return bytes((length,))
    octets = length.to_bytes((length.bit_length() + 7) // 8, "big")
    return bytes((0x80 | len(octets),)) + octets


def encode(tag: int, contents: bytes) -> bytes:
    """One DER element: tag, shortest length, contents (a short length written in place: a
    host certificate encodes some thirty elements per join)."""
    length = len(contents)
    if length < 0x80:
        return bytes((tag, length)) + contents
    return bytes((tag,)) + encode_length(length) + contents


def encode_integer(value: int) -> bytes:
    """A DER INTEGER in two's complement, shortest form."""
    size = value.bit_length() // 8 + 1
    return encode(INTEGER, value.to_bytes(size, "big", signed=True))
