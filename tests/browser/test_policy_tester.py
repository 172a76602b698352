"""An auditor, in a real Chromium, uses the policy tester: pastes a running instance's document
and sees it would join (with AWS asked through moto), pastes a stopped instance's document and
sees why it would be refused, then re-tests a recorded join attempt from its page. Nothing is
registered or recorded along the way. Screenshots are kept as artifacts."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from django.contrib.auth.models import Group
from playwright.sync_api import Page, expect

from accounts.constants import AUDITORS_GROUP
from accounts.services import ensure_groups
from audit.models import AdminAction
from joins.iid import verify_document
from joins.models import Host, JoinAttempt
from joins.trust import certificate_store
from tests.browser.conftest import login, shot
from tests.joins import conftest as join_fixtures
from tests.joins.conftest import ACCOUNT, make_token

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

# The join tests' world (moto's EC2 in-process, a trusted test signer), used here as it is.
aws = join_fixtures.aws
iid_signer = join_fixtures.iid_signer
world = join_fixtures.world

PASSWORD = "a-policy-tester-browser-password"


@pytest.fixture
def auditor_login(django_user_model) -> tuple[str, str]:  # type: ignore[no-untyped-def]
    ensure_groups()
    user = django_user_model.objects.create_user("erin-auditor", password=PASSWORD)
    user.groups.add(Group.objects.get(name=AUDITORS_GROUP))
    return "erin-auditor", PASSWORD


def test_an_auditor_tests_documents_and_a_recorded_attempt_without_registering_anything(
    page: Page, live_server, auditor_login, world
):
    make_token(
        "fleet-web",
        allow=[
            {"aws_account": "999999999999", "aws_regions": ["us-west-2"]},
            {"aws_account": ACCOUNT, "aws_regions": ["us-west-2", "eu-west-1"]},
        ],
    )
    now = datetime.now(UTC).replace(microsecond=0)
    running = world.document(world.launch(), pending_time=now)
    stopped_instance = world.launch(state="stopped")
    stopped = world.document(stopped_instance, pending_time=now)
    recorded = verify_document(
        world.document(world.launch(), pending_time=now), certificate_store()
    )
    attempt = JoinAttempt.objects.create(
        time=now,
        token="fleet-web",
        outcome="denied",
        error="aws_unavailable",
        host_id=recorded.host_id,
        account_id=ACCOUNT,
        region="us-west-2",
        instance_id=recorded.instance_id,
        document=recorded.raw,
        remote_addr="10.0.0.12",
        checks=[{"name": "instance", "ok": False, "detail": "DescribeInstances timed out"}],
    )
    counts = (Host.objects.count(), JoinAttempt.objects.count(), AdminAction.objects.count())

    login(page, live_server.url, *auditor_login)
    page.click("nav.mainnav >> text=Tools")
    expect(page.locator("h1")).to_have_text("Policy tester")

    # A running instance: every check passes, the second rule is the one a join uses.
    page.select_option("#id_token", "fleet-web")
    page.fill("#id_document", running)
    page.check("#id_ask_aws")
    page.click("button:has-text('Test')")
    verdict = page.locator("[data-testid=verdict]")
    expect(verdict).to_contain_text("A join would be allowed: every check passes.")
    expect(page.locator("[data-check=instance]")).to_have_attribute("data-state", "pass")
    expect(page.locator("tr[data-rule='1']")).to_contain_text("used by a join")
    expect(page.locator("tr[data-rule='0']")).to_contain_text("does not match")
    shot(page, "policy-tester-allowed")

    # A stopped instance: refused, and the page says which check and why.
    page.fill("#id_document", stopped)
    page.click("button:has-text('Test')")
    expect(verdict).to_contain_text("Instance not running (instance_not_running)")
    instance_check = page.locator("[data-check=instance]")
    expect(instance_check).to_have_attribute("data-state", "fail")
    expect(instance_check).to_contain_text(f"{stopped_instance.instance_id} is stopped")
    expect(page.locator("[data-check=allow_rule]")).to_have_attribute("data-state", "pass")
    shot(page, "policy-tester-refused")

    # A recorded attempt, from its own page: the form comes pre-filled.
    page.goto(f"{live_server.url}/joins/{attempt.pk}/")
    page.click("text=Test in the policy tester")
    expect(page.locator("#id_attempt")).to_have_value(str(attempt.pk))
    expect(page.locator("#id_token")).to_have_value("fleet-web")
    page.check("#id_ask_aws")
    page.click("button:has-text('Test')")
    expect(verdict).to_contain_text(f"join attempt #{attempt.pk}")
    expect(verdict).to_contain_text("A join would be allowed")
    expect(page.locator("[data-check=document]")).to_contain_text(
        f"verified when attempt #{attempt.pk} was received"
    )
    shot(page, "policy-tester-attempt")

    after = (Host.objects.count(), JoinAttempt.objects.count(), AdminAction.objects.count())
    assert after == counts
