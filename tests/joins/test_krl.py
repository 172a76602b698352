"""The SSH host certificates' revocation list (KRL): built in OpenSSH's format (pure), served
publicly, and read by the real `ssh-keygen -Q`, which finds a terminated instance's SSH host
certificate revoked and its neighbour's not."""

from __future__ import annotations

import struct
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from django.test import Client
from django.utils import timezone

from joins.ca import HostCA, IssuedCredentials, generate_host_ca, issue_host_credentials
from joins.krl import MAGIC, build_krl, ca_key_blob
from joins.lifecycle import reconcile_hosts
from joins.models import RevokedCertificate
from joins.revocation import current_krl
from tests.joins.conftest import make_token, post_join

T0 = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)


def _issue(ca: HostCA, host_id: str = "123456789012-i-0123456789abcdef0") -> IssuedCredentials:
    return issue_host_credentials(
        ca,
        host_id=host_id,
        node_name=host_id,
        roles=("Node",),
        tls_public_key=ec.generate_private_key(ec.SECP256R1()).public_key(),
        ssh_public_key=ed25519.Ed25519PrivateKey.generate().public_key(),
        dns_names=(),
        additional_principals=(),
        cluster_name="krl-test",
        now=T0,
        ttl=timedelta(hours=8),
    )


def _query(krl: Path, *certs: Path) -> dict[str, str]:
    """`ssh-keygen -Q`'s verdict per certificate file: "REVOKED" or "ok"."""
    result = subprocess.run(
        ["ssh-keygen", "-Q", "-f", str(krl), *map(str, certs)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    verdicts = {}
    for line in result.stdout.splitlines():
        path, _, verdict = line.rpartition(": ")
        verdicts[Path(path.split(" (")[0]).name] = verdict
    assert result.returncode == (1 if "REVOKED" in verdicts.values() else 0), result.stderr
    assert len(verdicts) == len(certs), result.stdout + result.stderr
    return verdicts


@pytest.fixture(scope="module")
def two_cas() -> tuple[HostCA, HostCA]:
    return (
        generate_host_ca("krl-test", T0 - timedelta(days=1)),
        generate_host_ca("krl-test", T0 - timedelta(days=1)),
    )


def test_ssh_keygen_finds_a_listed_serial_revoked_under_its_own_ca_only(two_cas, tmp_path: Path):
    ca, other = two_cas
    revoked, kept, same_serial_other_ca = _issue(ca), _issue(ca), _issue(other)
    assert revoked.ssh_serial and kept.ssh_serial
    files = {}
    for name, issued in (("revoked", revoked), ("kept", kept), ("other", same_serial_other_ca)):
        files[name] = tmp_path / f"{name}-cert.pub"
        files[name].write_text(issued.ssh_cert or "")
    krl = tmp_path / "hosts.krl"
    # The other CA's certificate carries another serial; listing it under the first CA must
    # not revoke it: each section names its CA.
    krl.write_bytes(
        build_krl(
            [
                (
                    ca_key_blob(ca.ssh_public_key),
                    [revoked.ssh_serial, same_serial_other_ca.ssh_serial],
                )
            ],
            version=4,
            generated=T0,
            comment="test",
        )
    )
    assert _query(krl, *files.values()) == {
        "revoked-cert.pub": "REVOKED",
        "kept-cert.pub": "ok",
        "other-cert.pub": "ok",
    }
    listing = subprocess.run(
        ["ssh-keygen", "-Q", "-l", "-f", str(krl)], capture_output=True, text=True, check=True
    ).stdout
    assert "# KRL version 4" in listing and "# Comment: test" in listing
    assert f"serial: {revoked.ssh_serial}" in listing


def test_a_krl_without_serials_has_a_header_only_and_revokes_nothing(two_cas, tmp_path: Path):
    ca, _ = two_cas
    data = build_krl([(ca_key_blob(ca.ssh_public_key), [])], version=0, generated=T0)
    assert data.startswith(MAGIC)
    assert struct.unpack(">IQQQ", data[8:36]) == (1, 0, int(T0.timestamp()), 0)
    assert len(data) == 8 + 28 + 4 + 4  # magic, numbers, empty reserved, empty comment
    cert = tmp_path / "cert.pub"
    cert.write_text(_issue(ca).ssh_cert or "")
    krl = tmp_path / "empty.krl"
    krl.write_bytes(data)
    assert _query(krl, cert) == {"cert.pub": "ok"}


def test_wrong_serials_versions_and_key_lines_are_refused(two_cas):
    ca, _ = two_cas
    blob = ca_key_blob(ca.ssh_public_key)
    for serials in ([0], [2**64]):
        with pytest.raises(ValueError, match="64-bit"):
            build_krl([(blob, serials)], version=1, generated=T0)
    with pytest.raises(ValueError, match="version"):
        build_krl([], version=-1, generated=T0)
    for line in (
        "",
        "ssh-ed25519",
        "ssh-ed25519 !!notbase64",
        "ssh-rsa " + ca.ssh_public_key.split()[1],
    ):
        with pytest.raises(ValueError):
            ca_key_blob(line)


@pytest.mark.django_db
def test_the_krl_lists_revoked_ssh_serials_until_their_certificates_expire():
    now = timezone.now()
    for serial, ssh_serial, not_after in (
        ("a1", "111", None),
        ("a2", "222", now + timedelta(hours=1)),
        ("a3", "333", now - timedelta(minutes=1)),  # expired: left out
        ("a4", "", None),  # no SSH certificate
        ("a5", "junk", None),  # unreadable: left out, logged
    ):
        RevokedCertificate.objects.create(
            serial=serial,
            host_id=f"h-{serial}",
            ssh_serial=ssh_serial,
            revoked_at=now,
            reason="test",
            not_after=not_after,
        )
    data = current_krl(now)
    assert data == current_krl(now)  # the same rows give the same bytes
    assert struct.unpack(">Q", data[12:20])[0] == RevokedCertificate.objects.latest("id").id
    # The last section: one CA, its serial list (type 0x20, length 16) of the two listed.
    assert data[-21] == 0x20 and struct.unpack(">I", data[-20:-16]) == (16,)
    assert struct.unpack(">QQ", data[-16:]) == (111, 222)


@pytest.mark.django_db
def test_the_krl_version_does_not_go_back_when_the_newest_revocation_expires():
    now = timezone.now()
    for serial, not_after in (("b1", None), ("b2", now - timedelta(minutes=1))):
        RevokedCertificate.objects.create(
            serial=serial,
            host_id=f"h-{serial}",
            ssh_serial="7",
            revoked_at=now,
            reason="test",
            not_after=not_after,
        )
    newest = RevokedCertificate.objects.get(serial="b2")
    assert struct.unpack(">Q", current_krl(now)[12:20])[0] == newest.id


def test_ssh_keygen_refuses_the_ssh_certificate_of_a_terminated_instance(
    client, world, at_launch, tmp_path: Path
):
    make_token()
    doomed, kept = world.launch(), world.launch()
    for instance in (doomed, kept):
        response = post_join(client, world.body("ec2-token", world.document(instance)))
        assert response.status_code == 200, response.content
        (tmp_path / f"{instance.host_id}-cert.pub").write_text(response.json()["ssh_cert"])
    world.ec2("us-west-2").terminate_instances(InstanceIds=[doomed.instance_id])
    assert reconcile_hosts(actor="cli:test").retired == [doomed.host_id]

    answer = Client().get("/api/v1/ca/ssh-krl")  # public, like the CRL
    assert answer.status_code == 200
    assert answer["Content-Type"] == "application/octet-stream"
    assert "public" in answer["Cache-Control"]
    krl = tmp_path / "hosts.krl"
    krl.write_bytes(answer.content)
    assert _query(
        krl, tmp_path / f"{doomed.host_id}-cert.pub", tmp_path / f"{kept.host_id}-cert.pub"
    ) == {f"{doomed.host_id}-cert.pub": "REVOKED", f"{kept.host_id}-cert.pub": "ok"}
    assert Client().post("/api/v1/ca/ssh-krl").status_code == 405
