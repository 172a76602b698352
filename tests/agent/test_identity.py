"""The data dir: modes, one host per directory, keys created once, checked credentials."""

from __future__ import annotations

import dataclasses
import os
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from joinadmin_agent.client import JoinResult
from joinadmin_agent.identity import (
    IdentityError,
    open_identity,
    store_credentials,
)
from tests.agent.test_client import IssuingCA
from tests.support.fake_imds import SAMPLE_HOST_ID

OTHER_HOST_ID = "210987654321-i-0fedcba9876543210"


def mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def snapshot(directory: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(directory.iterdir())}


def issued(data_dir: Path) -> JoinResult:
    keys = open_identity(data_dir, SAMPLE_HOST_ID)
    request = {"public_tls_key": keys.public_tls_pem, "public_ssh_key": keys.public_ssh_line}
    return JoinResult.from_json(IssuingCA().success_body(request))


def test_a_fresh_data_dir_is_0700_with_private_keys_0600_and_public_keys_0644(
    tmp_path: Path,
) -> None:
    data_dir = tmp_path / "nested" / "agent"

    open_identity(data_dir, SAMPLE_HOST_ID)

    assert mode(data_dir) == 0o700
    assert mode(data_dir / "tls.key") == 0o600
    assert mode(data_dir / "ssh_host_key") == 0o600
    assert mode(data_dir / "tls.pub") == 0o644
    assert mode(data_dir / "ssh_host_key.pub") == 0o644
    assert (data_dir / "host_id").read_text() == f"{SAMPLE_HOST_ID}\n"
    assert sorted(path.name for path in data_dir.iterdir()) == [
        "host_id",
        "ssh_host_key",
        "ssh_host_key.pub",
        "tls.key",
        "tls.pub",
    ]


def test_the_keys_are_an_ecdsa_p256_tls_key_and_an_ed25519_ssh_key(tmp_path: Path) -> None:
    keys = open_identity(tmp_path / "agent", SAMPLE_HOST_ID)

    assert isinstance(keys.tls_key.curve, ec.SECP256R1)
    assert keys.public_tls_pem.startswith("-----BEGIN PUBLIC KEY-----")
    assert keys.public_ssh_line.startswith("ssh-ed25519 ")


def test_a_second_run_reuses_the_same_keys(tmp_path: Path) -> None:
    data_dir = tmp_path / "agent"
    first = open_identity(data_dir, SAMPLE_HOST_ID)
    before = snapshot(data_dir)

    second = open_identity(data_dir, SAMPLE_HOST_ID)

    assert second.public_tls_pem == first.public_tls_pem
    assert second.public_ssh_line == first.public_ssh_line
    assert snapshot(data_dir) == before


def test_a_loose_but_not_writable_data_dir_is_tightened_to_0700(tmp_path: Path) -> None:
    data_dir = tmp_path / "agent"
    data_dir.mkdir(mode=0o755)
    data_dir.chmod(0o755)

    open_identity(data_dir, SAMPLE_HOST_ID)

    assert mode(data_dir) == 0o700


def test_a_data_dir_of_another_host_is_refused_and_left_untouched(tmp_path: Path) -> None:
    data_dir = tmp_path / "agent"
    open_identity(data_dir, OTHER_HOST_ID)
    before = snapshot(data_dir)

    with pytest.raises(IdentityError) as refused:
        open_identity(data_dir, SAMPLE_HOST_ID)

    message = str(refused.value)
    assert OTHER_HOST_ID in message
    assert SAMPLE_HOST_ID in message
    assert "another host" in message
    assert f"mv {data_dir} {data_dir}.old" in message
    assert snapshot(data_dir) == before


def test_keys_without_a_host_id_are_refused(tmp_path: Path) -> None:
    data_dir = tmp_path / "agent"
    open_identity(data_dir, SAMPLE_HOST_ID)
    (data_dir / "host_id").unlink()

    with pytest.raises(IdentityError, match="no host_id file"):
        open_identity(data_dir, SAMPLE_HOST_ID)

    assert not (data_dir / "host_id").exists()


def test_a_private_key_readable_by_others_is_refused(tmp_path: Path) -> None:
    data_dir = tmp_path / "agent"
    open_identity(data_dir, SAMPLE_HOST_ID)
    (data_dir / "tls.key").chmod(0o644)

    with pytest.raises(IdentityError, match="exposed"):
        open_identity(data_dir, SAMPLE_HOST_ID)


def test_a_private_key_that_is_a_symlink_is_refused(tmp_path: Path) -> None:
    data_dir = tmp_path / "agent"
    open_identity(data_dir, SAMPLE_HOST_ID)
    elsewhere = tmp_path / "elsewhere.key"
    (data_dir / "ssh_host_key").rename(elsewhere)
    (data_dir / "ssh_host_key").symlink_to(elsewhere)

    with pytest.raises(IdentityError, match="symbolic link"):
        open_identity(data_dir, SAMPLE_HOST_ID)


def test_a_data_dir_writable_by_others_is_refused(tmp_path: Path) -> None:
    data_dir = tmp_path / "agent"
    data_dir.mkdir()
    data_dir.chmod(0o777)

    with pytest.raises(IdentityError, match="writable by group or others"):
        open_identity(data_dir, SAMPLE_HOST_ID)

    assert list(data_dir.iterdir()) == []


def test_a_data_dir_that_is_a_file_is_refused(tmp_path: Path) -> None:
    data_dir = tmp_path / "agent"
    data_dir.write_text("")

    with pytest.raises(IdentityError):
        open_identity(data_dir, SAMPLE_HOST_ID)


def test_a_tls_key_of_the_wrong_type_is_refused(tmp_path: Path) -> None:
    data_dir = tmp_path / "agent"
    open_identity(data_dir, SAMPLE_HOST_ID)
    (data_dir / "tls.key").write_bytes((data_dir / "ssh_host_key").read_bytes())

    with pytest.raises(IdentityError, match=r"tls\.key"):
        open_identity(data_dir, SAMPLE_HOST_ID)


def test_credentials_are_stored_atomically_with_the_right_modes(tmp_path: Path) -> None:
    data_dir = tmp_path / "agent"
    result = issued(data_dir)
    keys = open_identity(data_dir, SAMPLE_HOST_ID)

    store_credentials(data_dir, SAMPLE_HOST_ID, keys, result, "https://joinadmin.example.com")

    assert (data_dir / "tls.crt").read_text() == result.tls_cert.strip() + "\n"
    assert (data_dir / "tls-ca.crt").read_text() == "".join(
        pem.strip() + "\n" for pem in result.tls_ca_certs
    )
    assert result.ssh_cert is not None
    assert (data_dir / "ssh_host_key-cert.pub").read_text() == result.ssh_cert.strip() + "\n"
    assert (data_dir / "ssh_ca.pub").read_text() == result.ssh_ca_keys[0] + "\n"
    for name in ("tls.crt", "tls-ca.crt", "ssh_host_key-cert.pub", "ssh_ca.pub", "join.json"):
        assert mode(data_dir / name) == 0o644
    assert not [path for path in data_dir.iterdir() if path.name.startswith(".")]


def test_credentials_for_another_host_id_are_not_stored(tmp_path: Path) -> None:
    data_dir = tmp_path / "agent"
    result = dataclasses.replace(issued(data_dir), host_id=OTHER_HOST_ID)
    keys = open_identity(data_dir, SAMPLE_HOST_ID)

    with pytest.raises(IdentityError, match="credentials for host"):
        store_credentials(data_dir, SAMPLE_HOST_ID, keys, result, "https://x")

    assert not (data_dir / "tls.crt").exists()
    assert not (data_dir / "join.json").exists()


def test_a_tls_certificate_for_another_key_is_not_stored(tmp_path: Path) -> None:
    data_dir = tmp_path / "agent"
    result = issued(data_dir)
    ca = IssuingCA()
    foreign = ca.issue_tls(ec.generate_private_key(ec.SECP256R1()).public_key(), SAMPLE_HOST_ID)
    keys = open_identity(data_dir, SAMPLE_HOST_ID)

    with pytest.raises(IdentityError, match="TLS key"):
        store_credentials(
            data_dir, SAMPLE_HOST_ID, keys, dataclasses.replace(result, tls_cert=foreign), "x"
        )

    assert not (data_dir / "tls.crt").exists()


def test_an_ssh_certificate_for_another_key_is_not_stored(tmp_path: Path) -> None:
    data_dir = tmp_path / "agent"
    result = issued(data_dir)
    other = open_identity(tmp_path / "other", SAMPLE_HOST_ID)
    foreign = IssuingCA().issue_ssh(other.public_ssh_line, SAMPLE_HOST_ID)
    keys = open_identity(data_dir, SAMPLE_HOST_ID)

    with pytest.raises(IdentityError, match="SSH key"):
        store_credentials(
            data_dir, SAMPLE_HOST_ID, keys, dataclasses.replace(result, ssh_cert=foreign), "x"
        )

    assert not (data_dir / "ssh_host_key-cert.pub").exists()
