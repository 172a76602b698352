"""The re-join proof on its own (joins/rejoin.py): challenges, the signed message, signatures."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa

from joins.rejoin import (
    CHALLENGE_TTL_SECONDS,
    REJOIN_CHALLENGE_INVALID,
    REJOIN_PROOF_INVALID,
    RejoinError,
    challenge_key,
    document_digest,
    issue_challenge,
    open_challenge,
    rejoin_message,
    sign_message,
    verify_signature,
)

HOST = "123456789012-i-0123456789abcdef0"
OTHER_HOST = "123456789012-i-0fedcba9876543210"
NOW = datetime(2026, 11, 20, 12, 0, 0, tzinfo=UTC)
KEY = challenge_key("a secret key of the server, long enough to be one")


def message_for(challenge: str, private_key, document: str = "MIAGCSqG\nSIb3DQ==") -> bytes:  # type: ignore[no-untyped-def]
    ssh = ed25519.Ed25519PrivateKey.generate().public_key()
    return rejoin_message(
        challenge=challenge,
        host_id=HOST,
        document=document,
        tls_public_key=private_key.public_key(),
        ssh_public_key=ssh,
    )


def test_a_challenge_opens_for_its_host_within_its_minute():
    issued = issue_challenge(KEY, HOST, NOW)
    opened = open_challenge(KEY, issued.text, HOST, NOW + timedelta(seconds=59))
    assert opened.host_id == HOST
    assert opened.issued_at == NOW
    assert issued.expires == NOW + timedelta(seconds=CHALLENGE_TTL_SECONDS)
    assert opened.text == issued.text


def test_two_challenges_for_the_same_host_and_instant_differ():
    assert issue_challenge(KEY, HOST, NOW).text != issue_challenge(KEY, HOST, NOW).text


def test_a_challenge_issued_for_another_host_does_not_open():
    issued = issue_challenge(KEY, OTHER_HOST, NOW)
    with pytest.raises(RejoinError) as refused:
        open_challenge(KEY, issued.text, HOST, NOW)
    assert refused.value.code == REJOIN_CHALLENGE_INVALID
    assert "issued for another host" in refused.value.reason


def test_an_expired_challenge_does_not_open():
    issued = issue_challenge(KEY, HOST, NOW)
    with pytest.raises(RejoinError) as refused:
        open_challenge(KEY, issued.text, HOST, NOW + timedelta(seconds=CHALLENGE_TTL_SECONDS + 1))
    assert refused.value.code == REJOIN_CHALLENGE_INVALID
    assert "expired" in refused.value.message


def test_a_challenge_from_far_in_the_future_does_not_open():
    issued = issue_challenge(KEY, HOST, NOW + timedelta(minutes=5))
    with pytest.raises(RejoinError) as refused:
        open_challenge(KEY, issued.text, HOST, NOW)
    assert refused.value.code == REJOIN_CHALLENGE_INVALID


def test_a_challenge_under_another_secret_or_altered_does_not_open():
    issued = issue_challenge(
        challenge_key("another server's secret key, also long enough"), HOST, NOW
    )
    with pytest.raises(RejoinError):
        open_challenge(KEY, issued.text, HOST, NOW)
    raw = bytearray(base64.b64decode(issue_challenge(KEY, HOST, NOW).text))
    raw[5] ^= 1  # move the issue time
    with pytest.raises(RejoinError):
        open_challenge(KEY, base64.b64encode(bytes(raw)).decode(), HOST, NOW)


@pytest.mark.parametrize("text", ["", "not base64!", base64.b64encode(b"x" * 32).decode()])
def test_garbage_is_not_a_challenge(text):
    with pytest.raises(RejoinError) as refused:
        open_challenge(KEY, text, HOST, NOW)
    assert refused.value.code == REJOIN_CHALLENGE_INVALID


@pytest.mark.parametrize(
    "private_key",
    [
        ec.generate_private_key(ec.SECP256R1()),
        ec.generate_private_key(ec.SECP384R1()),
        ed25519.Ed25519PrivateKey.generate(),
        rsa.generate_private_key(public_exponent=65537, key_size=2048),
    ],
    ids=["ecdsa-p256", "ecdsa-p384", "ed25519", "rsa-2048"],
)
def test_a_signature_made_with_the_key_verifies_and_one_of_another_key_does_not(private_key):
    message = message_for(issue_challenge(KEY, HOST, NOW).text, private_key)
    verify_signature(private_key.public_key(), message, sign_message(private_key, message))
    other = type(private_key).__name__
    stranger = (
        ec.generate_private_key(private_key.curve)
        if isinstance(private_key, ec.EllipticCurvePrivateKey)
        else ed25519.Ed25519PrivateKey.generate()
        if "Ed25519" in other
        else rsa.generate_private_key(public_exponent=65537, key_size=2048)
    )
    with pytest.raises(RejoinError) as refused:
        verify_signature(private_key.public_key(), message, sign_message(stranger, message))
    assert refused.value.code == REJOIN_PROOF_INVALID


def test_a_signature_does_not_verify_over_a_changed_message():
    private_key = ec.generate_private_key(ec.SECP256R1())
    challenge = issue_challenge(KEY, HOST, NOW).text
    signature = sign_message(private_key, message_for(challenge, private_key))
    # Same challenge and host, another document: a signature never carries over.
    changed = message_for(challenge, private_key, document="MIAGCSqGSIb3DQEHAq==")
    with pytest.raises(RejoinError) as refused:
        verify_signature(private_key.public_key(), changed, signature)
    assert refused.value.code == REJOIN_PROOF_INVALID


def test_rsa_pkcs1v15_is_not_accepted_where_pss_is_the_scheme():
    private_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    message = message_for(issue_challenge(KEY, HOST, NOW).text, private_key)
    signature = private_key.sign(message, padding.PKCS1v15(), hashes.SHA256())
    with pytest.raises(RejoinError):
        verify_signature(private_key.public_key(), message, signature)


def test_the_message_names_every_bound_value_on_its_own_line():
    private_key = ec.generate_private_key(ec.SECP256R1())
    challenge = issue_challenge(KEY, HOST, NOW).text
    lines = message_for(challenge, private_key).decode().splitlines()
    assert lines[0] == "joinadmin-rejoin-v1"
    assert lines[1] == f"challenge={challenge}"
    assert lines[2] == f"host_id={HOST}"
    assert [line.split("=", 1)[0] for line in lines[3:]] == [
        "document_sha256",
        "public_tls_key_sha256",
        "public_ssh_key_sha256",
    ]


def test_the_document_digest_ignores_line_wrapping_but_not_content():
    assert document_digest("MIAG\nCSqG\r\n") == document_digest("MIAGCSqG")
    assert document_digest("MIAGCSqG") != document_digest("MIAGCSqH")


def test_a_message_refuses_a_value_that_could_forge_a_line():
    private_key = ec.generate_private_key(ec.SECP256R1())
    challenge = issue_challenge(KEY, HOST, NOW).text
    with pytest.raises(ValueError):
        rejoin_message(
            challenge=challenge,
            host_id=HOST + "\ndocument_sha256=00",
            document="MIAG",
            tls_public_key=private_key.public_key(),
            ssh_public_key=None,
        )
