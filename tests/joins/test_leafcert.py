"""The host X.509 encoder against cryptography's CertificateBuilder: same signed bytes.

`reference_certificate` builds what joins/leafcert.py encodes, with the library's builder; for
the same serial and validity the TBSCertificate must be the same bytes, whatever the names, the
roles, the key type and the dates (either side of 2050, where UTCTime gives way to
GeneralizedTime). openssl's checks of issued certificates are in test_ca.py.
"""

from __future__ import annotations

import ipaddress
from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from hypothesis import given, settings
from hypothesis import strategies as st

from joins.ca import HOST_ROLES_OID, _encode_roles, generate_host_ca
from joins.iid_der import encode, encode_integer
from joins.leafcert import LeafEncoder

CA = generate_host_ca("example.com", datetime(2026, 1, 1, tzinfo=UTC), timedelta(days=36500))
KEYS = {
    "p256": ec.generate_private_key(ec.SECP256R1()).public_key(),
    "p384": ec.generate_private_key(ec.SECP384R1()).public_key(),
    "rsa2048": rsa.generate_private_key(65537, 2048).public_key(),
    "ed25519": ed25519.Ed25519PrivateKey.generate().public_key(),
}


def reference_certificate(
    *, key, serial, not_before, not_after, organization, units, common_name, names, roles, crl_url
) -> x509.Certificate:
    """The certificate as cryptography's builder makes it (what the encoder replaced)."""
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization),
            *(x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, unit) for unit in units),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )
    ca_ski = CA.tls_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(CA.tls_cert.subject)
        .public_key(key)
        .serial_number(serial)
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=isinstance(key, rsa.RSAPublicKey),
                data_encipherment=False,
                key_agreement=isinstance(key, ec.EllipticCurvePublicKey),
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.DNSName(name) if isinstance(name, str) else x509.IPAddress(name)
                    for name in names
                ]
            ),
            critical=False,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key), critical=False)
        .add_extension(x509.UnrecognizedExtension(HOST_ROLES_OID, roles), critical=False)
    )
    if crl_url:
        builder = builder.add_extension(
            x509.CRLDistributionPoints(
                [
                    x509.DistributionPoint(
                        [x509.UniformResourceIdentifier(crl_url)], None, None, None
                    )
                ]
            ),
            critical=False,
        )
    return builder.sign(CA.tls_key, hashes.SHA256())


labels = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,20}[a-z0-9])?", fullmatch=True)
host_names = (
    st.lists(labels, min_size=1, max_size=4)
    .map(".".join)
    .filter(lambda name: not name.split(".")[-1].isdigit())
)
addresses = st.one_of(st.ip_addresses(v=4), st.ip_addresses(v=6))
roles_lists = st.lists(
    st.from_regex(r"[A-Za-z][A-Za-z0-9_-]{0,20}", fullmatch=True), min_size=1, max_size=6
)
whole_seconds = st.datetimes(min_value=datetime(1990, 1, 1), max_value=datetime(2120, 1, 1)).map(
    lambda value: value.replace(microsecond=0, tzinfo=UTC)
)


@settings(max_examples=150, deadline=None)
@given(
    key=st.sampled_from(sorted(KEYS)),
    serial=st.integers(min_value=1, max_value=2**159 - 1),
    start=whole_seconds,
    length=st.integers(min_value=1, max_value=10**9),
    common_name=host_names,
    names=st.lists(st.one_of(host_names, addresses), min_size=1, max_size=70),
    roles=roles_lists,
    crl_url=st.one_of(
        st.none(), st.from_regex(r"https://[a-z]{1,200}\.example/api/v1/ca/crl", fullmatch=True)
    ),
)
def test_the_signed_part_is_the_builders_to_the_byte(
    key, serial, start, length, common_name, names, roles, crl_url
):
    fields = {
        "serial": serial,
        "not_before": start,
        "not_after": start + timedelta(seconds=length),
        "organization": "example.com",
        "units": roles,
        "common_name": common_name,
        "names": names,
        "roles": _encode_roles(roles),
        "crl_url": crl_url,
    }
    pem = CA.leaf_encoder.issue(public_key=KEYS[key], **fields)
    ours = x509.load_pem_x509_certificate(pem.encode("ascii"))
    theirs = reference_certificate(key=KEYS[key], **fields)
    assert ours.tbs_certificate_bytes == theirs.tbs_certificate_bytes
    # The PEM is the library's own text for the certificate, and the CA's signature holds.
    assert ours.public_bytes(serialization.Encoding.PEM).decode("ascii") == pem
    ours.verify_directly_issued_by(CA.tls_cert)
    assert ours.signature_algorithm_oid == x509.SignatureAlgorithmOID.ECDSA_WITH_SHA256


def test_a_tampered_certificate_does_not_verify():
    pem = CA.leaf_encoder.issue(
        public_key=KEYS["p256"],
        serial=2**127 + 1,
        not_before=datetime(2026, 5, 1, tzinfo=UTC),
        not_after=datetime(2026, 5, 2, tzinfo=UTC),
        organization="example.com",
        units=["Node"],
        common_name="host-a",
        names=["host-a"],
        roles=_encode_roles(["Node"]),
        crl_url=None,
    )
    cert = x509.load_pem_x509_certificate(pem.encode("ascii"))
    der = bytearray(cert.public_bytes(serialization.Encoding.DER))
    position = der.index(b"host-a")
    der[position] ^= 0x01  # "iost-a": the signed part changed, the signature did not
    with pytest.raises(InvalidSignature):
        x509.load_der_x509_certificate(bytes(der)).verify_directly_issued_by(CA.tls_cert)


@pytest.mark.parametrize(
    ("value", "encoded"),
    [
        (0, "020100"),
        (127, "02017f"),
        (128, "02020080"),
        (256, "02020100"),
        (2**127, "021100" + "80" + "00" * 15),
    ],
)
def test_integers_take_their_shortest_positive_form(value, encoded):
    assert encode_integer(value).hex() == encoded


@pytest.mark.parametrize(
    ("size", "header"), [(0, "0400"), (127, "047f"), (128, "048180"), (300, "0482012c")]
)
def test_lengths_take_the_short_form_below_128_and_the_long_form_above(size, header):
    assert encode(0x04, b"\x00" * size).hex().startswith(header)
    assert len(encode(0x04, b"\x00" * size)) == len(header) // 2 + size


def test_an_encoder_refuses_a_ca_key_other_than_p256():
    other = ec.generate_private_key(ec.SECP384R1())
    with pytest.raises(ValueError, match="P-256"):
        LeafEncoder(other, CA.tls_cert, roles_oid=HOST_ROLES_OID)


def test_an_ip_address_is_named_as_an_address_not_a_host_name():
    pem = CA.leaf_encoder.issue(
        public_key=KEYS["ed25519"],
        serial=5,
        not_before=datetime(2026, 5, 1, tzinfo=UTC),
        not_after=datetime(2060, 5, 2, tzinfo=UTC),
        organization="example.com",
        units=["Node"],
        common_name="host-a",
        names=["host-a", ipaddress.ip_address("10.0.0.7"), ipaddress.ip_address("fd00::7")],
        roles=_encode_roles(["Node"]),
        crl_url=None,
    )
    cert = x509.load_pem_x509_certificate(pem.encode("ascii"))
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["host-a"]
    assert san.get_values_for_type(x509.IPAddress) == [
        ipaddress.ip_address("10.0.0.7"),
        ipaddress.ip_address("fd00::7"),
    ]
    assert cert.not_valid_after_utc == datetime(2060, 5, 2, tzinfo=UTC)  # GeneralizedTime
