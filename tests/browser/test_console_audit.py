"""An auditor, in a real Chromium: looks at the dashboard's charts, filters the join history to
the refused attempts of one token, opens one and reads its reason, then downloads the filtered
CSV. Screenshots of the dashboard, the filtered history and the attempt are kept as artifacts."""

from __future__ import annotations

import csv
import random
import re
from datetime import datetime, timedelta
from typing import Any

import pytest
from django.contrib.auth.models import Group
from django.utils import timezone
from playwright.sync_api import Page, expect

from accounts.constants import AUDITORS_GROUP
from accounts.services import ensure_groups
from joins.constants import CHECKS, ERROR_OUTCOME
from joins.models import JoinAttempt
from tests.browser.conftest import DOWNLOADS, login, shot
from tests.console import make_token

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

PASSWORD = "an-auditor-browser-password"
TOKEN = "fleet-web"
TOKENS = {TOKEN: 5, "fleet-db": 3, "batch-workers": 2}  # relative traffic
ACCOUNT = "333333333333"

#: error code -> (the check that failed, what the agent was told, the auditor's reason)
REFUSALS: dict[str, tuple[str, str, str]] = {
    "no_matching_rule": (
        "allow_rule",
        "no allow rule of the token matches this instance",
        "account {account} in {region} matches none of 2 rules "
        "(rule #1: account 333333333333 in eu-west-1, us-west-2; rule #2: account 222222222222)",
    ),
    "token_invalid": (
        "token",
        "the token does not exist or has expired",
        "token '{token}' expired at 2026-01-01T00:00:00Z",
    ),
    "iid_expired": (
        "pending_time",
        "the identity document is too old to join with",
        "pendingTime {pending} is 14m3s old; the token allows 5m (aws_iid_ttl)",
    ),
    "instance_already_joined": (
        "not_joined",
        "this instance has already joined",
        "instance {instance} already joined as host {account}-{instance}; "
        "forget the host to let it join again",
    ),
    "aws_unavailable": (
        "instance",
        "AWS could not be reached; try again",
        "DescribeInstances in {region} timed out after 8.0 s",
    ),
}

#: What each check records when it passes.
PASSED = {
    "request": "the request is well formed",
    "token": "token '{token}' exists and is not expired",
    "join_method": "join method ec2",
    "roles": "roles Node allowed by the token",
    "document": "signed by the AWS certificate of {region}",
    "host_id": "host ID {account}-{instance} matches the document",
    "pending_time": "pendingTime {pending} is 41s old; the token allows 5m",
    "allow_rule": "rule #1 allows account {account} in {region}",
    "not_joined": "instance {instance} has not joined before",
    "instance": "instance {instance} is running",
    "issue": "TLS and SSH certificates issued",
}


def attempt(rnd: random.Random, when: datetime, token: str, code: str = "") -> JoinAttempt:
    """A join attempt as the join service records it, with its check trace and document."""
    instance = f"i-0{rnd.getrandbits(64):016x}"
    region = rnd.choice(["eu-west-1", "us-west-2"])
    account = "444444444444" if code == "no_matching_rule" else ACCOUNT
    pending = (when - timedelta(seconds=41)).strftime("%Y-%m-%dT%H:%M:%SZ")
    context = {
        "account": account,
        "region": region,
        "token": token,
        "instance": instance,
        "pending": pending,
    }
    if code:
        failed, message, reason = REFUSALS[code]
        ran = CHECKS[: CHECKS.index(failed) + 1]
        outcome, reason = ERROR_OUTCOME[code], reason.format(**context)
    else:
        failed, ran, outcome = "", CHECKS, "allowed"
        message, reason = "joined", "all checks passed"
    checks = [
        {
            "name": name,
            "ok": name != failed,
            "detail": reason if name == failed else PASSED[name].format(**context),
        }
        for name in ran
    ]
    signed = "host_id" in ran
    return JoinAttempt(
        time=when,
        token=token,
        join_method="ec2",
        remote_addr=f"10.20.{rnd.randrange(256)}.{rnd.randrange(1, 255)}",
        user_agent="joinadmin-agent/1.0",
        host_id=f"{account}-{instance}",
        account_id=account,
        region=region,
        instance_id=instance,
        roles=["Node"],
        outcome=outcome,
        error=code,
        message=message,
        reason=reason,
        checks=checks,
        duration_ms=round(rnd.uniform(20, 400), 1),
        pending_time=when - timedelta(seconds=41) if signed else None,
        document={
            "accountId": account,
            "instanceId": instance,
            "region": region,
            "pendingTime": pending,
            "instanceType": "m6i.large",
        }
        if signed
        else None,
    )


@pytest.fixture
def auditor_login(django_user_model) -> tuple[str, str]:  # type: ignore[no-untyped-def]
    ensure_groups()
    user = django_user_model.objects.create_user("dana-auditor", password=PASSWORD)
    user.groups.add(Group.objects.get(name=AUDITORS_GROUP))
    return "dana-auditor", PASSWORD


@pytest.fixture
def history() -> list[JoinAttempt]:
    """A day of joins on three tokens: mostly allowed, with refusals of every kind."""
    for name in TOKENS:
        make_token(
            name, allow=[{"aws_account": ACCOUNT, "aws_regions": ["eu-west-1", "us-west-2"]}]
        )
    rnd = random.Random(20261120)
    now = timezone.now()
    codes = list(REFUSALS)
    rows = []
    for _ in range(420):
        when = now - timedelta(minutes=1 + rnd.random() * (24 * 60 - 2))
        token = rnd.choices(list(TOKENS), weights=list(TOKENS.values()))[0]
        refused = rnd.random() < 0.2
        rows.append(attempt(rnd, when, token, rnd.choice(codes) if refused else ""))
    # The refusals of the token the auditor looks into, known to the test.
    for minutes, code in (
        (7, "no_matching_rule"),
        (95, "token_invalid"),
        (300, "iid_expired"),
        (420, "aws_unavailable"),  # an error on our side or AWS's: not in the denied filter
    ):
        rows.append(attempt(rnd, now - timedelta(minutes=minutes), TOKEN, code))
    rows.sort(key=lambda row: row.time)
    return JoinAttempt.objects.bulk_create(rows)


def test_an_auditor_traces_a_refused_join_and_exports_it(
    page: Page, live_server, auditor_login, history
):
    refused = list(JoinAttempt.objects.filter(token=TOKEN, outcome="denied").order_by("-id"))
    assert len(refused) >= 3
    assert JoinAttempt.objects.filter(token=TOKEN, outcome="error").exists()  # must not show

    login(page, live_server.url, *auditor_login)
    expect(page.locator("h1")).to_have_text("Dashboard")
    charts = page.locator("svg.chart[role=img]")
    expect(charts).to_have_count(3)
    expect(charts.nth(1)).to_have_attribute("aria-label", re.compile(r"^Top refusal reasons"))
    shot(page, "dashboard-charts")

    # The history, filtered with its own form to the refused attempts of one token.
    page.click("nav.mainnav >> text=Join history")
    expect(page.locator("h1")).to_have_text("Join history")
    page.click("details.filters > summary")
    page.fill("#filter-token", TOKEN)
    page.select_option("#filter-outcome", "denied")
    page.click("button:has-text('Apply filters')")
    page.wait_for_url(lambda url: "token=fleet-web" in url and "outcome=denied" in url)
    rows = page.locator("table.table tbody tr")
    expect(rows).to_have_count(len(refused))
    links = rows.locator("td:first-child a")
    shown = [int(href.rstrip("/").rsplit("/", 1)[1]) for href in _hrefs(links)]
    assert shown == [row.pk for row in refused]  # only those, newest first
    for text in rows.locator("td:nth-child(4)").all_inner_texts():
        assert text.strip() == TOKEN
    for text in rows.locator("td:nth-child(2)").all_inner_texts():
        assert text.strip().lower() == "denied"
    shot(page, "history-refused-fleet-web")

    # One attempt: its reason, for the auditor, and the check that failed.
    newest = refused[0]
    links.first.click()
    expect(page.locator("h1")).to_contain_text(f"Join attempt #{newest.pk}")
    reason_card = page.locator("section.card--highlight")
    expect(reason_card).to_contain_text("Reason (for auditors)")
    expect(reason_card).to_contain_text(newest.reason)
    expect(page.locator("li.check--fail")).to_contain_text(newest.reason)
    shot(page, "attempt-detail")

    # Back to the same filtered list, and its CSV.
    page.go_back()
    page.wait_for_url(lambda url: "token=fleet-web" in url)
    expect(rows).to_have_count(len(refused))
    with page.expect_download() as download_info:
        page.click("a:has-text('Export CSV')")
    download = download_info.value
    assert download.suggested_filename == "join-attempts_outcome-denied_token-fleet-web.csv"
    DOWNLOADS.mkdir(parents=True, exist_ok=True)
    target = DOWNLOADS / download.suggested_filename
    download.save_as(target)
    with target.open(newline="", encoding="utf-8") as handle:
        exported = list(csv.DictReader(handle))
    assert [int(row["id"]) for row in exported] == [row.pk for row in refused]
    assert {(row["token"], row["outcome"]) for row in exported} == {(TOKEN, "denied")}
    assert exported[0]["reason"] == newest.reason


def _hrefs(links: Any) -> list[str]:
    return [links.nth(i).get_attribute("href") or "" for i in range(links.count())]
