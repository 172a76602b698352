"""The host CA's CRL: built correctly (pure), served publicly, verified by OpenSSL, and a
certificate of a terminated instance refused by `openssl verify -crl_check`."""

from __future__ import annotations

import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from django.test import Client
from django.utils import timezone

from joins.authority import get_host_ca, public_ca_material
from joins.crl import REASON_CESSATION, Revocation, build_crl, parse_serial
from joins.lifecycle import reconcile_hosts
from joins.models import Host, RevocationList, RevokedCertificate
from joins.revocation import CRL_REISSUE_AFTER, current_crl
from tests.joins.conftest import make_token, post_join

T0 = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def host_ca():  # type: ignore[no-untyped-def]
    from joins.ca import generate_host_ca

    return generate_host_ca("crl-test", T0 - timedelta(days=1))


def test_a_built_crl_is_signed_by_the_ca_and_lists_each_serial_with_its_date(host_ca):
    crl = build_crl(
        issuer_certificate=host_ca.tls_cert,
        issuer_key=host_ca.tls_key,
        revocations=[
            Revocation(0xABC, T0),
            Revocation(0xDEF, T0 + timedelta(minutes=5), None),
            Revocation(0xABC, T0 + timedelta(hours=1)),
        ],
        number=7,
        this_update=T0,
        next_update=T0 + timedelta(days=1),
    )
    assert crl.is_signature_valid(host_ca.tls_cert.public_key())
    assert crl.issuer == host_ca.tls_cert.subject
    assert crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number == 7
    assert crl.next_update_utc - crl.last_update_utc == timedelta(days=1)
    entries = {entry.serial_number: entry for entry in crl}
    assert sorted(entries) == [0xABC, 0xDEF]
    assert entries[0xABC].revocation_date_utc == T0
    reason = entries[0xABC].extensions.get_extension_for_class(x509.CRLReason).value.reason
    assert reason == REASON_CESSATION
    assert len(entries[0xDEF].extensions) == 0


def test_a_crl_is_refused_with_a_foreign_key_or_backwards_dates(host_ca):
    stranger = ec.generate_private_key(ec.SECP256R1())
    with pytest.raises(ValueError, match="does not belong"):
        build_crl(
            issuer_certificate=host_ca.tls_cert,
            issuer_key=stranger,
            revocations=[],
            number=1,
            this_update=T0,
            next_update=T0 + timedelta(days=1),
        )
    with pytest.raises(ValueError, match="nextUpdate"):
        build_crl(
            issuer_certificate=host_ca.tls_cert,
            issuer_key=host_ca.tls_key,
            revocations=[],
            number=1,
            this_update=T0,
            next_update=T0,
        )


def test_serials_are_read_as_the_join_records_them():
    assert parse_serial("ff") == 255
    for bad in ("0", "-5", "zz", "1" + "0" * 40):
        with pytest.raises(ValueError):
            parse_serial(bad)


def _revoke(serial: str, when: datetime, not_after: datetime | None = None) -> None:
    RevokedCertificate.objects.create(
        serial=serial, host_id=f"h-{serial}", revoked_at=when, reason="test", not_after=not_after
    )


@pytest.mark.django_db
def test_the_crl_endpoints_are_public_and_serve_der_and_pem():
    _revoke("abc123", timezone.now())
    der = Client().get("/api/v1/ca/crl")
    assert der.status_code == 200 and der["Content-Type"] == "application/pkix-crl"
    assert "public" in der["Cache-Control"]
    crl = x509.load_der_x509_crl(der.content)
    assert [entry.serial_number for entry in crl] == [0xABC123]
    pem = Client().get("/api/v1/ca/crl.pem")
    assert pem.status_code == 200
    assert pem.content.startswith(b"-----BEGIN X509 CRL-----")
    assert x509.load_pem_x509_crl(pem.content).public_bytes(Encoding.DER) == der.content
    assert Client().post("/api/v1/ca/crl").status_code == 405


@pytest.mark.django_db
def test_the_crl_number_grows_with_every_new_list_and_the_bytes_stay_put_in_between():
    now = timezone.now()
    first = current_crl(now)
    again = current_crl(now + timedelta(minutes=1))
    assert again.pk == first.pk and bytes(again.der) == bytes(first.der)
    _revoke("beef", now)
    second = current_crl(now + timedelta(minutes=2))
    later = current_crl(now + CRL_REISSUE_AFTER + timedelta(minutes=3))
    assert (first.number, second.number, later.number) == (1, 2, 3)
    assert second.entries == 1
    assert later.next_update - later.this_update == timedelta(days=1)


@pytest.mark.django_db
def test_an_entry_drops_off_once_its_certificate_has_expired():
    now = timezone.now()
    _revoke("aa", now - timedelta(days=2), not_after=now - timedelta(days=1))
    _revoke("bb", now - timedelta(hours=1), not_after=now + timedelta(hours=5))
    crl = x509.load_der_x509_crl(bytes(current_crl(now).der))
    assert [entry.serial_number for entry in crl] == [0xBB]


@pytest.mark.django_db
def test_a_new_list_follows_a_ca_rotation():
    first = current_crl()
    from joins import authority
    from joins.models import CertificateAuthority

    CertificateAuthority.objects.update(active=False)
    authority.reset_cache()
    rotated = current_crl()
    assert rotated.number == first.number + 1 and rotated.ca_id != first.ca_id
    crl = x509.load_der_x509_crl(bytes(rotated.der))
    assert crl.is_signature_valid(get_host_ca().tls_cert.public_key())


def _openssl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["openssl", *args], capture_output=True, text=True, timeout=30, check=False
    )


def test_openssl_verifies_the_crl_and_refuses_the_certificate_of_a_terminated_instance(
    client, world, at_launch, tmp_path: Path
):
    make_token()
    doomed, kept = world.launch(), world.launch()
    issued = {}
    for instance in (doomed, kept):
        response = post_join(client, world.body("ec2-token", world.document(instance)))
        assert response.status_code == 200, response.content
        issued[instance.host_id] = response.json()["tls_cert"]
    world.ec2("us-west-2").terminate_instances(InstanceIds=[doomed.instance_id])
    report = reconcile_hosts(actor="cli:test")
    assert report.retired == [doomed.host_id] and report.crl_number is not None

    ca_file = tmp_path / "ca.pem"
    ca_file.write_text(public_ca_material()["tls_ca_certs"][0])
    crl_file = tmp_path / "crl.pem"
    crl_file.write_bytes(Client().get("/api/v1/ca/crl.pem").content)
    checked = _openssl("crl", "-in", str(crl_file), "-noout", "-verify", "-CAfile", str(ca_file))
    assert checked.returncode == 0 and "verify OK" in (checked.stdout + checked.stderr)

    at = str(int(timezone.now().timestamp()) + 60)
    for host_id, pem in issued.items():
        (tmp_path / f"{host_id}.pem").write_text(pem)
    refused = _openssl(
        "verify",
        "-attime",
        at,
        "-crl_check",
        "-CAfile",
        str(ca_file),
        "-CRLfile",
        str(crl_file),
        str(tmp_path / f"{doomed.host_id}.pem"),
    )
    assert refused.returncode != 0
    assert "certificate revoked" in (refused.stdout + refused.stderr)
    accepted = _openssl(
        "verify",
        "-attime",
        at,
        "-crl_check",
        "-CAfile",
        str(ca_file),
        "-CRLfile",
        str(crl_file),
        str(tmp_path / f"{kept.host_id}.pem"),
    )
    assert accepted.returncode == 0, accepted.stdout + accepted.stderr
    assert Host.objects.get(host_id=doomed.host_id).revoked_at is not None
    assert RevocationList.objects.count() >= 1


def test_a_joined_hosts_certificate_names_the_crl_when_the_public_url_is_set(
    client, world, at_launch, settings
):
    make_token()
    settings.PUBLIC_URL = "https://joinadmin.example.com"
    response = post_join(client, world.body("ec2-token", world.document(world.launch())))
    assert response.status_code == 200, response.content
    cert = x509.load_pem_x509_certificate(response.json()["tls_cert"].encode())
    points = cert.extensions.get_extension_for_class(x509.CRLDistributionPoints).value
    assert [name.value for point in points for name in point.full_name or []] == [
        "https://joinadmin.example.com/api/v1/ca/crl"
    ]
    settings.PUBLIC_URL = ""
    response = post_join(client, world.body("ec2-token", world.document(world.launch())))
    cert = x509.load_pem_x509_certificate(response.json()["tls_cert"].encode())
    with pytest.raises(x509.ExtensionNotFound):
        cert.extensions.get_extension_for_class(x509.CRLDistributionPoints)
