"""The dashboard's charts (attempts over time by outcome, top refusal reasons, top tokens), the
aggregate queries behind them, and the audit integrity card."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from html import unescape
from urllib.parse import parse_qs, urlsplit

import pytest
import time_machine
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from audit.models import SealVerification
from audit.sealing import seal_pending, verify_seals
from joins import stats
from joins.models import JoinAttempt
from tests.console import NOW, make_attempt

pytestmark = pytest.mark.django_db

#: session, user, groups; 3 counts; hourly counts; 2 latest refusals; 2 top-N charts; the latest
#: seal of each of the 2 streams and the latest verification.
DASHBOARD_QUERIES = 14


@pytest.fixture(autouse=True)
def frozen() -> Iterator[None]:
    with time_machine.travel(NOW, tick=False):
        yield


def at(**delta: float) -> datetime:
    return NOW - timedelta(**delta)


def svgs(html: str) -> list[str]:
    return re.findall(r"<svg .*?</svg>", html, flags=re.S)


def aria_labels(html: str) -> list[str]:
    return [unescape(label) for label in re.findall(r'<svg [^>]*aria-label="([^"]*)"', html)]


def attempt_ids(html: str) -> list[int]:
    return [int(pk) for pk in re.findall(r'href="/joins/(\d+)/"', html)]


# --- The aggregate queries ------------------------------------------------------------------


def test_the_24_hour_window_is_24_whole_hours_ending_with_the_current_one():
    win = stats.window(stats.RANGES["24h"], NOW + timedelta(minutes=30))
    assert len(win.starts) == 24
    assert win.since == datetime(2026, 11, 19, 13, tzinfo=UTC)
    assert win.starts[-1] == NOW and win.until == NOW + timedelta(hours=1)


def test_the_timeline_counts_attempts_per_hour_by_outcome():
    make_attempt(time=at(seconds=1), outcome="allowed", error="")  # 11:59:59
    make_attempt(time=at(minutes=30))  # 11:30, denied
    make_attempt(time=at(minutes=45), outcome="error", error="aws_unavailable")
    make_attempt(time=NOW)  # the current hour
    make_attempt(time=at(hours=23))  # 13:00 yesterday: the first column
    make_attempt(time=at(hours=23, seconds=1))  # just before the window
    timeline = stats.attempts_timeline(stats.window(stats.RANGES["24h"], NOW))
    assert timeline.counts["allowed"][-2:] == [1, 0]
    assert timeline.counts["denied"][-2:] == [1, 1]
    assert timeline.counts["error"][-2:] == [1, 0]
    assert timeline.counts["denied"][0] == 1
    assert timeline.totals == {"allowed": 1, "denied": 3, "error": 1}


def test_wider_ranges_sum_whole_hours_into_their_columns():
    make_attempt(time=datetime(2026, 11, 20, 6, 30, tzinfo=UTC))
    make_attempt(time=datetime(2026, 11, 20, 11, 59, tzinfo=UTC))
    make_attempt(time=datetime(2026, 11, 13, 17, 59, tzinfo=UTC))  # before the week's columns
    make_attempt(time=datetime(2026, 11, 13, 18, tzinfo=UTC))  # the week's first column
    week = stats.attempts_timeline(stats.window(stats.RANGES["7d"], NOW))
    assert len(week.window.starts) == 28 and week.window.step == timedelta(hours=6)
    assert week.window.since == datetime(2026, 11, 13, 18, tzinfo=UTC)
    assert week.window.starts[-1] == NOW  # 12:00-18:00 holds now
    assert week.counts["denied"][-2] == 2  # 06:00-12:00
    assert week.counts["denied"][0] == 1 and week.total == 3
    month = stats.attempts_timeline(stats.window(stats.RANGES["30d"], NOW))
    assert month.window.starts[-1] == datetime(2026, 11, 20, tzinfo=UTC)
    assert month.counts["denied"][-1] == 2 and month.total == 4


def test_top_refusal_reasons_are_error_codes_of_the_range_most_frequent_first():
    for _ in range(3):
        make_attempt(error="token_invalid", time=at(hours=1))
    for _ in range(2):
        make_attempt(error="iid_expired", time=at(hours=2))
    make_attempt(outcome="error", error="aws_unavailable", time=at(hours=3))
    make_attempt(outcome="allowed", error="", time=at(hours=1))
    make_attempt(error="no_matching_rule", time=at(days=2))  # outside 24 hours
    win = stats.window(stats.RANGES["24h"], NOW)
    assert stats.top_refusals(win) == [
        ("token_invalid", 3),
        ("iid_expired", 2),
        ("aws_unavailable", 1),
    ]
    assert stats.top_refusals(win, limit=1) == [("token_invalid", 3)]


def test_top_tokens_are_split_by_outcome():
    for _ in range(3):
        make_attempt(token="web", outcome="allowed", error="", time=at(hours=1))
    make_attempt(token="web", time=at(hours=1))
    make_attempt(token="db", outcome="error", error="aws_unavailable", time=at(hours=1))
    make_attempt(token="old", time=at(days=3))
    tops = stats.top_tokens(stats.window(stats.RANGES["24h"], NOW))
    assert [(t.token, t.counts, t.total) for t in tops] == [
        ("web", {"allowed": 3, "denied": 1, "error": 0}, 4),
        ("db", {"allowed": 0, "denied": 0, "error": 1}, 1),
    ]


@pytest.mark.parametrize(
    ("value", "key"), [("7d", "7d"), ("30d", "30d"), ("", "24h"), (None, "24h"), ("1y", "24h")]
)
def test_an_unknown_range_is_the_default_one(value, key):
    assert stats.chosen_range(value).key == key


# --- The dashboard --------------------------------------------------------------------------


def test_the_dashboard_draws_three_charts_of_the_last_24_hours(auditor_client: Client):
    make_attempt(token="web", outcome="allowed", error="", time=at(hours=2))
    make_attempt(token="web", error="token_invalid", time=at(hours=1))
    make_attempt(token="db", error="token_invalid", time=at(minutes=5))
    make_attempt(token="db", outcome="error", error="aws_unavailable", time=at(minutes=1))
    html = auditor_client.get("/").content.decode()
    assert len(svgs(html)) == 3
    timeline, reasons, tokens = aria_labels(html)
    assert timeline == (
        "Join attempts per hour over the last 24 hours, stacked by outcome: "
        "1 allowed, 2 denied, 1 error."
    )
    assert reasons == (
        "Top refusal reasons, last 24 hours: Token missing or expired 2; AWS unavailable 1."
    )
    assert tokens == "Top tokens by join attempts, last 24 hours: db 2; web 2."
    assert '<a href="?range=24h" aria-current="true">24 hours</a>' in html
    assert "2026-11-19 13:00</time> to" in html and "4 attempts" in html
    # The denied bars are red, the AWS failure amber (the stylesheet's classes).
    assert "chart__part--denied" in svgs(html)[1] and "chart__part--error" in svgs(html)[1]


def test_a_chart_number_links_to_the_same_rows_in_the_history(auditor_client: Client):
    expected = {make_attempt(error="token_invalid", time=at(hours=h)).pk for h in (1, 5)}
    make_attempt(error="iid_expired", time=at(hours=1))
    make_attempt(error="token_invalid", time=at(days=2))  # outside the chart
    html = auditor_client.get("/").content.decode()
    link = unescape(re.search(r'<a href="(/joins/\?error=token_invalid[^"]*)"', html).group(1))
    assert parse_qs(urlsplit(link).query) == {
        "error": ["token_invalid"],
        "since": ["2026-11-19T13:00:00"],
        "until": ["2026-11-20T13:00:00"],
    }
    assert set(attempt_ids(auditor_client.get(link).content.decode())) == expected


def test_the_24_hour_figures_add_up_to_the_24_hour_chart(auditor_client: Client):
    for hours in (0, 1, 5, 23):
        make_attempt(time=at(hours=hours))
    make_attempt(time=at(hours=30))
    html = auditor_client.get("/").content.decode()
    assert re.search(r'stat__value">4</span>\s*<span class="stat__label">Joins denied', html)
    assert "4 denied" in aria_labels(html)[0]


def test_the_range_is_chosen_in_the_url(auditor_client: Client):
    make_attempt(time=at(hours=1))
    make_attempt(time=at(days=3), token="older")
    week = auditor_client.get("/?range=7d").content.decode()
    assert '<a href="?range=7d" aria-current="true">7 days</a>' in week
    assert "Join attempts, last 7 days" in week and "Attempts per 6 hours" in week
    assert "2 denied" in aria_labels(week)[0] and "older" in aria_labels(week)[2]
    day = auditor_client.get("/?range=forever").content.decode()
    assert '<a href="?range=24h" aria-current="true">' in day
    assert "1 denied" in aria_labels(day)[0] and "older" not in aria_labels(day)[2]


def test_a_range_without_attempts_says_so_instead_of_drawing_empty_charts(auditor_client: Client):
    make_attempt(time=at(days=3))
    html = auditor_client.get("/").content.decode()
    assert svgs(html) == []
    assert "No join attempts in the last 24 hours" in html
    assert "A longer range may show older attempts." in html
    assert len(svgs(auditor_client.get("/?range=7d").content.decode())) == 3


def test_a_range_without_refusals_says_so_in_the_reasons_chart(auditor_client: Client):
    make_attempt(outcome="allowed", error="", time=at(hours=1))
    html = auditor_client.get("/").content.decode()
    assert len(svgs(html)) == 2
    assert "No attempt was refused in this range." in html


def test_token_names_from_the_network_are_escaped_in_the_charts(auditor_client: Client):
    make_attempt(token='<img src=x onerror="alert(1)">', time=at(hours=1))
    html = auditor_client.get("/").content.decode()
    assert "<img src=x" not in html
    assert "&lt;img src=x onerror=&quot;alert(1)&quot;&gt;" in svgs(html)[2]
    assert ' style="' not in "".join(svgs(html))


@pytest.mark.parametrize("chosen", ["24h", "7d", "30d"])
def test_the_dashboard_query_count_does_not_grow_with_the_history(
    auditor_client: Client, django_assert_max_num_queries, chosen: str
):
    JoinAttempt.objects.bulk_create(
        JoinAttempt(
            time=at(hours=i % 700),
            token=f"token-{i % 25}",
            outcome="allowed" if i % 3 else "denied",
            error="" if i % 3 else ("token_invalid", "iid_expired", "role_not_allowed")[i % 9 // 3],
            reason="r",
        )
        for i in range(600)
    )
    with django_assert_max_num_queries(DASHBOARD_QUERIES):
        response = auditor_client.get(f"/?range={chosen}")
    assert response.status_code == 200 and len(svgs(response.content.decode())) == 3


def test_every_history_query_of_the_dashboard_is_bounded(auditor_client: Client):
    make_attempt(time=at(hours=1))
    with CaptureQueriesContext(connection) as queries:
        auditor_client.get("/?range=30d")
    history = [q["sql"] for q in queries.captured_queries if "joins_joinattempt" in q["sql"]]
    assert len(history) == 5
    for sql in history:
        bounded_by_time = '"joins_joinattempt"."time" >=' in sql and '"time" <' in sql
        assert bounded_by_time or "LIMIT" in sql, sql
        assert "COUNT(*)" not in sql.upper(), sql


@pytest.mark.parametrize(("persona", "status"), [("plain_client", 403), ("client", 302)])
def test_the_charts_are_for_console_users_only(request, persona: str, status: int):
    assert request.getfixturevalue(persona).get("/?range=7d").status_code == status


# --- Audit integrity ------------------------------------------------------------------------


def integrity_card(html: str) -> str:
    start = html.index('id="integrity-title"')
    return re.sub(r"\s+", " ", html[start : html.index("</section>", start)])


def integrity_card_block(client: Client) -> str:
    """The opening tag of the card, where its danger modifier is."""
    html = client.get("/").content.decode()
    return html[html.rindex("<div", 0, html.index('id="integrity-title"')) :][:200]


def test_the_integrity_card_says_when_nothing_was_ever_sealed(auditor_client: Client):
    card = integrity_card(auditor_client.get("/").content.decode())
    assert "Never sealed — run <code>manage.py audit seal</code>" in card


def test_the_integrity_card_shows_the_last_seal_and_a_passing_verify(auditor_client: Client):
    first = make_attempt(time=at(hours=2))
    last = make_attempt(time=at(hours=1))
    seal_pending(streams=["joinattempt"])
    verify_seals()
    card = integrity_card(auditor_client.get("/").content.decode())
    assert "Last seal, join attempts</dt>" in card and "2026-11-20 12:00:00 UTC" in card
    # A first seal covers its whole id interval from 1, gaps included (ids of earlier tests
    # are gaps on PostgreSQL, whose sequences do not roll back).
    shown = re.search(r'rows <span class="mono">#(\d+)\N{EN DASH}#(\d+)</span>', card)
    assert shown is not None
    assert int(shown.group(1)) <= first.pk and int(shown.group(2)) == last.pk
    assert "Last seal, admin actions" not in card  # nothing to seal there yet
    assert "(2 rows, 2026-11-20 10:00 to 2026-11-20 11:00 UTC)" in card
    assert '<span class="badge badge--ok">ok</span>' in card
    assert "card--danger" not in integrity_card_block(auditor_client)


def test_the_integrity_card_shows_a_failed_verify_with_its_problem_count(auditor_client: Client):
    tampered = make_attempt(time=at(hours=2), reason="the real reason")
    make_attempt(time=at(hours=1))
    seal_pending(streams=["joinattempt"])
    JoinAttempt.objects.filter(pk=tampered.pk).update(reason="a rewritten reason")
    report = verify_seals()
    assert report.problems
    card = integrity_card(auditor_client.get("/").content.decode())
    count = len(report.problems)
    assert '<span class="badge badge--failed">failed</span>' in card
    assert f"{count} problem{'s' if count > 1 else ''} found" in card
    assert "card--danger" in integrity_card_block(auditor_client)


def test_a_verify_record_not_signed_by_this_server_is_not_shown_as_ok(auditor_client: Client):
    SealVerification.objects.create(
        started_at=NOW, finished_at=NOW, ok=True, public_key="forged", signature="forged"
    )
    card = integrity_card(auditor_client.get("/").content.decode())
    assert "badge--ok" not in card and "untrusted" in card
    assert "card--danger" in integrity_card_block(auditor_client)
    assert "Never sealed" in card
