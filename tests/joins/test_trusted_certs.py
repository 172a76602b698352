"""Trusted AWS certificates: inspection and validation (pure), the database layer over the
directory and the built-in certificates, its pick-up by every server without a restart, the
admin pages with their confirmation and log, and the expiry warnings."""

from __future__ import annotations

import hashlib
import re
from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID
from django.core.files.uploadedfile import SimpleUploadedFile
from django.utils import timezone

from audit.models import AdminAction
from joins import trust
from joins.cert_inspect import (
    CertificateRejected,
    describe,
    expiry_status,
    parse_region_certificate,
    pem_of,
)
from joins.iid import CertificateStore
from joins.models import TrustedCertificate
from joins.trusted_certs import (
    CertificateChangeRefused,
    apply_change,
    plan_change,
    region_certificates,
    remove_certificate,
)
from tests.joins.conftest import make_token, post_join

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)


@pytest.fixture(autouse=True)
def fresh_store():  # type: ignore[no-untyped-def]
    """Each test's database starts over; so must this process's cached view of it."""
    trust.reset()
    yield
    trust.reset()


_RSA = rsa.generate_private_key(public_exponent=65537, key_size=2048)


def make_cert(
    *,
    key=None,
    days: int = 3650,
    name: str = "test-aws",
    issuer_key=None,  # type: ignore[no-untyped-def]
    start: datetime | None = None,
) -> x509.Certificate:
    key = key or _RSA
    start = start or datetime.now(UTC) - timedelta(days=1)
    subject = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, name)])
    issuer = (
        subject
        if issuer_key is None
        else x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "someone else")])
    )
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + timedelta(days=days))
        .sign(issuer_key or key, hashes.SHA256())
    )


# --- pure -------------------------------------------------------------------------------------


def test_the_facts_carry_an_openssl_style_fingerprint_and_the_validity():
    cert = make_cert()
    facts = describe(cert)
    digest = hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest().upper()
    assert facts.fingerprint.replace(":", "") == digest and facts.fingerprint.count(":") == 31
    assert facts.self_signed and facts.key == "RSA 2048 bits" and facts.subject == "O=test-aws"
    assert facts.serial == format(cert.serial_number, "x")


def test_expiry_is_ok_then_expiring_within_ninety_days_then_expired():
    end = NOW + timedelta(days=91)
    assert expiry_status(end, NOW) == "ok"
    assert expiry_status(end, NOW + timedelta(days=2)) == "expiring"
    assert expiry_status(end, end) == "expired"


@pytest.mark.parametrize(
    ("region", "pem", "message"),
    [
        ("US-West-2", pem_of(make_cert()), "not an AWS region name"),
        ("us-west-2", "hello", "not a PEM certificate"),
        ("us-west-2", pem_of(make_cert()) + pem_of(make_cert()), "holds 2 certificates"),
        (
            "us-west-2",
            _RSA.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            ).decode(),
            "private key",
        ),
        ("us-west-2", pem_of(make_cert(key=ec.generate_private_key(ec.SECP256R1()))), "ECDSA"),
        (
            "us-west-2",
            pem_of(make_cert(key=rsa.generate_private_key(public_exponent=65537, key_size=1024))),
            "1024 bits",
        ),
        (
            "us-west-2",
            pem_of(make_cert(start=datetime(2000, 1, 1, tzinfo=UTC), days=10)),
            "expired on 2000-01-11",
        ),
    ],
)
def test_an_unusable_certificate_is_refused_with_the_reason(region, pem, message):
    with pytest.raises(CertificateRejected, match=message):
        parse_region_certificate(region, pem, datetime.now(UTC))


def test_a_certificate_signed_by_another_key_is_accepted_like_a_self_signed_one():
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    cert = parse_region_certificate(
        "xx-test-1", pem_of(make_cert(issuer_key=other)), datetime.now(UTC)
    )
    assert not describe(cert).self_signed


# --- the layers and the join -----------------------------------------------------------------


def add(region: str, cert: x509.Certificate, actor: object = "cli:test"):  # type: ignore[no-untyped-def]
    return apply_change(plan_change(region, pem_of(cert)), actor=actor, reason="test")


def test_a_certificate_added_in_the_database_lets_its_region_join(
    client, world, at_launch, settings
):
    settings.IID_CERTS_DIR = None  # only the built-in certificates: the test signer is unknown
    trust.reset()
    make_token()
    instance = world.launch()
    refused = post_join(client, world.body("ec2-token", world.document(instance)))
    assert refused.json()["error"] == "iid_signature_invalid"
    add("us-west-2", world.signer.certificate("us-west-2"))
    allowed = post_join(client, world.body("ec2-token", world.document(instance)))
    assert allowed.status_code == 200, allowed.content


def test_the_database_wins_over_the_directory_which_wins_over_the_built_in(
    client, world, at_launch
):
    make_token()
    layers = region_certificates("us-west-2")
    assert [entry.source for entry in layers.layers] == ["directory", "built-in"]
    add("us-west-2", make_cert())
    layers = region_certificates("us-west-2")
    assert [entry.source for entry in layers.layers] == ["database", "directory", "built-in"]
    response = post_join(client, world.body("ec2-token", world.document(world.launch())))
    assert response.json()["error"] == "iid_signature_invalid"
    remove_certificate("us-west-2", actor="cli:test", reason="back to the directory")
    response = post_join(client, world.body("ec2-token", world.document(world.launch())))
    assert response.status_code == 200


def test_another_servers_change_is_picked_up_after_the_refresh_interval(world, settings):
    settings.IID_CERTS_REFRESH_SECONDS = 3600
    trust.reset()
    before = trust.certificate_store()
    assert "xx-test-1" not in before
    # Written by "another server": nothing tells this process.
    TrustedCertificate.objects.create(
        region="xx-test-1", pem=pem_of(make_cert()), added_at=timezone.now()
    )
    assert "xx-test-1" not in trust.certificate_store()
    settings.IID_CERTS_REFRESH_SECONDS = 0
    assert "xx-test-1" in trust.certificate_store()
    assert trust.certificate_store().trusted("xx-test-1").source == "database"


def test_an_unusable_database_row_takes_its_region_out_rather_than_falling_back(world):
    TrustedCertificate.objects.create(region="us-west-2", pem="garbage", added_at=timezone.now())
    trust.reset()
    store = trust.certificate_store()
    assert "us-west-2" not in store and "us-east-1" in store
    assert region_certificates("us-west-2").effective is None


def test_changes_are_recorded_with_the_fingerprints_before_and_after(world):
    old = describe(world.signer.certificate("us-west-2")).fingerprint
    new_cert = make_cert()
    add("us-west-2", new_cert)
    add("xx-test-1", make_cert(name="new-region"))
    remove_certificate("us-west-2", actor="cli:test", reason="oops")
    actions = list(AdminAction.objects.order_by("id"))
    assert [a.action for a in actions] == ["iid_cert.replace", "iid_cert.add", "iid_cert.remove"]
    assert actions[0].before["fingerprint_sha256"] == old
    assert actions[0].before["source"] == "directory"
    assert actions[0].after["fingerprint_sha256"] == describe(new_cert).fingerprint
    assert actions[1].before is None
    assert actions[2].after["fingerprint_sha256"] == old
    assert TrustedCertificate.objects.get(region="xx-test-1").replaced == ""


def test_the_certificate_already_in_use_is_not_added_again(world):
    with pytest.raises(CertificateChangeRefused, match="already the one trusted"):
        plan_change("us-west-2", pem_of(world.signer.certificate("us-west-2")))
    with pytest.raises(CertificateChangeRefused):
        remove_certificate("us-west-2", actor="cli:test", reason="none there")


# --- pages ----------------------------------------------------------------------------------

LIST = "/tools/trusted-certificates/"
READ = [LIST, f"{LIST}us-west-2/", f"{LIST}us-west-2/built-in.pem"]
CHANGE = [f"{LIST}add/", f"{LIST}us-west-2/remove/"]


@pytest.fixture
def added(db):  # type: ignore[no-untyped-def]
    return add("us-west-2", make_cert())


def test_anonymous_users_are_sent_to_the_login_page_from_the_certificate_pages(client, added):
    for url in READ + CHANGE:
        response = client.get(url)
        assert response.status_code == 302 and "/accounts/login/" in response["Location"], url
    assert client.post(CHANGE[1], {"reason": "x"}).status_code == 302
    assert TrustedCertificate.objects.filter(region="us-west-2").exists()


def test_users_without_a_role_get_a_403_on_the_certificate_pages(plain_client, added):
    for url in READ + CHANGE:
        assert plain_client.get(url).status_code == 403, url


def test_auditors_read_the_certificates_but_cannot_change_them(auditor_client, added):
    for url in READ:
        assert auditor_client.get(url).status_code == 200, url
    for url in CHANGE:
        assert auditor_client.get(url).status_code == 403, url
    assert auditor_client.post(CHANGE[1], {"reason": "x"}).status_code == 403
    assert TrustedCertificate.objects.filter(region="us-west-2").exists()


def test_admins_open_every_certificate_page(admin_client, added):
    for url in READ + CHANGE:
        assert admin_client.get(url).status_code == 200, url


def test_the_list_shows_every_region_with_source_fingerprint_and_expiry(auditor_client, added):
    html = auditor_client.get(LIST).content.decode()
    assert html.count('<tr data-region="') == len(CertificateStore.load(None)) == 39
    assert "Added in the console" in html and "replaces built in" in html
    assert describe(x509.load_pem_x509_certificate(added.pem.encode())).fingerprint in html
    assert "2195-01-17" in html  # the built-in us-east-1 certificate's end


def test_an_admin_adds_a_new_region_from_an_uploaded_file(admin_client):
    cert = make_cert(name="brand-new")
    upload = SimpleUploadedFile("xx-test-1.pem", pem_of(cert).encode(), "application/x-pem-file")
    response = admin_client.post(
        f"{LIST}add/", {"region": "xx-test-1", "pem_file": upload, "reason": "new region"}
    )
    assert response.status_code == 302 and response["Location"] == f"{LIST}xx-test-1/"
    row = TrustedCertificate.objects.get(region="xx-test-1")
    assert row.added_by_name == "alice-admin" and row.replaced == ""
    assert AdminAction.objects.get().action == "iid_cert.add"


def test_replacing_a_built_in_certificate_asks_for_confirmation_first(admin_client, db):
    cert = make_cert(name="rotated")
    response = admin_client.post(
        f"{LIST}add/", {"region": "us-east-1", "pem_text": pem_of(cert), "reason": "AWS rotated it"}
    )
    html = response.content.decode()
    assert response.status_code == 200 and "Replace the certificate for" in html
    assert describe(cert).fingerprint in html and "Built in" in html
    assert not TrustedCertificate.objects.exists() and not AdminAction.objects.exists()
    fields = dict(re.findall(r'type="hidden" name="(\w+)" value="([^"]*)"', html))
    tampered = dict(fields, fingerprint="AA:BB")
    assert (
        "differs from the one you confirmed"
        in admin_client.post(f"{LIST}add/", tampered).content.decode()
    )
    assert not TrustedCertificate.objects.exists()
    confirmed = admin_client.post(f"{LIST}add/", fields)
    assert confirmed.status_code == 302
    row = TrustedCertificate.objects.get(region="us-east-1")
    assert row.replaced.startswith("built-in ")
    action = AdminAction.objects.get()
    assert action.action == "iid_cert.replace" and action.reason == "AWS rotated it"


def test_the_add_form_explains_what_is_wrong(admin_client, db):
    html = admin_client.post(
        f"{LIST}add/", {"region": "us-east-1", "pem_text": "nope", "reason": "x"}
    ).content.decode()
    assert "not a PEM certificate" in html
    html = admin_client.post(
        f"{LIST}add/", {"region": "mars", "pem_text": "x", "reason": "x"}
    ).content.decode()
    assert "Not an AWS region name" in html
    assert not TrustedCertificate.objects.exists()


def test_an_admin_removes_an_added_certificate_with_a_reason(admin_client, added):
    response = admin_client.post(f"{LIST}us-west-2/remove/", {"reason": "wrong file"})
    assert response.status_code == 302
    assert not TrustedCertificate.objects.filter(region="us-west-2").exists()
    assert AdminAction.objects.filter(action="iid_cert.remove", reason="wrong file").exists()


def test_a_certificate_expiring_soon_is_flagged_on_its_page_and_the_dashboard(auditor_client, db):
    add("us-west-2", make_cert(days=30))
    html = auditor_client.get(LIST).content.decode()
    assert 'data-testid="expiry-warning"' in html and "expires in 28 days" in html
    dashboard = auditor_client.get("/").content.decode()
    assert 'data-testid="certificate-warning"' in dashboard
    assert "us-west-2</span> expires on" in dashboard


def test_the_dashboard_has_no_certificate_banner_when_all_is_well(auditor_client, db):
    assert 'data-testid="certificate-warning"' not in auditor_client.get("/").content.decode()
