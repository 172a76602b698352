"""A test signing authority that writes EC2 identity documents the way AWS does.

Real documents cannot be made for tests (AWS holds the keys) and the two public samples are
frozen in 2021, so tests that need a fresh or particular document sign one here: the same CMS
SignedData as IMDS `rsa2048` (BER indefinite lengths, the JSON in a constructed OCTET STRING,
signed attributes contentType, signingTime, CMSAlgorithmProtection and messageDigest, no
certificates, one RSA-2048 signer named by issuer and serial number), with one self-signed
certificate per region that `write_certs` puts where `JOINADMIN_IID_CERTS_DIR` points.

The signer info is built with pyasn1's RFC 5652 classes, an encoder independent of the reader
under test. Keys are cached per (authority, region) for the whole test run, so signing is cheap
and two signers of the same authority trust each other; another authority name gives other keys
(an attacker).
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Collection, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any, Literal

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID
from pyasn1.codec.der import decoder as der_decoder
from pyasn1.codec.der import encoder as der_encoder
from pyasn1.type import univ, useful
from pyasn1_modules import rfc4055, rfc5280, rfc5652, rfc6211

DEFAULT_REGIONS = ("us-west-2", "us-west-1", "us-east-1")
DEFAULT_ACCOUNT_ID = "123456789012"
DEFAULT_INSTANCE_ID = "i-0123456789abcdef0"
# Wide like AWS's own certificates (valid into the 2190s), so any frozen clock is inside.
CERT_NOT_BEFORE = datetime(2000, 1, 1, tzinfo=UTC)
CERT_NOT_AFTER = datetime(2199, 12, 31, tzinfo=UTC)

# The signed attributes AWS writes, by the names `leave_out` takes.
ATTRIBUTE_NAMES = ("contentType", "signingTime", "algorithmProtection", "messageDigest")
SignatureAlgorithm = Literal["sha256WithRSAEncryption", "rsaEncryption"]
_SIGNATURE_OIDS = {
    "sha256WithRSAEncryption": rfc4055.sha256WithRSAEncryption,
    "rsaEncryption": rfc4055.rsaEncryption,
}


def _utc_seconds(moment: datetime | None) -> datetime:
    moment = moment or datetime.now(UTC)
    return moment.astimezone(UTC).replace(microsecond=0)


def make_document(
    account_id: str = DEFAULT_ACCOUNT_ID,
    instance_id: str = DEFAULT_INSTANCE_ID,
    region: str = "us-west-2",
    pending_time: datetime | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """An identity document with every field IMDS returns, in its key order.

    `pending_time` defaults to now (a frozen clock's now under time_machine). `extra` adds or
    overrides fields by their JSON names, e.g. `privateIp="10.1.2.3"` or `region=None`.
    """
    document: dict[str, Any] = {
        "accountId": account_id,
        "architecture": "x86_64",
        "availabilityZone": f"{region}a",
        "billingProducts": None,
        "devpayProductCodes": None,
        "marketplaceProductCodes": None,
        "imageId": "ami-0fa9e1f64142cde17",
        "instanceId": instance_id,
        "instanceType": "t3.micro",
        "kernelId": None,
        "pendingTime": _utc_seconds(pending_time).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "privateIp": "10.0.0.12",
        "ramdiskId": None,
        "region": region,
        "version": "2017-09-30",
    }
    document.update(extra)
    return document


def document_bytes(document: Mapping[str, Any]) -> bytes:
    """The JSON text exactly as IMDS lays it out (two-space indent, ` : ` separators)."""
    return json.dumps(document, indent=2, separators=(",", " : ")).encode()


def to_base64(binary: bytes, *, armour: bool = False) -> str:
    """Base64 in 76-character lines without a final newline, as IMDS serves the document."""
    text = base64.b64encode(binary).decode("ascii")
    body = "\n".join(text[i : i + 76] for i in range(0, len(text), 76))
    return f"-----BEGIN PKCS7-----\n{body}\n-----END PKCS7-----" if armour else body


def tamper(blob: str, offset: int, mask: int = 0x01) -> str:
    """The same document with the byte at `offset` of its binary XORed with `mask`."""
    binary = bytearray(base64.b64decode(blob))
    binary[offset] ^= mask
    return to_base64(bytes(binary))


@cache
def _authority(authority: str, region: str) -> tuple[rsa.RSAPrivateKey, x509.Certificate]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    # One issuer name per authority for all regions, as AWS does: the serial tells them apart.
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, "US"),
            x509.NameAttribute(NameOID.STATE_OR_PROVINCE_NAME, "Washington State"),
            x509.NameAttribute(NameOID.LOCALITY_NAME, "Seattle"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, f"{authority} signing authority"),
        ]
    )
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(CERT_NOT_BEFORE)
        .not_valid_after(CERT_NOT_AFTER)
        .sign(key, hashes.SHA256())
    )
    return key, certificate


def _tlv(tag: int, contents: bytes) -> bytes:
    length = len(contents)
    if length < 0x80:
        return bytes((tag, length)) + contents
    octets = length.to_bytes((length.bit_length() + 7) // 8, "big")
    return bytes((tag, 0x80 | len(octets))) + octets + contents


def _algorithm(oid: univ.ObjectIdentifier) -> rfc5280.AlgorithmIdentifier:
    algorithm = rfc5280.AlgorithmIdentifier()
    algorithm["algorithm"] = oid
    algorithm["parameters"] = univ.Null("")
    return algorithm


def _attribute(oid: univ.ObjectIdentifier, value: Any) -> rfc5652.Attribute:
    attribute = rfc5652.Attribute()
    attribute["attrType"] = oid
    # Values go in pre-encoded: pyasn1's constraint check wrongly counts the absent
    # macAlgorithm of a CMSAlgorithmProtection as present when it is nested in a SET OF.
    attribute["attrValues"].append(univ.Any(der_encoder.encode(value)))
    return attribute


class IIDSigner:
    """Signs identity documents for a few regions with keys of its own (see the module doc)."""

    def __init__(
        self, regions: Iterable[str] = DEFAULT_REGIONS, *, authority: str = "joinadmin test"
    ) -> None:
        self.regions = tuple(regions)
        self.authority = authority

    def certificate(self, region: str) -> x509.Certificate:
        """This authority's self-signed certificate for `region`."""
        return _authority(self.authority, region)[1]

    def write_certs(self, directory: str | Path) -> list[Path]:
        """Write `<region>.pem` for each region into `directory`; returns the paths."""
        folder = Path(directory)
        folder.mkdir(parents=True, exist_ok=True)
        paths = []
        for region in self.regions:
            path = folder / f"{region}.pem"
            path.write_bytes(self.certificate(region).public_bytes(serialization.Encoding.PEM))
            paths.append(path)
        return paths

    def sign(self, document: Mapping[str, Any] | bytes, **options: Any) -> str:
        """The base64 text IMDS would serve for `document`; options as for `sign_binary`."""
        return to_base64(self.sign_binary(document, **options))

    def sign_binary(
        self,
        document: Mapping[str, Any] | bytes,
        *,
        region: str | None = None,
        signing_time: datetime | None = None,
        leave_out: Collection[str] = (),
        signature_algorithm: SignatureAlgorithm = "sha256WithRSAEncryption",
        protected_signature_algorithm: SignatureAlgorithm | None = None,
        signed_content_type: str | None = None,
        extra_signed_attributes: Sequence[tuple[str, Any]] = (),
        sorted_attributes: bool = True,
        certificates: Sequence[x509.Certificate] = (),
        encoding: Literal["ber", "der"] = "ber",
    ) -> bytes:
        """The binary PKCS#7 for `document` (a dict, or raw content bytes).

        `region` picks the signing key (default: the document's region). The other options make
        the legitimate variants a verifier must accept (`der`, `rsaEncryption`, `leave_out` the
        optional signingTime or algorithmProtection) and the hostile ones it must refuse:
        embedded `certificates`, a key of the wrong region, a signing time outside the
        certificate, an algorithm protection naming another signature algorithm than the one
        used, a `signed_content_type` other than id-data, `leave_out` a mandatory attribute,
        `extra_signed_attributes` as (dotted OID, pyasn1 value) pairs, attributes out of DER
        order.
        """
        content = document if isinstance(document, bytes) else document_bytes(document)
        if region is None:
            if isinstance(document, bytes):
                raise ValueError("pass region= when signing raw content")
            region = str(document["region"])
        key, certificate = _authority(self.authority, region)
        signature_oid = _SIGNATURE_OIDS[signature_algorithm]

        unknown = set(leave_out) - set(ATTRIBUTE_NAMES)
        if unknown:
            raise ValueError(f"unknown signed attributes {sorted(unknown)}")
        attributes = []
        if "contentType" not in leave_out:
            content_type = univ.ObjectIdentifier(signed_content_type or str(rfc5652.id_data))
            attributes.append(_attribute(rfc5652.id_contentType, content_type))
        if "signingTime" not in leave_out:
            when = rfc5652.SigningTime()
            stamp = _utc_seconds(signing_time).strftime("%y%m%d%H%M%SZ")
            when["utcTime"] = useful.UTCTime(stamp)
            attributes.append(_attribute(rfc5652.id_signingTime, when))
        if "algorithmProtection" not in leave_out:
            protection = rfc6211.CMSAlgorithmProtection()
            protection["digestAlgorithm"] = _algorithm(rfc4055.id_sha256)
            protected = _SIGNATURE_OIDS[protected_signature_algorithm or signature_algorithm]
            protection["signatureAlgorithm"]["algorithm"] = protected
            protection["signatureAlgorithm"]["parameters"] = univ.Null("")
            attributes.append(_attribute(rfc6211.id_aa_cmsAlgorithmProtect, protection))
        if "messageDigest" not in leave_out:
            digest = rfc5652.MessageDigest(hashlib.sha256(content).digest())
            attributes.append(_attribute(rfc5652.id_messageDigest, digest))
        for oid, value in extra_signed_attributes:
            attributes.append(_attribute(univ.ObjectIdentifier(oid), value))

        # The signature covers the attributes' DER as a SET OF (sorted encodings); the signer
        # info carries the same bytes under [0].
        to_sign = rfc5652.SignedAttributes()
        for attribute in attributes:
            to_sign.append(attribute)
        der_set = der_encoder.encode(to_sign)
        encodings = sorted(der_encoder.encode(attribute) for attribute in attributes)
        if _tlv(0x31, b"".join(encodings)) != der_set:
            raise AssertionError("the signed attributes do not sort as DER requires")
        if not sorted_attributes:
            encodings.reverse()
        signed_der = _tlv(0x31, b"".join(encodings))
        signature = key.sign(signed_der, padding.PKCS1v15(), hashes.SHA256())

        issuer, _ = der_decoder.decode(certificate.issuer.public_bytes(), asn1Spec=rfc5280.Name())
        signer = rfc5652.SignerInfo()
        signer["version"] = 1
        signer["sid"]["issuerAndSerialNumber"]["issuer"] = issuer
        signer["sid"]["issuerAndSerialNumber"]["serialNumber"] = certificate.serial_number
        signer["digestAlgorithm"] = _algorithm(rfc4055.id_sha256)
        for attribute in attributes:
            signer["signedAttrs"].append(attribute)
        signer["signatureAlgorithm"] = _algorithm(signature_oid)
        signer["signature"] = signature
        signer_der = der_encoder.encode(signer)
        if b"\xa0" + der_set[1:] not in signer_der:
            raise AssertionError("signed attributes were encoded differently twice")
        signer_der = signer_der.replace(b"\xa0" + der_set[1:], b"\xa0" + signed_der[1:])
        if encoding == "der" and not sorted_attributes:
            raise ValueError("unsorted attributes are only written in the BER layout")

        digest_algorithms = rfc5652.DigestAlgorithmIdentifiers()
        digest_algorithms.append(_algorithm(rfc4055.id_sha256))
        if encoding == "der":
            return self._der(content, digest_algorithms, signer, certificates)
        certificate_set = b"".join(c.public_bytes(serialization.Encoding.DER) for c in certificates)
        eoc = b"\x00\x00"
        # AWS's layout: indefinite lengths down to a constructed OCTET STRING of one chunk.
        signed_data = (
            b"\x30\x80"
            + der_encoder.encode(univ.Integer(1))
            + der_encoder.encode(digest_algorithms)
            + b"\x30\x80"
            + der_encoder.encode(rfc5652.id_data)
            + b"\xa0\x80\x24\x80"
            + der_encoder.encode(univ.OctetString(content))
            + eoc * 3
            + (_tlv(0xA0, certificate_set) if certificates else b"")
            + _tlv(0x31, signer_der)
            + eoc
        )
        return (
            b"\x30\x80"
            + der_encoder.encode(rfc5652.id_signedData)
            + b"\xa0\x80"
            + (signed_data + eoc * 2)
        )

    @staticmethod
    def _der(
        content: bytes,
        digest_algorithms: rfc5652.DigestAlgorithmIdentifiers,
        signer: rfc5652.SignerInfo,
        certificates: Sequence[x509.Certificate],
    ) -> bytes:
        signed_data = rfc5652.SignedData()
        signed_data["version"] = 1
        signed_data["digestAlgorithms"] = digest_algorithms
        signed_data["encapContentInfo"]["eContentType"] = rfc5652.id_data
        signed_data["encapContentInfo"]["eContent"] = content
        for certificate in certificates:
            decoded, _ = der_decoder.decode(
                certificate.public_bytes(serialization.Encoding.DER),
                asn1Spec=rfc5280.Certificate(),
            )
            choice = rfc5652.CertificateChoices()
            choice["certificate"] = decoded
            signed_data["certificates"].append(choice)
        signed_data["signerInfos"].append(signer)
        content_info = rfc5652.ContentInfo()
        content_info["contentType"] = rfc5652.id_signedData
        content_info["content"] = der_encoder.encode(signed_data)
        return der_encoder.encode(content_info)
