"""An admin, in a real Chromium, replaces the built-in AWS certificate of a region with an
uploaded file: sees the fingerprints before and after on the confirmation page, confirms, finds
the certificate in use with its expiry warning, and the warning on the dashboard. Screenshots of
the list, the confirmation and the dashboard banner are kept as artifacts."""

from __future__ import annotations

from pathlib import Path

import pytest
from django.contrib.auth.models import Group
from playwright.sync_api import Page, expect

from accounts.constants import ADMINS_GROUP
from accounts.services import ensure_groups
from audit.models import AdminAction
from joins import trust
from joins.cert_inspect import describe, pem_of
from joins.models import TrustedCertificate
from tests.browser.conftest import login, shot
from tests.joins.test_trusted_certs import make_cert

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

PASSWORD = "an-admin-certificates-browser-password"


@pytest.fixture
def admin_login(django_user_model) -> tuple[str, str]:  # type: ignore[no-untyped-def]
    ensure_groups()
    user = django_user_model.objects.create_user("frank-admin", password=PASSWORD)
    user.groups.add(Group.objects.get(name=ADMINS_GROUP))
    trust.reset()
    yield "frank-admin", PASSWORD
    trust.reset()


def test_an_admin_replaces_a_built_in_certificate_after_confirming_the_fingerprints(
    page: Page, live_server, admin_login, tmp_path: Path
):
    new = make_cert(name="Amazon Web Services LLC (rotated)", days=60)
    upload = tmp_path / "us-east-1.pem"
    upload.write_text(pem_of(new))
    fingerprint = describe(new).fingerprint

    login(page, live_server.url, *admin_login)
    page.click("nav.mainnav >> text=Tools")
    page.click(".tabs >> text=Trusted AWS certificates")
    expect(page.locator("h1")).to_have_text("Trusted AWS certificates")
    expect(page.locator("tr[data-region='us-east-1']")).to_contain_text("Built in")
    shot(page, "trusted-certificates-list")

    page.click("text=Add or replace a certificate")
    page.fill("#id_region", "us-east-1")
    page.set_input_files("#id_pem_file", str(upload))
    page.fill("#id_reason", "AWS rotated the us-east-1 certificate")
    page.click("button:has-text('Continue')")
    expect(page.locator("h1")).to_contain_text("Replace the certificate for us-east-1?")
    expect(page.locator("[data-testid=after-fingerprint]")).to_have_text(fingerprint)
    expect(page.locator("[data-testid=before-fingerprint]")).not_to_have_text(fingerprint)
    assert not TrustedCertificate.objects.exists()
    shot(page, "trusted-certificates-confirm")

    page.click("button:has-text('Replace the certificate')")
    expect(page.locator(".message--success")).to_contain_text("was replaced")
    expect(page.locator(".card--highlight h2")).to_contain_text("Added in the console")
    expect(page.locator(".card--highlight")).to_contain_text(fingerprint)
    assert TrustedCertificate.objects.get().region == "us-east-1"
    action = AdminAction.objects.get()
    assert action.action == "iid_cert.replace" and action.after["fingerprint_sha256"] == fingerprint

    page.click("nav.mainnav >> text=Dashboard")
    banner = page.locator("[data-testid=certificate-warning]")
    expect(banner).to_contain_text("us-east-1")
    shot(page, "trusted-certificates-dashboard-warning")
