"""The dashboard: counts and the latest refusals."""

from __future__ import annotations

from datetime import timedelta

import pytest
import time_machine
from django.test import Client

from tests.console import NOW, make_attempt, make_host, make_token

pytestmark = pytest.mark.django_db


def stat(html: str, label: str) -> str:
    before = html[: html.index(label)]
    return before[before.rindex('stat__value">') + len('stat__value">') :].split("<", 1)[0]


def test_the_dashboard_counts_tokens_hosts_and_recent_attempts(
    auditor_client: Client, django_assert_max_num_queries
):
    with time_machine.travel(NOW, tick=False):
        make_token("live")
        make_token("gone", metadata={"expires": "2026-01-01T00:00:00Z"})
        make_host()
        make_attempt(outcome="allowed", error="")
        make_attempt(outcome="denied", reason="token 'x' expired at 2026-01-01")
        make_attempt(outcome="error", error="aws_unavailable", reason="DescribeInstances timed out")
        make_attempt(outcome="denied", time=NOW - timedelta(days=3), reason="old refusal")
        with django_assert_max_num_queries(14):
            html = auditor_client.get("/").content.decode()
    assert stat(html, "Active tokens") == "1"
    assert stat(html, "Expired tokens") == "1"
    assert stat(html, "Registered hosts") == "1"
    assert stat(html, "Joins allowed, 24 h") == "1"
    assert stat(html, "Joins denied, 24 h") == "1"
    assert stat(html, "Join errors, 24 h") == "1"
    # The latest refusals, newest first, with the auditor's reason.
    assert html.index("DescribeInstances timed out") < html.index("expired at 2026-01-01")
    assert "old refusal" in html
    assert "AWS unavailable" in html


def test_the_dashboard_without_refusals_says_so(auditor_client: Client):
    make_attempt(outcome="allowed", error="")
    assert "No refused attempts" in auditor_client.get("/").content.decode()
