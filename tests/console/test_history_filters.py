"""The join history's filter form, one filter at a time: every filter of the issue is in the
form, selects the right rows, is kept in the URL, and reaches the export; host and instance IDs
match as "starts with" without the API's trailing `*`."""

from __future__ import annotations

import csv
import io
import re
from datetime import timedelta

import pytest
from django.test import Client

from joins.views import FILTER_NAMES
from tests.console import ACCOUNT, NOW, OTHER_ACCOUNT, make_attempt

pytestmark = pytest.mark.django_db

HOST = f"{ACCOUNT}-i-0abc1234def567890"
OTHER_HOST = f"{ACCOUNT}-i-0fff0000aaaa11112"


def attempt_ids(html: str) -> list[int]:
    return [int(pk) for pk in re.findall(r'href="/joins/(\d+)/"', html)]


def exported_ids(client: Client, query: str) -> list[int]:
    response = client.get(f"/joins/export.csv?{query}")
    assert response.status_code == 200
    text = b"".join(response.streaming_content).decode()
    return [int(row["id"]) for row in csv.DictReader(io.StringIO(text))]


def test_the_form_has_an_input_for_every_filter_of_the_history(auditor_client: Client):
    html = auditor_client.get("/joins/").content.decode()
    expected = {
        "token": "text",
        "outcome": "select",
        "error": "select",
        "account": "text",
        "region": "text",
        "host_id": "text",
        "instance_id": "text",
        "remote_addr": "text",
        "since": "datetime-local",
        "until": "datetime-local",
    }
    assert set(FILTER_NAMES) == set(expected)
    for name, kind in expected.items():
        if kind == "select":
            assert f'<select id="filter-{name}" name="{name}"' in html, name
        else:
            assert re.search(
                rf'<input id="filter-{name}" name="{name}" value="" type="{kind}"', html
            )
    assert '<form method="get" action="/joins/"' in html  # filters land in the URL
    assert "Host ID starts with" in html and "Instance ID starts with" in html


@pytest.mark.parametrize(
    ("name", "value", "column", "other"),
    [
        ("token", "web", "token", "db"),
        ("account", OTHER_ACCOUNT, "account_id", ACCOUNT),
        ("region", "eu-west-1", "region", "us-west-2"),
        ("remote_addr", "198.51.100.9", "remote_addr", "203.0.113.7"),
        ("outcome", "error", "outcome", "denied"),
        ("error", "iid_expired", "error", "no_matching_rule"),
    ],
)
def test_each_filter_selects_its_rows_keeps_its_value_and_reaches_the_export(
    auditor_client: Client, name: str, value: str, column: str, other: str
):
    wanted = make_attempt(**{column: value})
    make_attempt(**{column: other})
    html = auditor_client.get(f"/joins/?{name}={value}").content.decode()
    assert attempt_ids(html) == [wanted.pk]
    if name in ("outcome", "error"):
        assert f'<option value="{value}" selected>' in html
    else:
        assert f'name="{name}" value="{value}"' in html
    assert exported_ids(auditor_client, f"{name}={value}") == [wanted.pk]
    assert f'href="/joins/export.csv?{name}={value}"' in html


@pytest.mark.parametrize(
    ("name", "column", "typed"),
    [
        ("host_id", "host_id", f"{ACCOUNT}-i-0abc"),
        ("instance_id", "instance_id", "i-0abc"),
    ],
)
def test_host_and_instance_ids_match_what_they_start_with(
    auditor_client: Client, name: str, column: str, typed: str
):
    first = make_attempt(host_id=HOST, instance_id=HOST.split("-", 1)[1])
    second = make_attempt(
        host_id=HOST.replace("567890", "000000"), instance_id="i-0abc1234def000000"
    )
    make_attempt(host_id=OTHER_HOST, instance_id=OTHER_HOST.split("-", 1)[1])
    both = [second.pk, first.pk]
    html = auditor_client.get(f"/joins/?{name}={typed}").content.decode()
    assert attempt_ids(html) == both
    assert f'name="{name}" value="{typed}"' in html  # the URL and the form keep what was typed
    assert exported_ids(auditor_client, f"{name}={typed}") == both
    # A whole ID finds its own rows; the API's explicit `*` still works.
    whole = getattr(first, column)
    assert attempt_ids(auditor_client.get(f"/joins/?{name}={whole}").content.decode()) == [first.pk]
    assert attempt_ids(auditor_client.get(f"/joins/?{name}={typed}*").content.decode()) == both


def test_a_prefix_is_matched_literally(auditor_client: Client):
    make_attempt(instance_id="i-0abc")
    for typed in ("%", "_", "i-0%25"):
        assert (
            attempt_ids(auditor_client.get(f"/joins/?instance_id={typed}").content.decode()) == []
        )


def test_the_time_range_takes_since_and_until_together(auditor_client: Client):
    make_attempt(time=NOW - timedelta(days=3))
    inside = make_attempt(time=NOW - timedelta(days=1))
    make_attempt(time=NOW)
    query = "since=2026-11-18T12:00:00&until=2026-11-20T11:59:59"
    html = auditor_client.get(f"/joins/?{query}").content.decode()
    assert attempt_ids(html) == [inside.pk]
    assert 'name="since" value="2026-11-18T12:00:00"' in html
    assert 'name="until" value="2026-11-20T11:59:59"' in html
    assert exported_ids(auditor_client, query) == [inside.pk]


def test_filters_combine_and_the_filtered_view_is_shareable(auditor_client: Client):
    wanted = make_attempt(token="web", error="iid_expired", instance_id="i-0abc1")
    make_attempt(token="web", error="iid_expired", instance_id="i-0def1")
    make_attempt(token="db", error="iid_expired", instance_id="i-0abc2")
    url = "/joins/?token=web&error=iid_expired&instance_id=i-0a"
    # Another user opening the same address sees the same rows.
    assert attempt_ids(auditor_client.get(url).content.decode()) == [wanted.pk]


def test_rows_are_newest_first_and_each_links_to_its_detail(auditor_client: Client):
    rows = [make_attempt(time=NOW - timedelta(minutes=m)) for m in (30, 10, 20)]
    html = auditor_client.get("/joins/").content.decode()
    assert attempt_ids(html) == sorted((row.pk for row in rows), reverse=True)
    for row in rows:
        assert auditor_client.get(f"/joins/{row.pk}/").status_code == 200


def test_filters_that_match_nothing_say_so_and_offer_to_clear_them(auditor_client: Client):
    make_attempt(token="web")
    html = auditor_client.get("/joins/?token=nobody&host_id=999").content.decode()
    assert attempt_ids(html) == []
    assert "No attempts match these filters" in html
    assert '<a class="button" href="/joins/">Clear filters</a>' in html
    assert '<details class="panel filters" open>' in html  # the filters stay visible


def test_filtered_pages_never_count_and_stay_bounded(
    auditor_client: Client, django_assert_max_num_queries
):
    for i in range(60):
        make_attempt(instance_id=f"i-0abc{i:04d}")
    with django_assert_max_num_queries(6):
        html = auditor_client.get("/joins/?instance_id=i-0abc&outcome=denied").content.decode()
    assert len(attempt_ids(html)) == 50 and 'rel="next"' in html
