"""Verification of an EC2 instance identity document (the IMDS `rsa2048` PKCS#7 body).

An agent proves that it runs on an EC2 instance by sending the document AWS signed for it. This
module turns that text into an `IdentityDocument` only when AWS's certificate for the document's
region signed it; any other input raises `IIDError` carrying a machine code. It reads the signed
content and nothing else, never trusts a certificate carried inside the blob, and refuses every
deviation from the shape AWS produces, so that no edit of a genuine document is accepted.
No Django here: the join service, the `verify_iid` command and the benchmark share it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any, NamedTuple

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from joins import iid_der
from joins.iid_cms import OID_DATA, Attributes, CMSError, Envelope, read_attributes, read_envelope
from joins.iid_der import Cursor, DERError

IID_MALFORMED = "iid_malformed"
IID_UNSUPPORTED_FORM = "iid_unsupported_form"
IID_REGION_UNSUPPORTED = "iid_region_unsupported"
IID_SIGNATURE_INVALID = "iid_signature_invalid"
IID_ERROR_CODES = (
    IID_MALFORMED,
    IID_UNSUPPORTED_FORM,
    IID_REGION_UNSUPPORTED,
    IID_SIGNATURE_INVALID,
)

# A genuine document is about 1.5 KB of base64; the cap bounds the work a stranger can cause.
MAX_DOCUMENT_CHARS = 16 * 1024
BUILT_IN = "built-in"
MIN_RSA_KEY_BITS = 2048

_CERTS_DIR = Path(__file__).with_name("iid_certs")
_ARMOUR_BEGIN = "-----BEGIN PKCS7-----"
_ARMOUR_END = "-----END PKCS7-----"
_ASCII_WHITESPACE = " \t\r\n\v\f"
_WHITESPACE = str.maketrans("", "", _ASCII_WHITESPACE)
# IMDS `/signature` is a bare RSA-1024 signature over `/document`: exactly this many bytes.
_DETACHED_SIGNATURE_BYTES = 128
_PKCS1V15 = padding.PKCS1v15()
_SHA256 = hashes.SHA256()

_REGION = re.compile(r"[a-z]{2,8}(?:-[a-z]{2,16}){1,3}-[0-9]{1,3}")
_ACCOUNT_ID = re.compile(r"[0-9]{12}")
# EC2 instance ids carry 8 (older) or 17 hexadecimal digits.
_INSTANCE_ID = re.compile(r"i-(?:[0-9a-f]{8}|[0-9a-f]{17})")
_RFC3339 = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]{1,9})?"
    r"(?:[Zz]|[+-][0-9]{2}:[0-9]{2})"
)


def is_region_name(value: str) -> bool:
    """Whether `value` has the shape of an AWS region name (`us-west-2`, `eusc-de-east-1`).

    The one rule for region names: the document reader, the certificate files and the console's
    trusted-certificate form all use it, so a certificate can only be added for a region name a
    document could carry.
    """
    return isinstance(value, str) and _REGION.fullmatch(value) is not None


class IIDError(Exception):
    """A refused identity document.

    `code` is one of `IID_ERROR_CODES` (the API returns it, the audit row stores it); `message` is
    a plain sentence an auditor can act on; `detail` adds the technical reason when there is one.
    """

    def __init__(self, code: str, message: str, detail: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.detail = detail or message

    def __str__(self) -> str:
        return self.message


def _malformed(reason: str, detail: str | None = None) -> IIDError:
    return IIDError(IID_MALFORMED, f"The identity document is malformed: {reason}.", detail)


def _unsupported(reason: str, detail: str | None = None) -> IIDError:
    return IIDError(
        IID_UNSUPPORTED_FORM,
        f"The identity document is not in the supported rsa2048 form: {reason}.",
        detail,
    )


def _invalid(message: str, detail: str | None = None) -> IIDError:
    return IIDError(IID_SIGNATURE_INVALID, message, detail)


@dataclass(frozen=True)
class IdentityDocument:
    """The signed content of a verified document; nothing outside the signature is kept."""

    account_id: str
    instance_id: str
    region: str
    pending_time: datetime
    availability_zone: str
    image_id: str
    instance_type: str
    private_ip: str
    architecture: str
    signing_time: datetime | None
    raw: dict[str, Any] = field(repr=False, hash=False)

    @property
    def host_id(self) -> str:
        """Teleport's host id rule for EC2: `<accountId>-<instanceId>`."""
        return f"{self.account_id}-{self.instance_id}"


def document_summary(document: IdentityDocument | None) -> dict[str, str | None]:
    """Who a document names, as reports show it (every value None without a document)."""
    if document is None:
        return dict.fromkeys(("host_id", "account_id", "region", "instance_id", "pending_time"))
    return {
        "host_id": document.host_id,
        "account_id": document.account_id,
        "region": document.region,
        "instance_id": document.instance_id,
        "pending_time": document.pending_time.isoformat(),
    }


@dataclass(frozen=True, slots=True)
class TrustedCertificate:
    """A region's certificate and what verification needs from it, worked out once per store."""

    certificate: x509.Certificate
    public_key: rsa.RSAPublicKey
    signer_id: bytes
    not_before: datetime
    not_after: datetime
    source: str


def _signer_id(certificate: x509.Certificate) -> bytes:
    """The IssuerAndSerialNumber a signature by this certificate names, from its own bytes.

    Taking the issuer and serial octets from the certificate itself (rather than re-encoding the
    parsed values) makes the comparison with the document an exact byte comparison.
    """
    cursor = Cursor(certificate.tbs_certificate_bytes)
    cursor.enter(iid_der.SEQUENCE)
    if cursor.peek() == iid_der.CONTEXT_0:
        cursor.skip()
    serial = cursor.element(iid_der.INTEGER)
    cursor.element(iid_der.SEQUENCE)
    issuer = cursor.element(iid_der.SEQUENCE)
    return iid_der.encode(iid_der.SEQUENCE, issuer + serial)


def _trust(region: str, certificate: x509.Certificate, source: str) -> TrustedCertificate:
    if not _REGION.fullmatch(region):
        raise ValueError(f"{source}: {region!r} is not an AWS region name (files are <region>.pem)")
    key = certificate.public_key()
    if not isinstance(key, rsa.RSAPublicKey) or key.key_size < MIN_RSA_KEY_BITS:
        raise ValueError(
            f"{source}: the certificate for {region} must hold an RSA key of at least "
            f"{MIN_RSA_KEY_BITS} bits (the rsa2048 form is signed with RSA)"
        )
    try:
        signer_id = _signer_id(certificate)
    except DERError as exc:
        raise ValueError(f"{source}: the certificate for {region} cannot be read: {exc}") from None
    return TrustedCertificate(
        certificate=certificate,
        public_key=key,
        signer_id=signer_id,
        not_before=certificate.not_valid_before_utc,
        not_after=certificate.not_valid_after_utc,
        source=source,
    )


def _read_pem(path: Path) -> x509.Certificate:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ValueError(f"{path}: cannot read the certificate file: {exc.strerror}") from None
    try:
        certificates = x509.load_pem_x509_certificates(data)
    except ValueError:
        raise ValueError(f"{path}: not a PEM certificate") from None
    if len(certificates) != 1:
        raise ValueError(f"{path}: expected exactly one certificate, found {len(certificates)}")
    return certificates[0]


@cache
def _built_in() -> tuple[tuple[str, x509.Certificate], ...]:
    """AWS's published regional certificates shipped with the package, read once per process."""
    paths = sorted(_CERTS_DIR.glob("*.pem"))
    if not paths:
        raise RuntimeError(f"no built-in AWS certificates found in {_CERTS_DIR}")
    return tuple((path.stem, _read_pem(path)) for path in paths)


class CertificateStore:
    """AWS's signing certificate for each region, and nothing else, is trusted.

    The document's (not yet verified) region selects one certificate; a document from a region
    without a certificate is refused. Immutable once built, so one store can serve all threads.
    """

    def __init__(self, certificates: Iterable[tuple[str, x509.Certificate, str]]) -> None:
        """Build from (region, certificate, source) triples; a later region replaces an earlier.

        Raises ValueError for a malformed region name or a certificate without a usable RSA key.
        """
        self._trusted: dict[str, TrustedCertificate] = {}
        for region, certificate, source in certificates:
            self._trusted[region] = _trust(region, certificate, source)

    @classmethod
    def load(cls, extra_dir: str | Path | None = None) -> CertificateStore:
        """The built-in certificates, then every `<region>.pem` of `extra_dir` on top.

        A file there adds its region or replaces the built-in certificate for it (AWS rotating a
        certificate, a new region, a test authority). Any unreadable file is a ValueError naming
        it: a half-loaded trust store would fail joins later with a confusing reason.
        """
        entries: list[tuple[str, x509.Certificate, str]] = [
            (region, certificate, BUILT_IN) for region, certificate in _built_in()
        ]
        if extra_dir is not None and str(extra_dir) != "":
            directory = Path(extra_dir)
            if not directory.is_dir():
                raise ValueError(f"IID certificate directory {directory} is not a directory")
            for path in sorted(directory.glob("*.pem")):
                if not path.is_file():
                    raise ValueError(f"{path}: not a regular file")
                entries.append((path.stem, _read_pem(path), str(path)))
        return cls(entries)

    def get(self, region: str) -> x509.Certificate | None:
        """The certificate trusted for `region`, if any."""
        trusted = self._trusted.get(region)
        return trusted.certificate if trusted else None

    def regions(self) -> list[str]:
        """Every region with a certificate, sorted."""
        return sorted(self._trusted)

    def items(self) -> list[tuple[str, x509.Certificate, str]]:
        """(region, certificate, source) sorted by region; source is "built-in" or a file path."""
        return [
            (region, self._trusted[region].certificate, self._trusted[region].source)
            for region in sorted(self._trusted)
        ]

    def trusted(self, region: str) -> TrustedCertificate | None:
        """The certificate for `region` with its public key and signer id, if any."""
        return self._trusted.get(region)

    def __len__(self) -> int:
        return len(self._trusted)

    def __contains__(self, region: object) -> bool:
        return region in self._trusted


def decode_blob(data: str | bytes) -> bytes:
    """The binary PKCS#7 from the base64 text an agent sends (PEM armour optional).

    Whitespace and line breaks anywhere are ignored; anything else must be canonical base64
    (padding present, unused bits zero), checked by re-encoding, so that two different texts never
    decode to the same accepted document.
    """
    if isinstance(data, bytes | bytearray):
        if len(data) > MAX_DOCUMENT_CHARS:
            raise _malformed(f"it is longer than {MAX_DOCUMENT_CHARS} characters")
        try:
            text = bytes(data).decode("ascii")
        except UnicodeDecodeError:
            raise _malformed("it is not base64 text") from None
    elif isinstance(data, str):
        text = data
    else:
        raise _malformed("it is not text")
    if len(text) > MAX_DOCUMENT_CHARS:
        raise _malformed(f"it is longer than {MAX_DOCUMENT_CHARS} characters")
    text = text.strip(_ASCII_WHITESPACE)
    if text.startswith("{"):
        raise _unsupported(
            "it is the plain JSON document, which carries no signature; the agent must send "
            "the document from /latest/dynamic/instance-identity/rsa2048"
        )
    if text.startswith(_ARMOUR_BEGIN):
        if not text.endswith(_ARMOUR_END) or len(text) < len(_ARMOUR_BEGIN) + len(_ARMOUR_END):
            raise _malformed("its PEM armour is not closed")
        text = text[len(_ARMOUR_BEGIN) : -len(_ARMOUR_END)]
    # IMDS breaks lines with "\n" only; other whitespace takes the slower general removal.
    compact = text.replace("\n", "")
    try:
        raw = base64.b64decode(compact, validate=True)
    except (binascii.Error, ValueError):
        compact = text.translate(_WHITESPACE)
        try:
            raw = base64.b64decode(compact, validate=True)
        except (binascii.Error, ValueError):
            raise _malformed("it is not base64 text") from None
    if not raw:
        raise _malformed("it is empty")
    if binascii.b2a_base64(raw, newline=False).decode("ascii") != compact:
        raise _malformed("it is not canonical base64")
    return raw


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # Two values for one key could be read differently by another parser; AWS never repeats one.
    result = dict(pairs)
    if len(result) != len(pairs):
        raise ValueError("duplicate key")
    return result


def _refuse_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


def _parse_rfc3339(value: str) -> datetime:
    if not _RFC3339.fullmatch(value):
        raise ValueError("not an RFC 3339 date-time")
    # The pattern admits only RFC 3339, which fromisoformat reads once the letters are upper case.
    return datetime.fromisoformat(value.upper()).astimezone(UTC)


class _Fields(NamedTuple):
    document: dict[str, Any]
    account_id: str
    instance_id: str
    region: str
    pending_time: datetime


def _read_fields(content: bytes) -> _Fields:
    """The JSON object and its four required fields, checked for shape."""
    try:
        document = json.loads(
            content.decode("utf-8"),
            object_pairs_hook=_unique_keys,
            parse_constant=_refuse_constant,
        )
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise _malformed("its signed content is not a JSON object") from None
    if not isinstance(document, dict):
        raise _malformed("its signed content is not a JSON object")
    account_id = document.get("accountId")
    if not isinstance(account_id, str) or not _ACCOUNT_ID.fullmatch(account_id):
        raise _malformed("accountId is not a 12-digit AWS account id")
    instance_id = document.get("instanceId")
    if not isinstance(instance_id, str) or not _INSTANCE_ID.fullmatch(instance_id):
        raise _malformed("instanceId is not an EC2 instance id")
    region = document.get("region")
    if not isinstance(region, str) or not _REGION.fullmatch(region):
        raise _malformed("region is not an AWS region name")
    pending = document.get("pendingTime")
    try:
        if not isinstance(pending, str):
            raise ValueError("not a string")
        pending_time = _parse_rfc3339(pending)
    except (ValueError, OverflowError):
        raise _malformed("pendingTime is not an RFC 3339 date-time") from None
    return _Fields(document, account_id, instance_id, region, pending_time)


def _identity(fields: _Fields, signing_time: datetime | None) -> IdentityDocument:
    """The IdentityDocument of checked fields; the optional ones are checked here."""
    document = fields.document
    return IdentityDocument(
        account_id=fields.account_id,
        instance_id=fields.instance_id,
        region=fields.region,
        pending_time=fields.pending_time,
        availability_zone=_optional_text(document, "availabilityZone"),
        image_id=_optional_text(document, "imageId"),
        instance_type=_optional_text(document, "instanceType"),
        private_ip=_optional_text(document, "privateIp"),
        architecture=_optional_text(document, "architecture"),
        signing_time=signing_time,
        raw=document,
    )


def _optional_text(document: dict[str, Any], key: str) -> str:
    value = document.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise _malformed(f"{key} is not a string")
    return value


def _serial_of(signer_id: bytes) -> str:
    """The serial number a signer names, in hex, for an auditor's message."""
    try:
        cursor = Cursor(signer_id)
        cursor.enter(iid_der.SEQUENCE)
        cursor.element(iid_der.SEQUENCE)
        return cursor.primitive(iid_der.INTEGER).hex()
    except DERError:
        return "unreadable"


def _check_signature(
    envelope: Envelope, attributes: Attributes, trusted: TrustedCertificate, region: str
) -> None:
    """Bind the content to the region's certificate; any failure is `iid_signature_invalid`."""
    if envelope.signer_id != trusted.signer_id:
        raise _invalid(
            f"The identity document was not signed with AWS's certificate for {region}.",
            f"signer serial {_serial_of(envelope.signer_id)}, certificate for {region} has "
            f"serial {trusted.certificate.serial_number:x} ({trusted.source})",
        )
    if attributes.content_type != OID_DATA:
        raise _invalid("The identity document's signed content type is not id-data.")
    if attributes.protection is not None and attributes.protection != (
        envelope.digest_algorithm,
        envelope.signature_algorithm,
    ):
        raise _invalid("The identity document's signed algorithms differ from those it uses.")
    if attributes.message_digest != hashlib.sha256(envelope.content).digest():
        raise _invalid("The identity document's content does not match its signed digest.")
    if attributes.signing_time is not None and not (
        trusted.not_before <= attributes.signing_time <= trusted.not_after
    ):
        raise _invalid(
            f"The identity document was signed at {attributes.signing_time.isoformat()}, "
            f"outside the validity of AWS's certificate for {region}."
        )
    # The signature covers the DER of the signed attributes as a SET OF, not the [0] tag sent.
    signed = b"\x31" + envelope.signed_attributes[1:]
    try:
        trusted.public_key.verify(envelope.signature, signed, _PKCS1V15, _SHA256)
    except (InvalidSignature, ValueError):
        raise _invalid(
            f"The identity document's signature does not verify with AWS's certificate for "
            f"{region}."
        ) from None


def _verify(data: str | bytes, store: CertificateStore) -> IdentityDocument:
    raw = decode_blob(data)
    if len(raw) == _DETACHED_SIGNATURE_BYTES:
        raise _unsupported(
            "it is a bare RSA-1024 signature (the /signature form); the agent must send the "
            "document from /latest/dynamic/instance-identity/rsa2048"
        )
    try:
        envelope = read_envelope(raw)
        attributes = read_attributes(envelope.signed_attributes)
    except CMSError as exc:
        if exc.unsupported:
            raise _unsupported(exc.reason, exc.detail) from None
        raise _malformed(exc.reason, exc.detail) from None
    fields = _read_fields(envelope.content)
    region = fields.region
    trusted = store.trusted(region)
    if trusted is None:
        raise IIDError(
            IID_REGION_UNSUPPORTED,
            f"No AWS certificate is known for region {region}; an admin can add "
            f"{region}.pem to JOINADMIN_IID_CERTS_DIR.",
        )
    _check_signature(envelope, attributes, trusted, region)
    return _identity(fields, attributes.signing_time)


def recorded_document(
    fields: dict[str, Any], signing_time: datetime | None = None
) -> IdentityDocument:
    """The IdentityDocument of fields kept after their signature was verified.

    For re-checking a join attempt's recorded document (`JoinAttempt.document`, written only
    once `verify_document` accepted it) against a token in the policy tester. No signature is
    checked here, so this must never see a document from outside. Raises IIDError
    (`iid_malformed`) when the fields lack the shape a verified document has.
    """
    try:
        content = json.dumps(fields).encode("utf-8")
    except (TypeError, ValueError):
        raise _malformed("the recorded document is not JSON") from None
    return _identity(_read_fields(content), signing_time)


def verify_document(data: str | bytes, store: CertificateStore) -> IdentityDocument:
    """Verify an IMDS rsa2048 document against `store` and return its signed content.

    Raises IIDError and nothing else: `iid_malformed` (not base64, not SignedData, content not an
    identity document), `iid_unsupported_form` (DSA pkcs7, detached signature, plain JSON, or
    another CMS profile), `iid_region_unsupported`, `iid_signature_invalid`.
    """
    try:
        return _verify(data, store)
    except IIDError:
        raise
    except Exception as exc:
        # Fail closed: a reader bug on hostile input must still be a refusal with a code.
        raise _malformed("it could not be read", f"{type(exc).__name__}: {exc}") from exc
