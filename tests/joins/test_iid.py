"""The identity-document verifier (`joins.iid`): real AWS samples, a test authority, hostile input.

Verification never reads the clock, so nothing is frozen here. Where a test must show that no
input escapes as anything but IIDError, it calls `_verify`, which lacks the last-resort wrapper
of `verify_document`: the rules themselves must refuse, not the safety net.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import subprocess
import sys
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from pyasn1.codec.der import decoder as der_decoder
from pyasn1.codec.der import encoder as der_encoder
from pyasn1.type import univ
from pyasn1_modules import rfc4055, rfc5652

from joins import iid_cms
from joins.iid import (
    BUILT_IN,
    IID_ERROR_CODES,
    MAX_DOCUMENT_CHARS,
    CertificateStore,
    IdentityDocument,
    IIDError,
    _verify,
    decode_blob,
    verify_document,
)
from tests.support.iid_signer import IIDSigner, document_bytes, make_document, tamper, to_base64

SAMPLES_DIR = Path(__file__).parent / "samples"
INDEX = json.loads((SAMPLES_DIR / "index.json").read_text())["samples"]
RSA_SAMPLES = [entry for entry in INDEX if entry["signature_valid"] and "rsa2048" in entry["file"]]
DSA_SAMPLE = next(entry for entry in INDEX if "dsa" in entry["file"])
CERTS_DIR = Path(__file__).resolve().parents[2] / "joins" / "iid_certs"
SIGNER_REGIONS = ("us-west-2", "us-east-1", "xx-test-1")


def sample_text(entry: dict[str, Any]) -> str:
    return (SAMPLES_DIR / entry["file"]).read_text()


def sample_binary(entry: dict[str, Any]) -> bytes:
    return base64.b64decode(sample_text(entry))


def refusal(data: Any, store: CertificateStore) -> IIDError:
    with pytest.raises(IIDError) as caught:
        _verify(data, store)
    return caught.value


@pytest.fixture(scope="module")
def store() -> CertificateStore:
    return CertificateStore.load()


@pytest.fixture(scope="module")
def signer() -> IIDSigner:
    return IIDSigner(regions=SIGNER_REGIONS)


@pytest.fixture(scope="module")
def signer_store(signer: IIDSigner, tmp_path_factory: pytest.TempPathFactory) -> CertificateStore:
    folder = tmp_path_factory.mktemp("iid-certs")
    signer.write_certs(folder)
    return CertificateStore.load(folder)


# --- the real AWS samples -------------------------------------------------------------------


def test_the_samples_folder_holds_two_rsa2048_samples_and_the_dsa_one():
    assert [entry["region"] for entry in RSA_SAMPLES] == ["us-west-2", "us-west-1"]
    assert DSA_SAMPLE["form"].startswith("pkcs7")


@pytest.mark.parametrize("entry", RSA_SAMPLES, ids=lambda entry: entry["region"])
def test_both_rsa2048_samples_verify_and_yield_the_indexed_values(entry, store):
    document = verify_document(sample_text(entry), store)

    assert document.account_id == entry["account"]
    assert document.instance_id == entry["instance_id"]
    assert document.region == entry["region"]
    assert document.host_id == entry["expected_host_id"]
    assert document.pending_time == datetime.fromisoformat(entry["pending_time"])
    assert document.pending_time.tzinfo is UTC
    assert document.signing_time == datetime.fromisoformat(entry["signing_time"])
    assert format(store.get(entry["region"]).serial_number, "x") == entry["signer_serial_hex"]


@pytest.mark.parametrize("entry", RSA_SAMPLES, ids=lambda entry: entry["region"])
def test_the_returned_document_is_the_signed_json_and_nothing_else(entry, store):
    signed = json.loads((SAMPLES_DIR / entry["document_file"]).read_bytes())

    document = verify_document(sample_text(entry), store)

    assert document.raw == signed
    assert document.availability_zone == signed["availabilityZone"]
    assert document.image_id == signed["imageId"]
    assert document.instance_type == signed["instanceType"]
    assert document.private_ip == signed["privateIp"]
    assert document.architecture == signed["architecture"]


def reflow(text: str, width: int, newline: str = "\n") -> str:
    flat = text.replace("\n", "")
    return newline.join(flat[i : i + width] for i in range(0, len(flat), width))


LAYOUTS = {
    "as IMDS serves it": lambda text: text,
    "with a final newline": lambda text: text + "\n",
    "PEM armoured": lambda text: f"-----BEGIN PKCS7-----\n{text}\n-----END PKCS7-----\n",
    "on one line": lambda text: text.replace("\n", ""),
    "in 64-character lines": lambda text: reflow(text, 64),
    "with CRLF line ends": lambda text: reflow(text, 76, "\r\n"),
    "with spaces and tabs": lambda text: reflow(text, 10, " \t "),
    "armoured on one line": lambda text: (
        "-----BEGIN PKCS7-----" + text.replace("\n", "") + "-----END PKCS7-----"
    ),
    "as bytes": lambda text: text.encode("ascii"),
}


@pytest.mark.parametrize("layout", LAYOUTS.values(), ids=LAYOUTS.keys())
def test_it_accepts_armoured_unarmoured_and_reflowed_base64(layout, store):
    entry = RSA_SAMPLES[0]

    document = verify_document(layout(sample_text(entry)), store)

    assert document.host_id == entry["expected_host_id"]


def test_decode_blob_returns_the_binary_pkcs7():
    entry = RSA_SAMPLES[0]

    assert decode_blob(LAYOUTS["PEM armoured"](sample_text(entry))) == sample_binary(entry)


def with_padding_bit_set(text: str) -> str:
    flat = text.replace("\n", "")
    assert flat.endswith("=")
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    data = flat.rstrip("=")
    # The last character before padding carries unused low bits; setting one keeps the bytes.
    bumped = alphabet[alphabet.index(data[-1]) + 1]
    return data[:-1] + bumped + flat[len(data) :]


BAD_BASE64 = {
    "unused padding bits set": with_padding_bit_set,
    "padding removed": lambda text: text.rstrip("="),
    "extra padding": lambda text: text + "=",
    "a foreign character": lambda text: text[:100] + "*" + text[100:],
    "a dot for a line break": lambda text: text.replace("\n", ".", 1),
    "armour not closed": lambda text: f"-----BEGIN PKCS7-----\n{text}",
    "another armour label": lambda text: f"-----BEGIN CMS-----\n{text}\n-----END CMS-----",
    "a non-ASCII space": lambda text: text.replace("\n", "\u00a0", 1),
}


@pytest.mark.parametrize("change", BAD_BASE64.values(), ids=BAD_BASE64.keys())
def test_it_refuses_base64_that_is_not_canonical(change, store):
    sample = next(entry for entry in RSA_SAMPLES if sample_text(entry).endswith("="))

    error = refusal(change(sample_text(sample)), store)

    assert error.code == "iid_malformed"


def test_it_refuses_a_document_over_the_size_cap(store):
    text = sample_text(RSA_SAMPLES[0])
    padded = text + "\n" * (MAX_DOCUMENT_CHARS + 1 - len(text))

    assert refusal(padded, store).code == "iid_malformed"
    assert refusal(padded.encode(), store).code == "iid_malformed"


MASKS = (0x01, 0x02, 0x04, 0x08, 0x10, 0x20, 0x40, 0x80, 0xFF)


@pytest.mark.parametrize("entry", RSA_SAMPLES, ids=lambda entry: entry["region"])
def test_it_refuses_a_one_byte_change_at_every_offset_of_each_sample(entry, store):
    binary = sample_binary(entry)
    accepted = []
    for offset in range(len(binary)):
        for mask in MASKS:
            changed = bytearray(binary)
            changed[offset] ^= mask
            try:
                _verify(base64.b64encode(bytes(changed)).decode(), store)
            except IIDError as error:
                assert error.code in IID_ERROR_CODES
            else:
                accepted.append((offset, mask))

    assert accepted == []


@pytest.mark.parametrize("entry", RSA_SAMPLES, ids=lambda entry: entry["region"])
def test_the_aws_layout_shortcut_never_reads_a_changed_sample_differently(entry):
    binary = sample_binary(entry)
    for offset in range(len(binary)):
        for mask in MASKS:
            changed = bytearray(binary)
            changed[offset] ^= mask
            assert_shortcuts_agree(bytes(changed))


def assert_shortcuts_agree(binary: bytes) -> None:
    """The positional readers accept a subset of what the parsers accept, with equal results."""
    envelope = iid_cms._read_aws_envelope(binary)
    if envelope is None:
        return
    assert envelope == iid_cms.parse_envelope(binary)
    try:
        fast = iid_cms.read_attributes(envelope.signed_attributes)
    except iid_cms.CMSError:
        with pytest.raises(iid_cms.CMSError):
            iid_cms.parse_attributes(envelope.signed_attributes)
        return
    assert fast == iid_cms.parse_attributes(envelope.signed_attributes)


@pytest.mark.parametrize("entry", RSA_SAMPLES, ids=lambda entry: entry["region"])
def test_the_samples_take_the_aws_layout_shortcuts_with_the_parsers_results(entry):
    binary = sample_binary(entry)

    envelope = iid_cms._read_aws_envelope(binary)

    assert envelope is not None
    assert envelope == iid_cms.parse_envelope(binary)
    assert iid_cms._AWS_ATTRIBUTES.fullmatch(envelope.signed_attributes)
    assert iid_cms.read_attributes(envelope.signed_attributes) == iid_cms.parse_attributes(
        envelope.signed_attributes
    )


@pytest.mark.parametrize("entry", RSA_SAMPLES, ids=lambda entry: entry["region"])
def test_the_reader_finds_the_same_signer_as_pyasn1(entry):
    binary = sample_binary(entry)
    envelope = iid_cms.parse_envelope(binary)
    # The signer infos are DER, so pyasn1 can read them where its BER decoder cannot go.
    start = binary.index(b"\x31\x82", binary.index(envelope.content) + len(envelope.content))
    infos, rest = der_decoder.decode(binary[start:], asn1Spec=rfc5652.SignerInfos())
    signer = infos[0]

    assert rest == b"\x00" * 6
    assert der_encoder.encode(signer["sid"]) == envelope.signer_id
    assert der_encoder.encode(signer["signedAttrs"]) == envelope.signed_attributes
    assert bytes(signer["signature"]) == envelope.signature
    assert hashlib.sha256(envelope.content).digest() == (
        iid_cms.parse_attributes(envelope.signed_attributes).message_digest
    )


def test_a_sample_checked_against_another_regions_certificate_is_refused(tmp_path):
    (tmp_path / "us-west-2.pem").write_bytes((CERTS_DIR / "us-west-1.pem").read_bytes())
    swapped = CertificateStore.load(tmp_path)
    entry = next(entry for entry in RSA_SAMPLES if entry["region"] == "us-west-2")

    error = refusal(sample_text(entry), swapped)

    assert error.code == "iid_signature_invalid"
    assert "us-west-2" in error.message


def test_a_document_naming_one_region_but_signed_with_another_regions_key_is_refused(
    signer, signer_store
):
    blob = signer.sign(make_document(region="us-east-1"), region="us-west-2")

    assert refusal(blob, signer_store).code == "iid_signature_invalid"


@pytest.mark.parametrize("keep", [0.5, 0.9, -1, -2, -7, 20], ids=str)
def test_a_truncated_sample_is_malformed(keep, store):
    binary = sample_binary(RSA_SAMPLES[0])
    cut = int(len(binary) * keep) if isinstance(keep, float) else keep

    error = refusal(base64.b64encode(binary[:cut]).decode(), store)

    assert error.code == "iid_malformed"


@pytest.mark.parametrize("after", ["content", "first end-of-contents"])
def test_a_sample_cut_where_more_elements_may_follow_is_malformed(after, store):
    binary = sample_binary(RSA_SAMPLES[0])
    content = iid_cms.parse_envelope(binary).content
    content_end = binary.index(content) + len(content)
    cut = content_end + 6 if after == "content" else content_end + 2

    error = refusal(base64.b64encode(binary[:cut]).decode(), store)

    assert error.code == "iid_malformed"


def test_the_dsa_pkcs7_sample_is_an_unsupported_form(store):
    error = refusal(sample_text(DSA_SAMPLE), store)

    assert error.code == "iid_unsupported_form"
    assert "rsa2048" in error.message


def test_a_bare_128_byte_signature_is_an_unsupported_form(store):
    signature = base64.b64encode(hashlib.sha512(b"a").digest() * 2).decode()

    assert refusal(signature, store).code == "iid_unsupported_form"


def test_the_plain_json_document_is_an_unsupported_form(store):
    plain = (SAMPLES_DIR / RSA_SAMPLES[0]["document_file"]).read_text()

    assert refusal(plain, store).code == "iid_unsupported_form"


GARBAGE: dict[str, Any] = {
    "a word": "baddocument",
    "nothing": "",
    "blanks": " \n\t ",
    "punctuation": "not base64!!",
    "base64 of text": base64.b64encode(b"hello, world").decode(),
    "base64 of a DER integer": base64.b64encode(b"\x02\x01\x01").decode(),
    "a number": 42,
    "None": None,
    "non-ASCII bytes": b"\xff\xfe",
}


@pytest.mark.parametrize("garbage", GARBAGE.values(), ids=GARBAGE.keys())
def test_garbage_is_malformed(garbage, store):
    assert refusal(garbage, store).code == "iid_malformed"


def test_a_document_from_a_region_without_a_certificate_is_region_unsupported(signer, store):
    blob = signer.sign(make_document(region="xx-test-1"))

    error = refusal(blob, store)

    assert error.code == "iid_region_unsupported"
    assert "xx-test-1" in error.message


# --- documents from the test authority -------------------------------------------------------

VARIANTS: dict[str, dict[str, Any]] = {
    "as AWS writes them": {},
    "in DER": {"encoding": "der"},
    "signed with rsaEncryption": {"signature_algorithm": "rsaEncryption"},
    "without signing time": {"leave_out": ["signingTime"]},
    "without algorithm protection": {"leave_out": ["algorithmProtection"]},
}


@pytest.mark.parametrize("options", VARIANTS.values(), ids=VARIANTS.keys())
def test_the_test_signers_documents_verify(options, signer, signer_store):
    pending = datetime(2026, 5, 1, 8, 30, 0, tzinfo=UTC)
    signed_at = datetime(2026, 5, 1, 8, 30, 4, tzinfo=UTC)
    content = make_document(
        account_id="210987654321", instance_id="i-0fedcba9876543210", pending_time=pending
    )

    document = verify_document(
        signer.sign(content, signing_time=signed_at, **options), signer_store
    )

    assert document == IdentityDocument(
        account_id="210987654321",
        instance_id="i-0fedcba9876543210",
        region="us-west-2",
        pending_time=pending,
        availability_zone="us-west-2a",
        image_id=content["imageId"],
        instance_type=content["instanceType"],
        private_ip=content["privateIp"],
        architecture="x86_64",
        signing_time=None if "signingTime" in options.get("leave_out", ()) else signed_at,
        raw=content,
    )


def test_the_test_signer_writes_the_layout_of_the_aws_samples(signer):
    binary = signer.sign_binary(make_document())
    sample = sample_binary(RSA_SAMPLES[0])
    content_header = sample.index(b"\x24\x80") + 2

    assert binary[:content_header] == sample[:content_header]
    assert iid_cms._read_aws_envelope(binary) is not None
    assert iid_cms._AWS_ATTRIBUTES.fullmatch(iid_cms.parse_envelope(binary).signed_attributes)
    assert binary.endswith(b"\x00" * 6)


@pytest.mark.parametrize("options", VARIANTS.values(), ids=VARIANTS.keys())
def test_the_shortcuts_agree_with_the_parsers_on_the_test_signers_documents(options, signer):
    assert_shortcuts_agree(signer.sign_binary(make_document(), **options))


def test_an_edited_account_id_is_refused_as_an_invalid_signature(signer, signer_store):
    binary = signer.sign_binary(make_document(account_id="123456789012"))
    edited = binary.replace(b'"123456789012"', b'"123456789013"')

    assert edited != binary
    assert refusal(to_base64(edited), signer_store).code == "iid_signature_invalid"


def test_a_document_signed_by_another_authority_is_refused(signer_store):
    forger = IIDSigner(regions=("us-west-2",), authority="forger")

    assert refusal(forger.sign(make_document()), signer_store).code == "iid_signature_invalid"


@pytest.mark.parametrize("encoding", ["ber", "der"])
def test_a_certificate_embedded_by_the_signer_is_not_trusted(encoding, signer_store):
    forger = IIDSigner(regions=("us-west-2",), authority="forger")
    blob = forger.sign(
        make_document(), certificates=[forger.certificate("us-west-2")], encoding=encoding
    )

    assert refusal(blob, signer_store).code == "iid_signature_invalid"


@pytest.mark.parametrize("encoding", ["ber", "der"])
def test_embedded_certificates_are_ignored_rather_than_refused(encoding, signer, signer_store):
    stranger = IIDSigner(regions=("us-west-2",), authority="stranger")
    blob = signer.sign(
        make_document(), certificates=[stranger.certificate("us-west-2")], encoding=encoding
    )

    assert verify_document(blob, signer_store).host_id == "123456789012-i-0123456789abcdef0"


def test_a_signing_time_outside_the_certificates_validity_is_refused(signer, signer_store):
    blob = signer.sign(make_document(), signing_time=datetime(1999, 12, 31, tzinfo=UTC))

    assert refusal(blob, signer_store).code == "iid_signature_invalid"


def test_algorithm_protection_naming_another_signature_algorithm_is_refused(signer, signer_store):
    blob = signer.sign(
        make_document(),
        signature_algorithm="rsaEncryption",
        protected_signature_algorithm="sha256WithRSAEncryption",
    )

    assert refusal(blob, signer_store).code == "iid_signature_invalid"


def test_a_signed_content_type_other_than_data_is_refused(signer, signer_store):
    blob = signer.sign(make_document(), signed_content_type="1.2.840.113549.1.7.2")

    assert refusal(blob, signer_store).code == "iid_signature_invalid"


@pytest.mark.parametrize("attribute", ["contentType", "messageDigest"])
def test_a_document_without_a_mandatory_signed_attribute_is_malformed(
    attribute, signer, signer_store
):
    blob = signer.sign(make_document(), leave_out=[attribute])

    assert refusal(blob, signer_store).code == "iid_malformed"


def test_signed_attributes_out_of_der_order_are_refused(signer, signer_store):
    blob = signer.sign(make_document(), sorted_attributes=False)

    assert refusal(blob, signer_store).code == "iid_malformed"


def test_an_unknown_signed_attribute_is_an_unsupported_form(signer, signer_store):
    extra = [("1.2.840.113549.1.9.16.2.47", univ.OctetString(b"not used by AWS"))]

    blob = signer.sign(make_document(), extra_signed_attributes=extra)

    assert refusal(blob, signer_store).code == "iid_unsupported_form"


def test_a_repeated_signed_attribute_is_malformed(signer, signer_store):
    second_digest = [(str(rfc5652.id_messageDigest), univ.OctetString(bytes(32)))]

    blob = signer.sign(make_document(), extra_signed_attributes=second_digest)

    assert refusal(blob, signer_store).code == "iid_malformed"


def with_signer_infos(binary: bytes, change: Any) -> bytes:
    """The sample with its DER SignerInfos decoded by pyasn1, changed, and put back.

    The layers around them have indefinite lengths, so nothing else needs adjusting.
    """
    envelope = iid_cms.parse_envelope(binary)
    start = binary.index(b"\x31\x82", binary.index(envelope.content) + len(envelope.content))
    infos, _ = der_decoder.decode(binary[start:-6], asn1Spec=rfc5652.SignerInfos())
    change(infos)
    return binary[:start] + der_encoder.encode(infos) + binary[-6:]


def add_unsigned_attribute(infos: Any) -> None:
    attribute = rfc5652.Attribute()
    attribute["attrType"] = rfc5652.id_countersignature
    attribute["attrValues"].append(univ.Any(der_encoder.encode(univ.OctetString(b"x"))))
    infos[0]["unsignedAttrs"].append(attribute)


def add_second_signer(infos: Any) -> None:
    infos.append(infos[0])


def name_signer_by_key_identifier(infos: Any) -> None:
    infos[0]["version"] = 3
    infos[0]["sid"]["subjectKeyIdentifier"] = b"\x01" * 20


STRUCTURES = {
    "an unsigned attribute": add_unsigned_attribute,
    "a second signer": add_second_signer,
    "a signer named by key identifier": name_signer_by_key_identifier,
}


@pytest.mark.parametrize("change", STRUCTURES.values(), ids=STRUCTURES.keys())
def test_a_sample_restructured_outside_its_signature_is_an_unsupported_form(change, store):
    binary = with_signer_infos(sample_binary(RSA_SAMPLES[0]), change)

    assert refusal(base64.b64encode(binary).decode(), store).code == "iid_unsupported_form"


def test_a_signer_digest_algorithm_encoded_unlike_the_announced_one_is_malformed(store):
    def drop_null_parameters(infos: Any) -> None:
        algorithm = rfc5652.DigestAlgorithmIdentifier()
        algorithm["algorithm"] = rfc4055.id_sha256
        infos[0]["digestAlgorithm"] = algorithm

    binary = with_signer_infos(sample_binary(RSA_SAMPLES[0]), drop_null_parameters)

    assert refusal(base64.b64encode(binary).decode(), store).code == "iid_malformed"


def test_the_restructuring_helper_changes_nothing_by_itself():
    binary = with_signer_infos(sample_binary(RSA_SAMPLES[0]), lambda infos: None)

    assert binary == sample_binary(RSA_SAMPLES[0])


@pytest.mark.parametrize("suffix", [b"\x00", b"\x00\x00", b"\x05\x00", b"garbage"], ids=repr)
def test_bytes_after_the_structure_are_malformed(suffix, store):
    binary = sample_binary(RSA_SAMPLES[0]) + suffix

    assert refusal(base64.b64encode(binary).decode(), store).code == "iid_malformed"


def test_a_length_written_longer_than_needed_is_malformed(store):
    binary = sample_binary(RSA_SAMPLES[0])
    content = iid_cms.parse_envelope(binary).content
    header = b"\x04\x82" + len(content).to_bytes(2, "big")
    padded = binary.replace(header, b"\x04\x83\x00" + len(content).to_bytes(2, "big"), 1)

    assert padded != binary
    assert refusal(base64.b64encode(padded).decode(), store).code == "iid_malformed"


BAD_FIELDS: dict[str, dict[str, Any]] = {
    "short account id": {"accountId": "12345"},
    "account id as a number": {"accountId": 123456789012},
    "account id with a newline": {"accountId": "123456789012\n"},
    "instance id without i-": {"instanceId": "0123456789abcdef0"},
    "instance id in upper case": {"instanceId": "i-0123456789ABCDEF0"},
    "region in upper case": {"region": "US-WEST-2"},
    "no region": {"region": None},
    "pending time in words": {"pendingTime": "yesterday"},
    "pending time without zone": {"pendingTime": "2026-05-01T08:30:00"},
    "pending time on day 32": {"pendingTime": "2026-05-32T08:30:00Z"},
    "no account id": {"accountId": None},
    "image id as a list": {"imageId": ["ami-1"]},
}


@pytest.mark.parametrize("fields", BAD_FIELDS.values(), ids=BAD_FIELDS.keys())
def test_a_signed_document_with_a_malformed_field_is_malformed(fields, signer, signer_store):
    blob = signer.sign(make_document(**fields), region="us-west-2")

    assert refusal(blob, signer_store).code == "iid_malformed"


BAD_CONTENT = {
    "not JSON": b"accountId=123456789012",
    "a JSON array": b"[1, 2]",
    "not UTF-8": b'{"accountId": "\xff"}',
    "a repeated key": document_bytes(make_document())[:-2] + b',\n  "region" : "us-east-1"\n}',
    "NaN": document_bytes(make_document())[:-2] + b',\n  "spare" : NaN\n}',
    "deep nesting": b"[" * 5000 + b"]" * 5000,
    "nothing": b"",
}


@pytest.mark.parametrize("content", BAD_CONTENT.values(), ids=BAD_CONTENT.keys())
def test_signed_content_that_is_not_an_identity_document_is_malformed(
    content, signer, signer_store
):
    blob = signer.sign(content, region="us-west-2")

    assert refusal(blob, signer_store).code == "iid_malformed"


def test_pending_time_with_an_offset_and_fraction_is_read_as_utc(signer, signer_store):
    blob = signer.sign(make_document(pendingTime="2026-05-01T10:30:00.123456789+02:00"))

    document = verify_document(blob, signer_store)

    assert document.pending_time == datetime(2026, 5, 1, 8, 30, 0, 123456, tzinfo=UTC)
    assert document.pending_time.tzinfo is UTC


def test_absent_or_null_optional_fields_read_as_empty_text(signer, signer_store):
    content = make_document(privateIp=None)
    del content["imageId"]

    document = verify_document(signer.sign(content), signer_store)

    assert (document.private_ip, document.image_id) == ("", "")


def test_the_tamper_helper_changes_exactly_one_byte(signer):
    blob = signer.sign(make_document())

    changed = base64.b64decode(tamper(blob, 40, 0x10))
    original = base64.b64decode(blob)

    assert [i for i in range(len(original)) if original[i] != changed[i]] == [40]


# --- everything else only ever raises IIDError ---------------------------------------------

FUZZ = settings(
    max_examples=300,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)


@cache
def built_in_store() -> CertificateStore:
    return CertificateStore.load()


@FUZZ
@given(st.text(max_size=2500))
def test_arbitrary_text_only_ever_raises_iid_error(text):
    with pytest.raises(IIDError):
        _verify(text, built_in_store())


@FUZZ
@given(st.binary(max_size=2500))
def test_arbitrary_bytes_only_ever_raise_iid_error_as_text_or_as_base64(data):
    store = built_in_store()
    with pytest.raises(IIDError):
        _verify(data, store)
    with pytest.raises(IIDError):
        _verify(base64.b64encode(data), store)


@st.composite
def mutated_samples(draw: st.DrawFn) -> tuple[bytes, bytes]:
    original = sample_binary(draw(st.sampled_from(RSA_SAMPLES)))
    data = bytearray(original)
    for _ in range(draw(st.integers(min_value=1, max_value=6))):
        offset = draw(st.integers(min_value=0, max_value=len(data)))
        action = draw(st.sampled_from(("replace", "insert", "delete", "cut")))
        value = draw(st.integers(min_value=0, max_value=255))
        if action == "replace" and offset < len(data):
            data[offset] = value
        elif action == "insert":
            data.insert(offset, value)
        elif action == "delete" and offset < len(data):
            del data[offset]
        elif action == "cut":
            del data[offset:]
    return original, bytes(data)


@FUZZ
@given(mutated_samples())
def test_mutated_samples_only_ever_raise_iid_error(pair):
    original, mutated = pair
    assume(mutated != original)

    with pytest.raises(IIDError):
        _verify(base64.b64encode(mutated).decode(), built_in_store())
    assert_shortcuts_agree(mutated)


def test_an_unexpected_failure_inside_still_surfaces_as_iid_error(monkeypatch, store):
    def broken(raw: bytes) -> None:
        raise RuntimeError("reader bug")

    monkeypatch.setattr("joins.iid.read_envelope", broken)

    with pytest.raises(IIDError) as caught:
        verify_document(sample_text(RSA_SAMPLES[0]), store)

    assert caught.value.code == "iid_malformed"
    assert "RuntimeError" in caught.value.detail


def test_iid_error_reads_as_its_message():
    error = IIDError("iid_malformed", "The identity document is malformed: it is empty.")

    assert str(error) == error.message
    assert error.detail == error.message


# --- the certificate store --------------------------------------------------------------------


def test_the_store_holds_the_39_built_in_regions(store):
    files = sorted(path.stem for path in CERTS_DIR.glob("*.pem"))

    assert len(store) == 39
    assert store.regions() == files
    assert [region for region, _, _ in store.items()] == files
    assert {source for _, _, source in store.items()} == {BUILT_IN}
    assert store.get("us-west-2").serial_number == 0xB64BDE5AD00924CC
    assert store.get("xx-test-1") is None
    assert "eu-west-1" in store


def test_every_built_in_certificate_matches_the_fingerprint_in_its_readme(store):
    readme = (CERTS_DIR / "README.md").read_text()
    listed = dict(re.findall(r"^\| ([a-z0-9-]+) \|.*`([0-9a-f]{64})` \|$", readme, re.M))

    actual = {
        region: hashlib.sha256(certificate.public_bytes(serialization.Encoding.DER)).hexdigest()
        for region, certificate, _ in store.items()
    }

    assert listed == actual


def test_an_extra_directory_adds_and_replaces_regions(signer, tmp_path):
    paths = signer.write_certs(tmp_path)
    (tmp_path / "notes.txt").write_text("not a certificate, and ignored")

    loaded = CertificateStore.load(tmp_path)

    assert len(loaded) == 40
    sources = {region: source for region, _, source in loaded.items()}
    assert sources["us-west-2"] == str(tmp_path / "us-west-2.pem")
    assert sources["xx-test-1"] == str(tmp_path / "xx-test-1.pem")
    assert sources["us-west-1"] == BUILT_IN
    assert loaded.get("us-east-1") == signer.certificate("us-east-1")
    assert [path.name for path in paths] == [f"{region}.pem" for region in SIGNER_REGIONS]


def test_an_empty_or_absent_extra_directory_setting_loads_the_built_in_certificates():
    assert CertificateStore.load("").regions() == CertificateStore.load(None).regions()


def ec_certificate() -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "not rsa")])
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(datetime(2020, 1, 1, tzinfo=UTC))
        .not_valid_after(datetime(2030, 1, 1, tzinfo=UTC))
        .sign(key, hashes.SHA256())
    )
    return certificate.public_bytes(serialization.Encoding.PEM)


BAD_FILES = {
    "garbage": ("us-west-2.pem", lambda: b"-----BEGIN CERTIFICATE-----\nnope\n"),
    "two certificates": ("us-west-2.pem", lambda: (CERTS_DIR / "us-west-2.pem").read_bytes() * 2),
    "a name that is no region": ("West.pem", lambda: (CERTS_DIR / "us-west-2.pem").read_bytes()),
    "an EC key": ("us-west-2.pem", ec_certificate),
}


@pytest.mark.parametrize(("name", "contents"), BAD_FILES.values(), ids=BAD_FILES.keys())
def test_a_bad_file_in_the_extra_directory_is_a_value_error_naming_it(name, contents, tmp_path):
    (tmp_path / name).write_bytes(contents())

    with pytest.raises(ValueError, match=re.escape(str(tmp_path / name))):
        CertificateStore.load(tmp_path)


def test_a_missing_extra_directory_is_a_value_error(tmp_path):
    with pytest.raises(ValueError, match="not a directory"):
        CertificateStore.load(tmp_path / "absent")


def test_the_verifier_imports_no_django():
    code = "import sys, joins.iid; print(sorted(m for m in sys.modules if m.startswith('django')))"
    root = Path(__file__).resolve().parents[2]

    result = subprocess.run(
        [sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=True
    )

    assert result.stdout.strip() == "[]"
