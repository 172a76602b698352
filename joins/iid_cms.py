"""Reading the CMS SignedData of an identity document exactly as AWS writes it.

This locates the parts the verifier needs (content, signer, algorithms, signed attributes,
signature) and refuses any other CMS profile; it trusts nothing and checks no signature, which is
`joins.iid`'s job. Each rule is strict on purpose: a one-byte change anywhere in a genuine
document must be refused, so every byte not covered by the signature is checked here against the
one value AWS uses. No Django here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

from pyasn1.codec.der import encoder as der_encoder
from pyasn1.type import univ
from pyasn1_modules import rfc3279, rfc4055, rfc5652, rfc6211

from joins import iid_der
from joins.iid_der import Cursor, DERError, encode

Algorithm = tuple[bytes, bytes]  # (OID contents, parameters encoding or b"" when absent)


class CMSError(ValueError):
    """A structure the verifier refuses: malformed, or well-formed but another form than AWS's."""

    def __init__(self, reason: str, detail: str | None = None, *, unsupported: bool = False):
        super().__init__(reason)
        self.reason = reason
        self.detail = detail
        self.unsupported = unsupported


def _unsupported(reason: str) -> CMSError:
    return CMSError(reason, unsupported=True)


def _dsa_form() -> CMSError:
    return _unsupported(
        "it is the older DSA/SHA-1 pkcs7 form; the agent must send the document from "
        "/latest/dynamic/instance-identity/rsa2048"
    )


def _oid(value: univ.ObjectIdentifier) -> bytes:
    """The contents octets of an OID, taken from the maintained ASN.1 module's definition."""
    return bytes(der_encoder.encode(value))[2:]


OID_SIGNED_DATA = _oid(rfc5652.id_signedData)
OID_DATA = _oid(rfc5652.id_data)
OID_CONTENT_TYPE = _oid(rfc5652.id_contentType)
OID_MESSAGE_DIGEST = _oid(rfc5652.id_messageDigest)
OID_SIGNING_TIME = _oid(rfc5652.id_signingTime)
OID_ALGORITHM_PROTECTION = _oid(rfc6211.id_aa_cmsAlgorithmProtect)
OID_SHA256 = _oid(rfc4055.id_sha256)
OID_SHA1 = _oid(rfc3279.id_sha1)
OID_SHA256_WITH_RSA = _oid(rfc4055.sha256WithRSAEncryption)
OID_RSA = _oid(rfc4055.rsaEncryption)
_OIDS_DSA = frozenset((_oid(rfc3279.id_dsa), _oid(rfc3279.id_dsa_with_sha1)))
_KNOWN_ATTRIBUTES = frozenset(
    (OID_CONTENT_TYPE, OID_MESSAGE_DIGEST, OID_SIGNING_TIME, OID_ALGORITHM_PROTECTION)
)
# RFC 5754: SHA-2 parameters are absent, yet NULL must be accepted (AWS sends NULL).
NULL_PARAMETERS = b"\x05\x00"
_NO_PARAMETERS = (b"", NULL_PARAMETERS)


def encode_algorithm(oid: bytes, parameters: bytes = NULL_PARAMETERS) -> bytes:
    """The DER AlgorithmIdentifier for an OID and parameters."""
    return encode(iid_der.SEQUENCE, encode(iid_der.OBJECT_IDENTIFIER, oid) + parameters)


def encode_attribute(oid: bytes, value: bytes) -> bytes:
    """The DER Attribute holding one value."""
    contents = encode(iid_der.OBJECT_IDENTIFIER, oid) + encode(iid_der.SET, value)
    return encode(iid_der.SEQUENCE, contents)


# The accepted encodings of each AlgorithmIdentifier, looked up whole: one comparison instead of
# a parse on the hot path; anything else is parsed only to say why it is refused.
_DIGEST_ALGORITHMS = {
    encode_algorithm(OID_SHA256, parameters): (OID_SHA256, parameters)
    for parameters in _NO_PARAMETERS
}
_SIGNATURE_ALGORITHMS = {
    encode_algorithm(oid, parameters): (oid, parameters)
    for oid in (OID_SHA256_WITH_RSA, OID_RSA)
    for parameters in _NO_PARAMETERS
}
_DIGEST_ALGORITHM_SETS = {
    encode(iid_der.SET, encoding): algorithm for encoding, algorithm in _DIGEST_ALGORITHMS.items()
}


def _aws_attributes() -> tuple[bytes, int, re.Pattern[bytes]]:
    """AWS's exact signed attributes: their [0] header, total size, and a pattern whose two
    groups are the signing time and the message digest."""
    protection = encode(
        iid_der.SEQUENCE,
        encode_algorithm(OID_SHA256) + b"\xa1" + encode_algorithm(OID_SHA256_WITH_RSA)[1:],
    )
    content_type = encode_attribute(OID_CONTENT_TYPE, encode(iid_der.OBJECT_IDENTIFIER, OID_DATA))
    time_head = encode_attribute(OID_SIGNING_TIME, encode(iid_der.UTC_TIME, bytes(13)))[:-13]
    digest_head = encode_attribute(OID_MESSAGE_DIGEST, encode(iid_der.OCTET_STRING, bytes(32)))
    digest_head = digest_head[:-32]
    middle = encode_attribute(OID_ALGORITHM_PROTECTION, protection) + digest_head
    body_size = len(content_type) + len(time_head) + 13 + len(middle) + 32
    header = b"\xa0" + iid_der.encode_length(body_size)
    pattern = re.compile(
        re.escape(header + content_type + time_head)
        + rb"([0-9]{12}Z)"
        + re.escape(middle)
        + rb"(.{32})",
        re.DOTALL,
    )
    return header, len(header) + body_size, pattern


_AWS_ATTRIBUTES_HEADER, _AWS_ATTRIBUTES_SIZE, _AWS_ATTRIBUTES = _aws_attributes()
_AWS_PROTECTION = ((OID_SHA256, NULL_PARAMETERS), (OID_SHA256_WITH_RSA, NULL_PARAMETERS))


@dataclass(frozen=True, slots=True)
class Envelope:
    """What the verifier needs from the SignedData, located but not yet trusted."""

    content: bytes
    signer_id: bytes
    digest_algorithm: Algorithm
    signature_algorithm: Algorithm
    signed_attributes: bytes
    signature: bytes


@dataclass(frozen=True, slots=True)
class Attributes:
    """The values of the signed attributes, not yet checked against anything."""

    content_type: bytes
    message_digest: bytes
    signing_time: datetime | None
    protection: tuple[Algorithm, Algorithm] | None


_EOC3 = bytes(6)  # three end-of-contents markers
_SHA256_ALGORITHM = encode_algorithm(OID_SHA256)
_SHA256_RSA_ALGORITHM = encode_algorithm(OID_SHA256_WITH_RSA)
_RSA2048_SIGNATURE_HEAD = b"\x04\x82\x01\x00"  # an OCTET STRING of 256 bytes
_AWS_HEAD = (
    b"\x30\x80"
    + encode(iid_der.OBJECT_IDENTIFIER, OID_SIGNED_DATA)
    + b"\xa0\x80\x30\x80"
    + encode(iid_der.INTEGER, b"\x01")
    + encode(iid_der.SET, _SHA256_ALGORITHM)
    + b"\x30\x80"
    + encode(iid_der.OBJECT_IDENTIFIER, OID_DATA)
    + b"\xa0\x80\x24\x80"
)
# What follows the signer id: digest algorithm, signed attributes of AWS's size, signature
# algorithm, a 2048-bit signature, and the end-of-contents of SignedData, [0] and ContentInfo.
_AWS_SIGNER_END = re.compile(
    re.escape(_SHA256_ALGORITHM + _AWS_ATTRIBUTES_HEADER)
    + rb"(.{%d})" % (_AWS_ATTRIBUTES_SIZE - len(_AWS_ATTRIBUTES_HEADER))
    + re.escape(_SHA256_RSA_ALGORITHM + _RSA2048_SIGNATURE_HEAD)
    + rb"(.{256})"
    + re.escape(_EOC3),
    re.DOTALL,
)
_AWS_SIGNER_END_SIZE = (
    len(_SHA256_ALGORITHM)
    + _AWS_ATTRIBUTES_SIZE
    + len(_SHA256_RSA_ALGORITHM)
    + len(_RSA2048_SIGNATURE_HEAD)
    + 256
    + len(_EOC3)
)
# What precedes it: the content's end-of-contents, SignerInfos and SignerInfo headers, version.
_AWS_SIGNER_START_SIZE = len(_EOC3) + 4 + 4 + 3


def _read_aws_envelope(raw: bytes) -> Envelope | None:
    """AWS's exact layout read by position, or None for any other layout (then parsed).

    Every byte outside the content, signer id, signed attributes and signature is compared with
    the one value AWS writes, and every length with the size it must have, so this accepts a
    subset of what `parse_envelope` accepts and returns the same parts (the tests check it).
    """
    if not raw.startswith(_AWS_HEAD):
        return None
    pos = len(_AWS_HEAD)
    header = raw[pos : pos + 4]
    if header[:2] == b"\x04\x82":
        length = int.from_bytes(header[2:4], "big")
        start = pos + 4
        if length < 0x100:
            return None
    elif header[:2] == b"\x04\x81":
        length = header[2] if len(header) > 2 else 0
        start = pos + 3
        if length < 0x80:
            return None
    else:
        return None
    tail = raw[start + length :]
    if len(tail) < _AWS_SIGNER_START_SIZE + 2 + _AWS_SIGNER_END_SIZE:
        return None
    set_length = int.from_bytes(tail[8:10], "big")
    info_length = int.from_bytes(tail[12:14], "big")
    signer_id = tail[_AWS_SIGNER_START_SIZE:-_AWS_SIGNER_END_SIZE]
    end = _AWS_SIGNER_END.fullmatch(tail, len(tail) - _AWS_SIGNER_END_SIZE)
    if (
        end is None
        or tail[:6] != _EOC3
        or tail[6:8] != b"\x31\x82"
        or tail[10:12] != b"\x30\x82"
        or tail[14:17] != b"\x02\x01\x01"
        or set_length != len(tail) - 10 - 6
        or info_length != set_length - 4
        or info_length < 0x100
        or signer_id[0] != iid_der.SEQUENCE
        or signer_id[1] != len(signer_id) - 2
        or signer_id[1] >= 0x80
    ):
        return None
    return Envelope(
        content=raw[start : start + length],
        signer_id=signer_id,
        digest_algorithm=(OID_SHA256, NULL_PARAMETERS),
        signature_algorithm=(OID_SHA256_WITH_RSA, NULL_PARAMETERS),
        signed_attributes=_AWS_ATTRIBUTES_HEADER + end[1],
        signature=end[2],
    )


def _parse_algorithm(encoding: bytes) -> Algorithm:
    cursor = Cursor(encoding)
    cursor.enter(iid_der.SEQUENCE)
    oid = cursor.primitive(iid_der.OBJECT_IDENTIFIER)
    parameters = b"" if cursor.at_end() else cursor.element()
    cursor.leave()
    return oid, parameters


def _digest_algorithm(encoding: bytes) -> Algorithm:
    known = _DIGEST_ALGORITHMS.get(encoding)
    if known is not None:
        return known
    oid, _ = _parse_algorithm(encoding)
    if oid == OID_SHA1:
        raise _dsa_form()
    if oid != OID_SHA256:
        raise _unsupported("its digest algorithm is not SHA-256")
    raise CMSError("its SHA-256 algorithm identifier carries parameters")


def _signature_algorithm(encoding: bytes) -> Algorithm:
    known = _SIGNATURE_ALGORITHMS.get(encoding)
    if known is not None:
        return known
    oid, _ = _parse_algorithm(encoding)
    if oid in _OIDS_DSA:
        raise _dsa_form()
    if oid not in (OID_SHA256_WITH_RSA, OID_RSA):
        raise _unsupported("its signature algorithm is not RSA with SHA-256")
    raise CMSError("its RSA algorithm identifier carries parameters")


def _digest_algorithm_set(encoding: bytes) -> Algorithm:
    known = _DIGEST_ALGORITHM_SETS.get(encoding)
    if known is not None:
        return known
    cursor = Cursor(encoding)
    cursor.enter(iid_der.SET)
    algorithms = []
    while not cursor.at_end():
        algorithms.append(_digest_algorithm(cursor.element(iid_der.SEQUENCE)))
    cursor.leave()
    if len(algorithms) != 1:
        raise _unsupported("it does not name exactly one digest algorithm")
    # One accepted algorithm whose SET encoding is not the DER one.
    raise CMSError("its digest algorithm set is not DER")


def _read_content(cursor: Cursor) -> bytes:
    cursor.enter(iid_der.SEQUENCE, indefinite_ok=True)
    if cursor.primitive(iid_der.OBJECT_IDENTIFIER) != OID_DATA:
        raise _unsupported("its content type is not id-data")
    if cursor.at_end():
        raise _unsupported("its content is detached; the signed JSON must be inside")
    cursor.enter(iid_der.CONTEXT_0, indefinite_ok=True)
    if cursor.peek() == iid_der.OCTET_STRING_CONSTRUCTED:
        # AWS sends the JSON as a constructed OCTET STRING of one primitive chunk.
        cursor.enter(iid_der.OCTET_STRING_CONSTRUCTED, indefinite_ok=True)
        chunks = []
        while not cursor.at_end():
            chunks.append(cursor.primitive(iid_der.OCTET_STRING))
        cursor.leave()
        content = b"".join(chunks)
    else:
        content = cursor.primitive(iid_der.OCTET_STRING)
    cursor.leave()
    cursor.leave()
    return content


def _read_signer(cursor: Cursor, digest_algorithm: Algorithm, content: bytes) -> Envelope:
    cursor.enter(iid_der.SET)
    if cursor.at_end():
        raise CMSError("it has no signer")
    cursor.enter(iid_der.SEQUENCE)
    version = cursor.primitive(iid_der.INTEGER)
    if version == b"\x03":
        raise _unsupported("its signer is named by key identifier, not issuer and serial number")
    if version != b"\x01":
        raise CMSError("its SignerInfo version is not 1")
    signer_id = cursor.element(iid_der.SEQUENCE)
    if _digest_algorithm(cursor.element(iid_der.SEQUENCE)) != digest_algorithm:
        raise CMSError("its signer's digest algorithm is not the one it announces")
    if cursor.peek() != iid_der.CONTEXT_0:
        raise _unsupported("it has no signed attributes")
    signed_attributes = cursor.element(iid_der.CONTEXT_0)
    signature_algorithm = _signature_algorithm(cursor.element(iid_der.SEQUENCE))
    signature = cursor.primitive(iid_der.OCTET_STRING)
    if not cursor.at_end():
        raise _unsupported("it carries unsigned attributes")
    cursor.leave()
    if not cursor.at_end():
        raise _unsupported("it has more than one signer")
    cursor.leave()
    return Envelope(
        content=content,
        signer_id=signer_id,
        digest_algorithm=digest_algorithm,
        signature_algorithm=signature_algorithm,
        signed_attributes=signed_attributes,
        signature=signature,
    )


def read_envelope(raw: bytes) -> Envelope:
    """Locate the parts of a CMS ContentInfo/SignedData shaped as AWS produces it.

    AWS's exact layout is read by position; anything else goes through the parser, which
    accepts other legitimate encodings and says why it refuses the rest. Raises CMSError.
    """
    envelope = _read_aws_envelope(raw)
    return envelope if envelope is not None else parse_envelope(raw)


def parse_envelope(raw: bytes) -> Envelope:
    """Parse a CMS ContentInfo/SignedData of any encoding the profile allows.

    BER indefinite lengths are accepted around the content, as AWS uses them; the signer must be
    DER. Certificates and CRLs carried in the blob are stepped over unread. Raises CMSError.
    """
    cursor = Cursor(raw)
    try:
        cursor.enter(iid_der.SEQUENCE, indefinite_ok=True)
        if cursor.primitive(iid_der.OBJECT_IDENTIFIER) != OID_SIGNED_DATA:
            raise CMSError("it is not a PKCS#7 SignedData structure")
        cursor.enter(iid_der.CONTEXT_0, indefinite_ok=True)
        cursor.enter(iid_der.SEQUENCE, indefinite_ok=True)
        if cursor.primitive(iid_der.INTEGER) != b"\x01":
            raise CMSError("its SignedData version is not 1")
        digest_algorithm = _digest_algorithm_set(cursor.element(iid_der.SET))
        content = _read_content(cursor)
        tag = cursor.peek()
        if tag == iid_der.CONTEXT_0:
            cursor.skip()
            tag = cursor.peek()
        if tag == iid_der.CONTEXT_1:
            cursor.skip()
        envelope = _read_signer(cursor, digest_algorithm, content)
        cursor.leave()
        cursor.leave()
        cursor.leave()
        if not cursor.done():
            raise CMSError("bytes follow the PKCS#7 structure")
    except DERError as exc:
        raise CMSError("it is not a well-formed PKCS#7 structure", str(exc)) from None
    return envelope


def _single(value: bytes, tag: int) -> bytes:
    cursor = Cursor(value)
    contents = cursor.primitive(tag)
    if not cursor.done():
        raise DERError("unexpected bytes after an attribute value")
    return contents


def _read_protection(value: bytes) -> tuple[Algorithm, Algorithm]:
    """RFC 6211 CMSAlgorithmProtection: the digest and signature algorithms, signed."""
    cursor = Cursor(value)
    cursor.enter(iid_der.SEQUENCE)
    digest = _parse_algorithm(cursor.element(iid_der.SEQUENCE))
    cursor.enter(iid_der.CONTEXT_1)
    oid = cursor.primitive(iid_der.OBJECT_IDENTIFIER)
    parameters = b"" if cursor.at_end() else cursor.element()
    cursor.leave()
    if not cursor.at_end():
        raise DERError("the algorithm protection names a MAC algorithm")
    cursor.leave()
    if not cursor.done():
        raise DERError("unexpected bytes after the algorithm protection")
    return digest, (oid, parameters)


def parse_attributes(encoded: bytes) -> Attributes:
    """The signed attributes of any layout, which must be DER: sorted, single-valued, each once.

    Raises CMSError.
    """
    values: dict[bytes, bytes] = {}
    try:
        cursor = Cursor(encoded)
        cursor.enter(iid_der.CONTEXT_0)
        previous = b""
        while not cursor.at_end():
            start = cursor.pos
            cursor.enter(iid_der.SEQUENCE)
            attribute_type = cursor.primitive(iid_der.OBJECT_IDENTIFIER)
            cursor.enter(iid_der.SET)
            value = cursor.element()
            if not cursor.at_end():
                raise CMSError("a signed attribute has more than one value")
            cursor.leave()
            cursor.leave()
            encoding = encoded[start : cursor.pos]
            if encoding <= previous:
                raise CMSError("its signed attributes are not in DER order")
            previous = encoding
            if attribute_type in values:
                raise CMSError("a signed attribute appears twice")
            if attribute_type not in _KNOWN_ATTRIBUTES:
                raise _unsupported("it carries a signed attribute AWS does not use")
            values[attribute_type] = value
        cursor.leave()
        if not cursor.done():
            raise DERError("unexpected bytes after the signed attributes")
        if OID_CONTENT_TYPE not in values or OID_MESSAGE_DIGEST not in values:
            raise CMSError("its signed attributes lack the content type or the message digest")
        content_type = _single(values[OID_CONTENT_TYPE], iid_der.OBJECT_IDENTIFIER)
        message_digest = _single(values[OID_MESSAGE_DIGEST], iid_der.OCTET_STRING)
        signing_time = None
        if OID_SIGNING_TIME in values:
            value = values[OID_SIGNING_TIME]
            signing_time = iid_der.parse_time(value[0], _single(value, value[0]))
        protection = None
        if OID_ALGORITHM_PROTECTION in values:
            protection = _read_protection(values[OID_ALGORITHM_PROTECTION])
    except DERError as exc:
        raise CMSError("its signed attributes are not well-formed", str(exc)) from None
    return Attributes(content_type, message_digest, signing_time, protection)


def read_attributes(encoded: bytes) -> Attributes:
    """The signed attributes: AWS's exact layout is matched in one step, any other is parsed.

    Both ways give the same result for AWS's layout (the tests check it); the match only saves
    the parse on the join path. Raises CMSError.
    """
    match = _AWS_ATTRIBUTES.fullmatch(encoded)
    if match is None:
        return parse_attributes(encoded)
    try:
        signing_time = iid_der.parse_time(iid_der.UTC_TIME, match[1])
    except DERError as exc:
        raise CMSError("its signed attributes are not well-formed", str(exc)) from None
    return Attributes(OID_DATA, match[2], signing_time, _AWS_PROTECTION)
