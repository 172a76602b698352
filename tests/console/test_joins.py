"""Join history: filters kept in the URL, keyset pages, the attempt detail and the exports."""

from __future__ import annotations

import csv
import io
import json
import re
from datetime import timedelta
from html import unescape

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from tests.console import ACCOUNT, NOW, OTHER_ACCOUNT, make_attempt, make_host, make_token

pytestmark = pytest.mark.django_db


def attempt_ids(html: str) -> list[int]:
    return [int(pk) for pk in re.findall(r'href="/joins/(\d+)/"', html)]


def test_the_empty_history_explains_where_attempts_come_from(auditor_client: Client):
    html = auditor_client.get("/joins/").content.decode()
    assert "No join attempts yet" in html and "/api/v1/join" in html


def test_the_history_lists_newest_first_with_labels(auditor_client: Client):
    first = make_attempt(outcome="allowed", error="", time=NOW - timedelta(minutes=5))
    second = make_attempt(error="iid_expired", remote_addr="198.51.100.9", duration_ms=321)
    html = auditor_client.get("/joins/").content.decode()
    assert attempt_ids(html) == [second.pk, first.pk]
    assert "Document too old" in html and 'title="iid_expired"' in html
    assert "badge--allowed" in html and "badge--denied" in html
    assert "198.51.100.9" in html and "321 ms" in html


def test_filters_select_rows_and_stay_in_the_form(auditor_client: Client):
    denied = make_attempt(token="web", outcome="denied")
    make_attempt(token="web", outcome="allowed", error="")
    make_attempt(token="db", outcome="denied")
    make_attempt(token="web", outcome="denied", account_id=OTHER_ACCOUNT)
    html = auditor_client.get(
        f"/joins/?outcome=denied&token=web&account={ACCOUNT}"
    ).content.decode()
    assert attempt_ids(html) == [denied.pk]
    assert 'name="token" value="web"' in html
    assert '<option value="denied" selected>' in html
    assert f'name="account" value="{ACCOUNT}"' in html
    # Exports carry the same filter.
    assert f'href="/joins/export.csv?token=web&amp;outcome=denied&amp;account={ACCOUNT}"' in html


def test_time_and_prefix_filters(auditor_client: Client):
    old = make_attempt(time=NOW - timedelta(days=2), instance_id="i-0aaa")
    new = make_attempt(time=NOW, instance_id="i-0bbb")
    html = auditor_client.get("/joins/?since=2026-11-19T12:00:00").content.decode()
    assert attempt_ids(html) == [new.pk]
    assert 'name="since" value="2026-11-19T12:00:00"' in html
    html = auditor_client.get("/joins/?until=2026-11-19T12:00:00Z").content.decode()
    assert attempt_ids(html) == [old.pk]
    html = auditor_client.get("/joins/?instance_id=i-0a*").content.decode()
    assert attempt_ids(html) == [old.pk]


def test_an_invalid_filter_is_reported_not_ignored(auditor_client: Client):
    make_attempt()
    html = auditor_client.get("/joins/?since=yesterday&outcome=maybe").content.decode()
    assert "Some filters are not valid" in html
    assert 'id="filter-since-error"' in html and 'id="filter-outcome-error"' in html
    assert attempt_ids(html) == []


def test_pages_go_older_and_newer_by_id_keeping_filters(
    auditor_client: Client, django_assert_max_num_queries
):
    rows = [make_attempt(token="web") for _ in range(120)]
    make_attempt(token="other")
    newest_first = [row.pk for row in reversed(rows)]

    with django_assert_max_num_queries(8):
        html = auditor_client.get("/joins/?token=web").content.decode()
    assert attempt_ids(html) == newest_first[:50]
    older = re.search(r'href="(\?token=web&amp;before=\d+)" rel="next"', html)
    assert older and "Newer</span>" in html and "Newest" not in html

    html = auditor_client.get("/joins/" + older.group(1).replace("&amp;", "&")).content.decode()
    assert attempt_ids(html) == newest_first[50:100]
    newer = re.search(r'href="(\?token=web&amp;after=\d+)" rel="prev"', html)
    assert newer and 'href="?token=web">Newest' in html

    with django_assert_max_num_queries(8):
        html = auditor_client.get("/joins/" + newer.group(1).replace("&amp;", "&")).content.decode()
    assert attempt_ids(html) == newest_first[:50]

    last = auditor_client.get(f"/joins/?token=web&before={newest_first[99]}").content.decode()
    assert attempt_ids(last) == newest_first[100:]
    assert "Older</span>" in last


@pytest.mark.parametrize("cursor", ["before=abc", "after=-5", f"before={10**30}", "after=0"])
def test_a_garbled_cursor_shows_the_newest_page(auditor_client: Client, cursor: str):
    newest = make_attempt()
    response = auditor_client.get(f"/joins/?{cursor}")
    assert response.status_code == 200
    assert attempt_ids(response.content.decode()) == [newest.pk]


def test_the_history_never_counts_the_table(auditor_client: Client):
    for _ in range(5):
        make_attempt()
    with CaptureQueriesContext(connection) as queries:
        auditor_client.get("/joins/?outcome=denied")
    assert not any("COUNT(" in q["sql"].upper() for q in queries.captured_queries)


def test_the_detail_shows_reason_message_and_the_check_trace(auditor_client: Client):
    make_token("ec2-token")
    make_host()
    attempt = make_attempt(
        token_snapshot={
            "kind": "token",
            "metadata": {"name": "ec2-token"},
            "spec": {"allow": [{"aws_account": ACCOUNT}]},
        },
        document={
            "accountId": ACCOUNT,
            "instanceId": "i-0123456789abcdef0",
            "region": "us-west-2",
            "pendingTime": "2026-11-20T11:58:00Z",
        },
        user_agent="joinadmin-agent/1.0",
    )
    html = auditor_client.get(f"/joins/{attempt.pk}/").content.decode()
    assert "no allow rule matches this instance" in html  # told the agent
    assert f"account {ACCOUNT} in us-west-2 matches none of 1 rule" in html  # for auditors
    assert html.index("Request well formed") < html.index("Allow rule matches")
    assert "check--pass" in html and "check--fail" in html and "check--skipped" in html
    assert "Failed:" in html and "no rule allows us-west-2" in html
    assert "Credentials issued" in html  # never reached
    assert "pendingTime" in html and "2026-11-20T11:58:00Z" in html
    assert "name: ec2-token" in html and f"aws_account: '{ACCOUNT}'" in unescape(html)
    assert f'href="/hosts/{ACCOUNT}-i-0123456789abcdef0/"' in html
    assert 'href="/joins/?instance_id=i-0123456789abcdef0"' in html
    assert 'href="/tokens/ec2-token/"' in html
    assert "joinadmin-agent/1.0" in html


def test_a_malformed_attempt_detail_has_no_document_or_snapshot(auditor_client: Client):
    attempt = make_attempt(
        token="",
        host_id="",
        account_id="",
        region="",
        instance_id="",
        outcome="denied",
        error="invalid_request",
        checks=[{"name": "request", "ok": False, "detail": "not JSON"}],
    )
    html = auditor_client.get(f"/joins/{attempt.pk}/").content.decode()
    assert "No verified document" in html and "No snapshot" in html
    assert "Invalid request" in html


# --- exports -------------------------------------------------------------------------------


def test_the_csv_export_streams_the_filtered_rows(auditor_client: Client):
    keep = make_attempt(token="x", outcome="denied", node_name="=cmd|' /C calc'!A0")
    make_attempt(token="x", outcome="allowed", error="")
    make_attempt(token="y", outcome="denied")
    response = auditor_client.get("/joins/export.csv?outcome=denied&token=x")
    assert response.status_code == 200 and response.streaming
    assert response["Content-Type"] == "text/csv; charset=utf-8"
    assert (
        response["Content-Disposition"]
        == 'attachment; filename="join-attempts_outcome-denied_token-x.csv"'
    )
    rows = list(csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode())))
    assert [int(row["id"]) for row in rows] == [keep.pk]
    row = rows[0]
    assert row["token"] == "x" and row["error"] == "no_matching_rule" and row["roles"] == "Node"
    assert json.loads(row["checks"])[2]["ok"] is False
    # A spreadsheet must not run a node name as a formula.
    assert row["node_name"].startswith("'=")


def test_the_jsonl_export_has_one_api_shaped_object_per_line(auditor_client: Client):
    first = make_attempt(region="eu-west-1")
    second = make_attempt(region="eu-west-1", outcome="allowed", error="")
    make_attempt(region="us-east-1")
    response = auditor_client.get("/joins/export.jsonl?region=eu-west-1")
    assert response.streaming
    assert response["Content-Type"].startswith("application/x-ndjson")
    assert 'filename="join-attempts_region-eu-west-1.jsonl"' in response["Content-Disposition"]
    lines = b"".join(response.streaming_content).decode().splitlines()
    objects = [json.loads(line) for line in lines]
    assert [o["id"] for o in objects] == [second.pk, first.pk]
    for key in (
        "time",
        "token",
        "join_method",
        "remote_addr",
        "requested_host_id",
        "host_id",
        "account_id",
        "region",
        "instance_id",
        "pending_time",
        "roles",
        "outcome",
        "error",
        "message",
        "checks",
        "duration_ms",
    ):
        assert key in objects[0]
    assert objects[1]["checks"][0]["name"] == "request"


def test_an_unfiltered_export_is_named_plainly(auditor_client: Client):
    response = auditor_client.get("/joins/export.csv")
    assert 'filename="join-attempts.csv"' in response["Content-Disposition"]
    assert b"".join(response.streaming_content).decode().startswith("id,time,token,")


def test_an_export_with_an_invalid_filter_is_a_400(auditor_client: Client):
    response = auditor_client.get("/joins/export.jsonl?since=nope")
    assert response.status_code == 400 and b"since" in response.content


def test_a_time_filter_is_written_safely_into_the_file_name(auditor_client: Client):
    response = auditor_client.get("/joins/export.csv?since=2026-11-19T12:00:00Z")
    assert (
        'filename="join-attempts_since-2026-11-19T12-00-00Z.csv"' in response["Content-Disposition"]
    )
