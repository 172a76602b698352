"""Host CA and credential issuance, checked with the real openssl and ssh-keygen."""

from __future__ import annotations

import base64
import os
import re
import subprocess
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa, x25519
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from hypothesis import given, settings
from hypothesis import strategies as st

from joins.ca import (
    HOST_ROLES_OID,
    SSH_KEY_PURPOSE,
    TLS_KEY_PURPOSE,
    CAKeyError,
    CAUnusableError,
    HostCA,
    IssuedCredentials,
    KeyRejected,
    _decode_roles,
    _encode_roles,
    ca_from_record,
    ca_to_record,
    decrypt_private_key,
    encrypt_private_key,
    generate_host_ca,
    issue_host_credentials,
    load_public_ssh_key,
    load_public_tls_key,
    read_host_roles,
)

CLUSTER = "example.com"
HOST_ID = "278576220453-i-078517ca8a70a1dde"
SECRET = "s" * 20 + "-a-test-only-secret-of-enough-length"


def spki_pem(key: object) -> str:
    return key.public_bytes(  # type: ignore[attr-defined]
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()


def ssh_line(key: object, comment: str = "agent@host") -> str:
    line = key.public_bytes(  # type: ignore[attr-defined]
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    ).decode()
    return f"{line} {comment}"


def ssh_string(value: bytes) -> bytes:
    return len(value).to_bytes(4, "big") + value


def ssh_mpint(value: int) -> bytes:
    return ssh_string(value.to_bytes(value.bit_length() // 8 + 1, "big"))


def run(*args: str | Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "TZ": "UTC"}
    return subprocess.run(
        [str(a) for a in args], capture_output=True, text=True, env=env, timeout=30, check=False
    )


@pytest.fixture(scope="module")
def keys() -> SimpleNamespace:
    """Agent keys of every kind, RSA generated once because it is slow."""
    rsa_2048 = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return SimpleNamespace(
        rsa_2048=rsa_2048.public_key(),
        rsa_2048_private=rsa_2048,
        rsa_1024=rsa.generate_private_key(public_exponent=65537, key_size=1024).public_key(),
        rsa_e3=rsa.RSAPublicNumbers(3, rsa_2048.public_key().public_numbers().n).public_key(),
        p256=ec.generate_private_key(ec.SECP256R1()).public_key(),
        p384=ec.generate_private_key(ec.SECP384R1()).public_key(),
        p521=ec.generate_private_key(ec.SECP521R1()).public_key(),
        k256=ec.generate_private_key(ec.SECP256K1()).public_key(),
        ed25519=ed25519.Ed25519PrivateKey.generate().public_key(),
        ed448=ed448.Ed448PrivateKey.generate().public_key(),
        x25519=x25519.X25519PrivateKey.generate().public_key(),
        dsa=dsa.generate_private_key(key_size=1024).public_key(),
    )


@pytest.fixture(scope="module")
def now() -> datetime:
    # Real time: openssl verify checks validity against the system clock.
    return datetime.now(UTC)


@pytest.fixture(scope="module")
def host_ca(now: datetime) -> HostCA:
    return generate_host_ca(CLUSTER, now)


@pytest.fixture(scope="module")
def other_ca(now: datetime) -> HostCA:
    return generate_host_ca(CLUSTER, now)


def issue(ca: HostCA, keys: SimpleNamespace, now: datetime, **overrides: object):
    arguments: dict[str, object] = {
        "host_id": HOST_ID,
        "node_name": "ip-10-0-0-12",
        "roles": ["Node", "Proxy"],
        "tls_public_key": keys.p256,
        "ssh_public_key": keys.ed25519,
        "dns_names": ["node1.internal"],
        "additional_principals": ["10.0.0.12", "node1.example.com"],
        "cluster_name": CLUSTER,
        "now": now,
        "ttl": timedelta(hours=1),
    }
    arguments.update(overrides)
    return issue_host_credentials(ca, **arguments)  # type: ignore[arg-type]


def leaf(creds: IssuedCredentials) -> x509.Certificate:
    return x509.load_pem_x509_certificate(creds.tls_cert_pem.encode())


# --- the real tools ------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["p256", "p384", "ed25519", "rsa_2048"])
def test_openssl_verifies_an_issued_certificate_for_each_kind_of_agent_key(
    kind, keys, host_ca, now, tmp_path
):
    creds = issue(host_ca, keys, now, tls_public_key=getattr(keys, kind))
    (tmp_path / "ca.pem").write_text(host_ca.tls_cert_pem)
    (tmp_path / "cert.pem").write_text(creds.tls_cert_pem)

    for purpose in ("sslserver", "sslclient"):
        result = run(
            "openssl",
            "verify",
            "-x509_strict",
            "-purpose",
            purpose,
            "-CAfile",
            tmp_path / "ca.pem",
            tmp_path / "cert.pem",
        )
        assert result.returncode == 0, result.stdout + result.stderr
        assert result.stdout.strip().endswith("cert.pem: OK")


def test_openssl_shows_the_subject_alternative_names_and_one_ou_per_role(
    keys, host_ca, now, tmp_path
):
    creds = issue(host_ca, keys, now, additional_principals=["10.0.0.12", "fd00::12", "n1.corp"])
    (tmp_path / "cert.pem").write_text(creds.tls_cert_pem)

    text = run("openssl", "x509", "-noout", "-text", "-in", tmp_path / "cert.pem").stdout

    assert f"Subject: O = {CLUSTER}, OU = Node, OU = Proxy, CN = {HOST_ID}" in text
    assert (
        f"DNS:{HOST_ID}, DNS:ip-10-0-0-12, DNS:node1.internal, IP Address:10.0.0.12, "
        "IP Address:FD00:0:0:0:0:0:0:12, DNS:n1.corp"
    ) in text.replace("fd00", "FD00")
    assert HOST_ROLES_OID.dotted_string in text


def test_openssl_refuses_a_certificate_signed_by_another_ca(keys, host_ca, other_ca, now, tmp_path):
    creds = issue(other_ca, keys, now)
    (tmp_path / "ca.pem").write_text(host_ca.tls_cert_pem)
    (tmp_path / "cert.pem").write_text(creds.tls_cert_pem)

    result = run("openssl", "verify", "-CAfile", tmp_path / "ca.pem", tmp_path / "cert.pem")

    assert result.returncode != 0
    assert "unable to get local issuer certificate" in result.stdout + result.stderr


def test_ssh_keygen_lists_a_host_certificate_with_its_key_id_principals_and_validity(
    keys, host_ca, now, tmp_path
):
    creds = issue(host_ca, keys, now, additional_principals=["10.0.0.12", "node1.internal"])
    assert creds.ssh_cert is not None
    (tmp_path / "host-cert.pub").write_text(creds.ssh_cert + "\n")

    result = run("ssh-keygen", "-L", "-f", tmp_path / "host-cert.pub")

    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "Type: ssh-ed25519-cert-v01@openssh.com host certificate" in out
    assert f'Key ID: "{HOST_ID}"' in out
    assert f"Serial: {creds.ssh_serial}" in out
    principals = out.split("Principals:")[1].split("Critical Options:")[0].split()
    assert principals == [HOST_ID, "ip-10-0-0-12", "node1.internal", "10.0.0.12"]
    fmt = "%Y-%m-%dT%H:%M:%S"
    assert f"Valid: from {creds.not_before.strftime(fmt)} to {creds.not_after.strftime(fmt)}" in out
    assert "Critical Options: (none)" in out
    assert "Extensions: (none)" in out


def test_ssh_keygen_reports_the_ca_public_key_as_the_signing_ca(keys, host_ca, now, tmp_path):
    creds = issue(host_ca, keys, now)
    (tmp_path / "host-cert.pub").write_text(f"{creds.ssh_cert}\n")
    (tmp_path / "ca.pub").write_text(host_ca.ssh_public_key + "\n")

    listing = run("ssh-keygen", "-L", "-f", tmp_path / "host-cert.pub").stdout
    fingerprint = run("ssh-keygen", "-l", "-f", tmp_path / "ca.pub").stdout.split()[1]

    assert f"Signing CA: ED25519 {fingerprint}" in listing


# --- the SSH certificate, read back ----------------------------------------------------------


def test_the_ssh_certificate_signature_verifies_against_the_ca_key(keys, host_ca, now):
    creds = issue(host_ca, keys, now, ssh_public_key=keys.rsa_2048)
    cert = serialization.load_ssh_public_identity(creds.ssh_cert.encode())
    assert isinstance(cert, serialization.SSHCertificate)

    cert.verify_cert_signature()

    openssh = (serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    assert cert.signature_key().public_bytes(*openssh) == host_ca.ssh_key.public_key().public_bytes(
        *openssh
    )
    assert cert.public_key().public_bytes(*openssh) == keys.rsa_2048.public_bytes(*openssh)
    assert cert.type == serialization.SSHCertificateType.HOST
    assert cert.serial == creds.ssh_serial
    assert cert.critical_options == {}
    assert cert.extensions == {}


def test_an_ssh_certificate_from_another_ca_does_not_carry_our_ca_key(keys, host_ca, other_ca, now):
    creds = issue(other_ca, keys, now)
    cert = serialization.load_ssh_public_identity(creds.ssh_cert.encode())

    assert cert.signature_key() != host_ca.ssh_key.public_key()


def test_no_ssh_certificate_is_issued_without_an_ssh_key(keys, host_ca, now):
    creds = issue(host_ca, keys, now, ssh_public_key=None)

    assert creds.ssh_cert is None
    assert creds.ssh_serial is None


# --- the X.509 certificate, read back --------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "key_encipherment", "key_agreement"),
    [("p256", False, True), ("ed25519", False, False), ("rsa_2048", True, False)],
)
def test_the_key_usage_fits_the_agent_key_type(
    kind, key_encipherment, key_agreement, keys, host_ca, now
):
    cert = leaf(issue(host_ca, keys, now, tls_public_key=getattr(keys, kind)))

    usage = cert.extensions.get_extension_for_class(x509.KeyUsage)
    assert usage.critical
    assert usage.value.digital_signature
    assert usage.value.key_encipherment is key_encipherment
    assert usage.value.key_agreement is key_agreement
    assert not usage.value.key_cert_sign


def test_the_leaf_certificate_is_not_a_ca_and_names_its_issuer_key(keys, host_ca, now):
    creds = issue(host_ca, keys, now)
    cert = leaf(creds)

    constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert constraints.critical
    assert constraints.value.ca is False
    aki = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    ski = host_ca.tls_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert aki.key_identifier == ski.digest
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
    assert cert.issuer == host_ca.tls_cert.subject
    assert format(cert.serial_number, "x") == creds.tls_serial
    assert len(creds.tls_serial) == 32
    cert.verify_directly_issued_by(host_ca.tls_cert)


def test_the_roles_extension_is_non_critical_and_lists_the_roles(keys, host_ca, now):
    cert = leaf(issue(host_ca, keys, now, roles=["Node", "Db", "Node"]))

    assert cert.extensions.get_extension_for_oid(HOST_ROLES_OID).critical is False
    assert read_host_roles(cert) == ["Node", "Db"]
    ous = cert.subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)
    assert [ou.value for ou in ous] == ["Node", "Db"]


@settings(max_examples=40, deadline=None)
@given(
    roles=st.lists(
        st.from_regex(r"[A-Za-z][A-Za-z0-9_-]{0,63}", fullmatch=True),
        min_size=1,
        max_size=32,
        unique=True,
    )
)
def test_any_valid_role_list_reads_back_unchanged_from_the_certificate(roles, keys, host_ca, now):
    cert = leaf(issue(host_ca, keys, now, roles=roles, ssh_public_key=None))

    assert read_host_roles(cert) == roles


def test_reading_roles_from_a_certificate_without_the_extension_fails(host_ca):
    with pytest.raises(ValueError, match="no host roles extension"):
        read_host_roles(host_ca.tls_cert)


def test_names_are_lowercased_deduplicated_and_addresses_canonicalised(keys, host_ca, now):
    creds = issue(
        host_ca,
        keys,
        now,
        node_name="IP-10-0-0-12",
        dns_names=["Node1.Internal", "node1.internal.", HOST_ID],
        additional_principals=["10.0.0.12", "fd00:0:0::12", "NODE1.internal", "10.0.0.12"],
    )
    san = leaf(creds).extensions.get_extension_for_class(x509.SubjectAlternativeName).value

    assert san.get_values_for_type(x509.DNSName) == [HOST_ID, "ip-10-0-0-12", "node1.internal"]
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["10.0.0.12", "fd00::12"]
    cert = serialization.load_ssh_public_identity(creds.ssh_cert.encode())
    assert cert.valid_principals == [
        HOST_ID.encode(),
        b"ip-10-0-0-12",
        b"node1.internal",
        b"10.0.0.12",
        b"fd00::12",
    ]


# --- validity --------------------------------------------------------------------------------


def test_validity_starts_a_minute_before_now_and_lasts_the_ttl(keys, host_ca, now):
    creds = issue(host_ca, keys, now, ttl=timedelta(hours=8))
    start = now.replace(microsecond=0)

    assert creds.not_before == start - timedelta(minutes=1)
    assert creds.not_after == start + timedelta(hours=8)
    cert = leaf(creds)
    assert cert.not_valid_before_utc == creds.not_before
    assert cert.not_valid_after_utc == creds.not_after
    ssh = serialization.load_ssh_public_identity(creds.ssh_cert.encode())
    assert ssh.valid_after == int(creds.not_before.timestamp())
    assert ssh.valid_before == int(creds.not_after.timestamp())


@pytest.mark.parametrize("ttl", [timedelta(days=2), timedelta.max])
def test_validity_is_capped_at_the_ca_expiry(ttl, keys):
    start = datetime(2030, 1, 1, tzinfo=UTC)
    short_ca = generate_host_ca(CLUSTER, start, validity=timedelta(days=1))

    creds = issue(short_ca, keys, start + timedelta(hours=20), ttl=ttl)

    assert creds.not_after == short_ca.not_after == start + timedelta(days=1)
    assert leaf(creds).not_valid_after_utc == short_ca.not_after
    ssh = serialization.load_ssh_public_identity(creds.ssh_cert.encode())
    assert ssh.valid_before == int(short_ca.not_after.timestamp())


@pytest.mark.parametrize("offset", [timedelta(days=1), timedelta(days=-2)])
def test_a_ca_outside_its_validity_refuses_to_sign(offset, keys):
    start = datetime(2030, 1, 1, tzinfo=UTC)
    short_ca = generate_host_ca(CLUSTER, start, validity=timedelta(days=1))

    with pytest.raises(CAUnusableError) as caught:
        issue(short_ca, keys, start + offset)

    assert caught.value.code == "ca_unusable"


def test_issuing_under_another_cluster_name_is_refused(keys, host_ca, now):
    with pytest.raises(CAUnusableError, match="belongs to cluster"):
        issue(host_ca, keys, now, cluster_name="other.example")


def test_a_naive_datetime_is_refused(keys, host_ca):
    with pytest.raises(ValueError, match="timezone-aware"):
        issue(host_ca, keys, datetime(2030, 1, 1))


def test_each_issue_gets_fresh_random_serials(keys, host_ca, now):
    first, second = issue(host_ca, keys, now), issue(host_ca, keys, now)

    assert first.tls_serial != second.tls_serial
    assert first.ssh_serial != second.ssh_serial
    assert first.ssh_serial is not None and first.ssh_serial >= 2**63


# --- the CA ----------------------------------------------------------------------------------


def test_a_generated_ca_is_a_leaf_only_ca_for_its_cluster(now):
    ca = generate_host_ca(CLUSTER, now)
    cert = ca.tls_cert

    assert cert.subject.rfc4514_string() == f"CN={CLUSTER} Host CA,O={CLUSTER}"
    assert cert.issuer == cert.subject
    constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert constraints.critical and constraints.value.ca and constraints.value.path_length == 0
    usage = cert.extensions.get_extension_for_class(x509.KeyUsage)
    assert usage.critical and usage.value.key_cert_sign and usage.value.crl_sign
    assert not usage.value.digital_signature
    ski = cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert ski == x509.SubjectKeyIdentifier.from_public_key(ca.tls_key.public_key())
    assert cert.serial_number.bit_length() == 128
    assert cert.serial_number != generate_host_ca(CLUSTER, now).tls_cert.serial_number
    assert cert.not_valid_after_utc - now.replace(microsecond=0) >= timedelta(days=3650)
    assert isinstance(ca.tls_key.curve, ec.SECP256R1)
    cert.verify_directly_issued_by(cert)


def test_the_ca_public_forms_are_what_agents_put_in_their_trust_stores(host_ca):
    assert x509.load_pem_x509_certificate(host_ca.tls_cert_pem.encode()) == host_ca.tls_cert
    key_type, body, comment = host_ca.ssh_public_key.split(" ")
    assert key_type == "ssh-ed25519"
    assert comment == f"host-ca@{CLUSTER}"
    assert serialization.load_ssh_public_key(f"{key_type} {body}".encode()) == (
        host_ca.ssh_key.public_key()
    )


@pytest.mark.parametrize("name", ["", "two words", "x" * 57, "-leading", "é"])
def test_an_unusable_cluster_name_is_refused(name, now):
    with pytest.raises(CAUnusableError, match="cluster name"):
        generate_host_ca(name, now)


def test_a_ca_whose_certificate_and_key_do_not_match_is_refused(host_ca, other_ca):
    with pytest.raises(CAKeyError, match="does not match"):
        HostCA(tls_key=other_ca.tls_key, tls_cert=host_ca.tls_cert, ssh_key=host_ca.ssh_key)


def test_a_ca_with_an_ssh_key_of_the_wrong_type_is_refused(host_ca):
    with pytest.raises(CAKeyError, match="Ed25519"):
        HostCA(tls_key=host_ca.tls_key, tls_cert=host_ca.tls_cert, ssh_key=host_ca.tls_key)


def test_the_ca_repr_does_not_show_the_private_keys(host_ca):
    assert "tls_key" not in repr(host_ca)
    assert "ssh_key" not in repr(host_ca)


# --- agents' keys ----------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["p256", "p384", "ed25519", "rsa_2048"])
def test_a_strong_tls_key_is_accepted(kind, keys):
    key = getattr(keys, kind)

    assert load_public_tls_key(spki_pem(key)) == key


def test_a_tls_key_with_windows_line_endings_and_surrounding_space_is_accepted(keys):
    pem = "\n  " + spki_pem(keys.p256).replace("\n", "\r\n") + "\n"

    assert load_public_tls_key(pem) == keys.p256


def _private_pem(keys: SimpleNamespace) -> str:
    return keys.rsa_2048_private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


def _certificate_pem(keys: SimpleNamespace) -> str:
    ca = generate_host_ca(CLUSTER, datetime(2030, 1, 1, tzinfo=UTC))
    return ca.tls_cert_pem


def _pkcs1_pem(keys: SimpleNamespace) -> str:
    return keys.rsa_2048.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.PKCS1
    ).decode()


TLS_REJECTIONS: list[tuple[str, Callable[[SimpleNamespace], object], str]] = [
    ("rsa-1024", lambda k: spki_pem(k.rsa_1024), "1024 bits"),
    ("rsa-exponent-3", lambda k: spki_pem(k.rsa_e3), "exponent 3"),
    ("dsa", lambda k: spki_pem(k.dsa), "DSA"),
    ("p-521", lambda k: spki_pem(k.p521), "secp521r1"),
    ("secp256k1", lambda k: spki_pem(k.k256), "secp256k1"),
    ("ed448", lambda k: spki_pem(k.ed448), "Ed448"),
    ("x25519", lambda k: spki_pem(k.x25519), "X25519"),
    ("empty", lambda k: "", "not a PEM block"),
    ("garbage", lambda k: "hello world", "not a PEM block"),
    ("not a string", lambda k: b"-----BEGIN PUBLIC KEY-----", "as a string"),
    ("private key", _private_pem, "private key"),
    ("certificate", _certificate_pem, "certificate"),
    ("pkcs1", _pkcs1_pem, "PKCS#1"),
    ("two blocks", lambda k: spki_pem(k.p256) + spki_pem(k.ed25519), "2 PEM blocks"),
    ("text around", lambda k: "key:\n" + spki_pem(k.p256), "nothing else"),
    (
        "bad base64",
        lambda k: "-----BEGIN PUBLIC KEY-----\nAAA*\n-----END PUBLIC KEY-----",
        "nothing else",
    ),
    (
        "not a key inside",
        lambda k: "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----",
        "not a valid public key",
    ),
    ("oversized", lambda k: "A" * 20000, "too long"),
]


@pytest.mark.parametrize(
    ("make", "reason"),
    [(m, r) for _, m, r in TLS_REJECTIONS],
    ids=[i for i, _, _ in TLS_REJECTIONS],
)
def test_a_weak_or_malformed_tls_key_is_rejected_with_the_field_named(make, reason, keys):
    with pytest.raises(KeyRejected) as caught:
        load_public_tls_key(make(keys))

    assert caught.value.field == "public_tls_key"
    assert caught.value.code == "invalid_request"
    assert reason in caught.value.message
    assert caught.value.message.startswith("public_tls_key: ")


@pytest.mark.parametrize("kind", ["p256", "p384", "ed25519", "rsa_2048"])
def test_a_strong_ssh_key_is_accepted(kind, keys):
    key = getattr(keys, kind)

    assert load_public_ssh_key(ssh_line(key) + "\n") == key


def _dsa_line(keys: SimpleNamespace) -> str:
    numbers = keys.dsa.public_numbers()
    p, q, g = numbers.parameter_numbers.p, numbers.parameter_numbers.q, numbers.parameter_numbers.g
    blob = ssh_string(b"ssh-dss") + b"".join(ssh_mpint(v) for v in (p, q, g, numbers.y))
    return "ssh-dss " + base64.b64encode(blob).decode()


def _security_key_line(keys: SimpleNamespace) -> str:
    raw = keys.ed25519.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    blob = ssh_string(b"sk-ssh-ed25519@openssh.com") + ssh_string(raw) + ssh_string(b"ssh:")
    return "sk-ssh-ed25519@openssh.com " + base64.b64encode(blob).decode()


def _certificate_line(keys: SimpleNamespace) -> str:
    ca = generate_host_ca(CLUSTER, datetime(2030, 1, 1, tzinfo=UTC))
    creds = issue(ca, keys, datetime(2030, 1, 1, 1, tzinfo=UTC))
    return creds.ssh_cert or ""


def _mislabelled_line(keys: SimpleNamespace) -> str:
    return "ssh-rsa " + ssh_line(keys.ed25519).split()[1]


SSH_REJECTIONS: list[tuple[str, Callable[[SimpleNamespace], object], str]] = [
    ("dsa", _dsa_line, "DSA"),
    ("rsa-1024", lambda k: ssh_line(k.rsa_1024), "1024 bits"),
    ("rsa-exponent-3", lambda k: ssh_line(k.rsa_e3), "exponent 3"),
    ("p-521", lambda k: ssh_line(k.p521), "ecdsa-sha2-nistp521"),
    ("security key", _security_key_line, "sk-ssh-ed25519"),
    ("certificate", _certificate_line, "SSH certificate"),
    ("mislabelled", _mislabelled_line, "does not parse"),
    ("truncated", lambda k: ssh_line(k.ed25519)[:40], "does not parse"),
    ("garbage", lambda k: "ssh-ed25519 !!!not-base64!!!", "does not parse"),
    ("one word", lambda k: "ssh-ed25519", "expected '<type> <base64>"),
    ("empty", lambda k: "", "expected '<type> <base64>"),
    ("two lines", lambda k: ssh_line(k.ed25519) + "\n" + ssh_line(k.p256), "several lines"),
    ("options", lambda k: 'from="10.0.0.1" ' + ssh_line(k.ed25519), "not accepted"),
    ("pem instead", lambda k: spki_pem(k.p256), "several lines"),
    ("not a string", lambda k: None, "as a string"),
]


@pytest.mark.parametrize(
    ("make", "reason"),
    [(m, r) for _, m, r in SSH_REJECTIONS],
    ids=[i for i, _, _ in SSH_REJECTIONS],
)
def test_a_weak_or_malformed_ssh_key_is_rejected_with_the_field_named(make, reason, keys):
    with pytest.raises(KeyRejected) as caught:
        load_public_ssh_key(make(keys))

    assert caught.value.field == "public_ssh_key"
    assert caught.value.code == "invalid_request"
    assert reason in caught.value.message


@pytest.mark.parametrize(
    ("argument", "field"),
    [("tls_public_key", "public_tls_key"), ("ssh_public_key", "public_ssh_key")],
)
def test_issuing_rechecks_the_keys_it_is_handed(argument, field, keys, host_ca, now):
    with pytest.raises(KeyRejected) as caught:
        issue(host_ca, keys, now, **{argument: keys.rsa_1024})

    assert caught.value.field == field


# --- names -----------------------------------------------------------------------------------

NAME_REJECTIONS: list[tuple[str, object, str, str]] = [
    ("dns_names", ["*.example.com"], "dns_names", "wildcard"),
    ("dns_names", ["a..b"], "dns_names", "not a valid host name"),
    ("dns_names", ["-a.example"], "dns_names", "not a valid host name"),
    ("dns_names", ["a-.example"], "dns_names", "not a valid host name"),
    ("dns_names", ["exa mple.com"], "dns_names", "not a valid host name"),
    ("dns_names", ["under_score.example"], "dns_names", "not a valid host name"),
    ("dns_names", ["x" * 64 + ".example"], "dns_names", "not a valid host name"),
    ("dns_names", [".".join(["a" * 63] * 4)], "dns_names", "longer than 253"),
    ("dns_names", ["bücher.example"], "dns_names", "xn--"),
    ("dns_names", [""], "dns_names", "empty"),
    ("dns_names", ["10.0.0.1"], "dns_names", "IP address"),
    ("dns_names", ["1.2.3"], "dns_names", "IP address"),
    ("dns_names", [5], "dns_names", "as strings"),
    ("dns_names", "node1.internal", "dns_names", "a list"),
    ("dns_names", [f"n{i}.example" for i in range(65)], "dns_names", "at most 64"),
    ("node_name", "*", "node_name", "wildcard"),
    ("node_name", "bad name", "node_name", "not a valid host name"),
    ("node_name", "10.0.0.12", "node_name", "IP address"),
    ("node_name", "", "node_name", "empty"),
    ("host_id", "bad/host", "host_id", "not a valid host name"),
    ("host_id", "a" * 63 + ".b", "host_id", "64 characters"),
    ("additional_principals", ["*.example.com"], "additional_principals", "wildcard"),
    ("additional_principals", ["not valid!"], "additional_principals", "not a valid host name"),
    ("additional_principals", ["fe80::1%eth0"], "additional_principals", "zone index"),
    ("additional_principals", ["010.0.0.1"], "additional_principals", "IP address"),
    ("roles", [], "roles", "non-empty"),
    ("roles", ["bad role"], "roles", "not a role name"),
    ("roles", "Node", "roles", "non-empty list"),
]


@pytest.mark.parametrize(
    ("argument", "value", "field", "reason"),
    NAME_REJECTIONS,
    ids=[f"{a}-{i}" for i, (a, *_) in enumerate(NAME_REJECTIONS)],
)
def test_a_bad_name_is_rejected_with_the_field_named(
    argument, value, field, reason, keys, host_ca, now
):
    with pytest.raises(KeyRejected) as caught:
        issue(host_ca, keys, now, **{argument: value})

    assert caught.value.field == field
    assert reason in caught.value.message


# --- CA keys at rest -------------------------------------------------------------------------


def test_a_sealed_ca_key_opens_to_the_same_key(host_ca):
    for key, purpose in ((host_ca.tls_key, TLS_KEY_PURPOSE), (host_ca.ssh_key, SSH_KEY_PURPOSE)):
        blob = encrypt_private_key(key, SECRET, purpose)

        assert re.fullmatch(r"v1:[A-Za-z0-9+/=]+:[A-Za-z0-9+/=]+", blob)
        opened = decrypt_private_key(blob, SECRET, purpose)
        assert opened.public_key() == key.public_key()


def test_sealing_the_same_key_twice_gives_different_blobs(host_ca):
    first = encrypt_private_key(host_ca.tls_key, SECRET, TLS_KEY_PURPOSE)

    assert first != encrypt_private_key(host_ca.tls_key, SECRET, TLS_KEY_PURPOSE)


def _flip(blob: str, part: int) -> str:
    pieces = blob.split(":")
    raw = bytearray(base64.b64decode(pieces[part]))
    raw[len(raw) // 2] ^= 0x01
    pieces[part] = base64.b64encode(bytes(raw)).decode()
    return ":".join(pieces)


OPEN_FAILURES: list[tuple[str, Callable[[str], tuple[str, str, str]]]] = [
    ("wrong secret", lambda b: (b, SECRET + "x", TLS_KEY_PURPOSE)),
    ("wrong purpose", lambda b: (b, SECRET, SSH_KEY_PURPOSE)),
    ("flipped ciphertext byte", lambda b: (_flip(b, 2), SECRET, TLS_KEY_PURPOSE)),
    ("flipped nonce byte", lambda b: (_flip(b, 1), SECRET, TLS_KEY_PURPOSE)),
    ("truncated", lambda b: (b[:-8], SECRET, TLS_KEY_PURPOSE)),
    ("other version", lambda b: ("v2" + b[2:], SECRET, TLS_KEY_PURPOSE)),
    ("not base64", lambda b: (b[:5] + "*" + b[6:], SECRET, TLS_KEY_PURPOSE)),
    ("empty", lambda b: ("", SECRET, TLS_KEY_PURPOSE)),
    ("short secret", lambda b: (b, "short", TLS_KEY_PURPOSE)),
]


@pytest.mark.parametrize("change", [c for _, c in OPEN_FAILURES], ids=[i for i, _ in OPEN_FAILURES])
def test_a_sealed_key_does_not_open_with_anything_but_its_exact_inputs(change, host_ca):
    blob = encrypt_private_key(host_ca.tls_key, SECRET, TLS_KEY_PURPOSE)

    with pytest.raises(CAKeyError) as caught:
        decrypt_private_key(*change(blob))

    assert caught.value.code == "ca_key_invalid"


def test_sealing_with_a_short_secret_is_refused(host_ca):
    with pytest.raises(CAKeyError, match="at least 32"):
        encrypt_private_key(host_ca.tls_key, "too-short", TLS_KEY_PURPOSE)


def test_a_ca_survives_a_round_trip_through_a_record(keys, host_ca, now):
    record = ca_to_record(host_ca, SECRET)

    assert set(record) == {
        "cluster_name",
        "tls_cert_pem",
        "tls_key_encrypted",
        "ssh_public_key",
        "ssh_key_encrypted",
    }
    assert all(isinstance(value, str) for value in record.values())
    assert "PRIVATE" not in "".join(record.values())
    restored = ca_from_record(SimpleNamespace(**record), SECRET)
    assert restored.tls_cert == host_ca.tls_cert
    assert restored.ssh_public_key == host_ca.ssh_public_key
    creds = issue(restored, keys, now)
    leaf(creds).verify_directly_issued_by(host_ca.tls_cert)


RECORD_FAILURES: list[tuple[str, Callable[[dict[str, str], dict[str, str]], dict[str, str]]]] = [
    (
        "swapped key blobs",
        lambda r, o: {
            **r,
            "tls_key_encrypted": r["ssh_key_encrypted"],
            "ssh_key_encrypted": r["tls_key_encrypted"],
        },
    ),
    ("another ca's tls key", lambda r, o: {**r, "tls_key_encrypted": o["tls_key_encrypted"]}),
    ("another ca's ssh key", lambda r, o: {**r, "ssh_key_encrypted": o["ssh_key_encrypted"]}),
    ("another ca's ssh public key", lambda r, o: {**r, "ssh_public_key": o["ssh_public_key"]}),
    ("another cluster name", lambda r, o: {**r, "cluster_name": "other.example"}),
    ("two certificates", lambda r, o: {**r, "tls_cert_pem": r["tls_cert_pem"] * 2}),
    ("missing field", lambda r, o: {k: v for k, v in r.items() if k != "ssh_public_key"}),
]


@pytest.mark.parametrize(
    "change", [c for _, c in RECORD_FAILURES], ids=[i for i, _ in RECORD_FAILURES]
)
def test_a_record_whose_parts_do_not_belong_together_is_refused(change, host_ca, other_ca):
    record = ca_to_record(host_ca, SECRET)
    other = ca_to_record(other_ca, SECRET)

    with pytest.raises(CAKeyError):
        ca_from_record(change(record, other), SECRET)


def test_a_record_sealed_under_another_secret_is_refused(host_ca):
    record = ca_to_record(host_ca, SECRET)

    with pytest.raises(CAKeyError, match="does not open"):
        ca_from_record(record, SECRET[::-1])


def test_the_tls_ca_key_signs_with_sha256(host_ca):
    assert isinstance(host_ca.tls_cert.signature_hash_algorithm, hashes.SHA256)


def _distribution_points(creds: IssuedCredentials) -> list[str]:
    try:
        points = leaf(creds).extensions.get_extension_for_class(x509.CRLDistributionPoints).value
    except x509.ExtensionNotFound:
        return []
    return [name.value for point in points for name in point.full_name or []]


def test_a_crl_url_is_named_as_the_certificates_distribution_point(keys, host_ca, now, tmp_path):
    url = "https://joinadmin.example.com/api/v1/ca/crl"
    creds = issue(host_ca, keys, now, crl_url=url)
    assert _distribution_points(creds) == [url]
    assert _distribution_points(issue(host_ca, keys, now)) == []
    (tmp_path / "host.pem").write_text(creds.tls_cert_pem)
    text = subprocess.run(
        ["openssl", "x509", "-in", str(tmp_path / "host.pem"), "-noout", "-text"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "X509v3 CRL Distribution Points" in text and f"URI:{url}" in text


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x31\x00",  # a SET, not a SEQUENCE
        b"\x30\x03\x04\x01A",  # an OCTET STRING inside, not a UTF8String
        b"\x30\x03\x0c\x01A\x00",  # trailing data
        b"\x30\x05\x0c\x01A",  # the SEQUENCE claims more than there is
        b"\x30\x03\x0c\x01\xff",  # not UTF-8
    ],
)
def test_malformed_roles_are_refused(data: bytes) -> None:
    with pytest.raises(ValueError):
        _decode_roles(data)
    assert _decode_roles(_encode_roles(["Node", "Db"])) == ["Node", "Db"]
