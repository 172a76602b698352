"""The OpenSSH host certificate encoder against cryptography's SSHCertificateBuilder.

With an Ed25519 CA the signature is deterministic, so given the builder's nonce the encoder must
write the very same certificate, for every host key type the join accepts. ssh-keygen's reading
of issued certificates is in test_ca.py.
"""

from __future__ import annotations

import base64
import struct

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from hypothesis import given, settings
from hypothesis import strategies as st

from joins.sshcert import CAKey, host_certificate

CA_KEY = ed25519.Ed25519PrivateKey.generate()
HOST_KEYS = {
    "ed25519": ed25519.Ed25519PrivateKey.generate().public_key(),
    "p256": ec.generate_private_key(ec.SECP256R1()).public_key(),
    "p384": ec.generate_private_key(ec.SECP384R1()).public_key(),
    "rsa2048": rsa.generate_private_key(65537, 2048).public_key(),
    "rsa3072": rsa.generate_private_key(65537, 3072).public_key(),
}


def nonce_of(certificate: bytes) -> bytes:
    """The nonce of an OpenSSH certificate line: the blob's second string."""
    blob = base64.b64decode(certificate.split()[1])
    (type_length,) = struct.unpack_from(">I", blob)
    (nonce_length,) = struct.unpack_from(">I", blob, 4 + type_length)
    return blob[8 + type_length : 8 + type_length + nonce_length]


names = st.from_regex(r"[a-z0-9][a-z0-9.-]{0,60}", fullmatch=True)


@settings(max_examples=100, deadline=None)
@given(
    key=st.sampled_from(sorted(HOST_KEYS)),
    serial=st.integers(min_value=0, max_value=2**64 - 1),
    key_id=names,
    principals=st.lists(names, min_size=1, max_size=70, unique=True),
    after=st.integers(min_value=0, max_value=2**40),
    length=st.integers(min_value=0, max_value=2**40),
)
def test_the_certificate_is_the_builders_to_the_byte(
    key, serial, key_id, principals, after, length
):
    theirs = (
        serialization.SSHCertificateBuilder()
        .public_key(HOST_KEYS[key])
        .serial(serial)
        .type(serialization.SSHCertificateType.HOST)
        .key_id(key_id.encode("ascii"))
        .valid_principals([name.encode("ascii") for name in principals])
        .valid_after(after)
        .valid_before(after + length)
        .sign(CA_KEY)
        .public_bytes()
    )
    ours = host_certificate(
        CAKey(CA_KEY),
        HOST_KEYS[key],
        serial=serial,
        key_id=key_id,
        principals=principals,
        valid_after=after,
        valid_before=after + length,
        nonce=nonce_of(theirs),
    )
    assert ours.encode("ascii") == theirs


def test_each_certificate_gets_a_fresh_nonce_and_verifies():
    ca = CAKey(CA_KEY)
    issued = [
        host_certificate(
            ca,
            HOST_KEYS["ed25519"],
            serial=7,
            key_id="host-a",
            principals=["host-a"],
            valid_after=10,
            valid_before=20,
        )
        for _ in range(2)
    ]
    assert nonce_of(issued[0].encode()) != nonce_of(issued[1].encode())
    for line in issued:
        cert = serialization.load_ssh_public_identity(line.encode("ascii"))
        assert isinstance(cert, serialization.SSHCertificate)
        cert.verify_cert_signature()
        assert cert.signature_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        ) == CA_KEY.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        assert cert.type is serialization.SSHCertificateType.HOST
        assert cert.valid_principals == [b"host-a"]


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"serial": 2**64}, "64 bits"),
        ({"serial": -1}, "64 bits"),
        ({"valid_after": 30, "valid_before": 20}, "ordered"),
        ({"valid_after": -1}, "ordered"),
        ({"nonce": b"short"}, "32 bytes"),
    ],
)
def test_values_outside_the_format_are_refused(changes, message):
    fields = {"serial": 1, "valid_after": 10, "valid_before": 20} | changes
    with pytest.raises(ValueError, match=message):
        host_certificate(
            CAKey(CA_KEY), HOST_KEYS["ed25519"], key_id="h", principals=["h"], **fields
        )
