"""The admin action log page."""

from __future__ import annotations

import pytest
from django.test import Client
from django.utils import timezone

from audit.models import AdminAction
from tests.console import make_token

pytestmark = pytest.mark.django_db


def record(action: str, object_id: str, actor: str = "alice", **fields: object) -> AdminAction:
    return AdminAction.objects.create(
        time=timezone.now(),
        actor_name=actor,
        action=action,
        object_type=action.split(".")[0],
        object_id=object_id,
        **fields,
    )


def test_the_empty_log_explains_what_it_records(auditor_client: Client):
    assert "No admin actions yet" in auditor_client.get("/audit/actions/").content.decode()


def test_audit_redirects_to_the_action_log(auditor_client: Client):
    response = auditor_client.get("/audit/")
    assert response.status_code == 302 and response["Location"] == "/audit/actions/"


def test_the_log_shows_each_action_with_before_and_after(auditor_client: Client):
    make_token("web")
    record(
        "token.update",
        "web",
        before={"spec": {"aws_iid_ttl": "5m"}},
        after={"spec": {"aws_iid_ttl": "10m"}},
        remote_addr="192.0.2.1",
    )
    record("host.forget", "111111111111-i-0abc", reason="rebuilt", via="api")
    html = auditor_client.get("/audit/actions/").content.decode()
    assert "token.update" in html and "host.forget" in html
    assert "<details" in html and "<summary>Show</summary>" in html
    assert "&quot;aws_iid_ttl&quot;: &quot;5m&quot;" in html
    assert "&quot;aws_iid_ttl&quot;: &quot;10m&quot;" in html
    assert "rebuilt" in html and "192.0.2.1" in html
    # Live objects are linked; the forgotten host is not.
    assert 'href="/tokens/web/"' in html
    assert 'href="/hosts/111111111111-i-0abc/"' not in html


def test_the_log_filters_by_action_and_actor(auditor_client: Client):
    record("token.create", "a", actor="alice")
    record("token.delete", "b", actor="alice")
    record("token.create", "c", actor="bob")
    html = auditor_client.get("/audit/actions/?action=token.create&actor=bo").content.decode()
    assert ">c</span>" in html and ">a</span>" not in html and ">b</span>" not in html
    assert '<option value="token.create" selected>' in html
    assert 'name="actor" value="bo"' in html


def test_the_log_pages_with_a_flat_query_count(
    auditor_client: Client, django_assert_max_num_queries
):
    for index in range(60):
        record("token.create", f"t{index}", after={"n": index})
    with django_assert_max_num_queries(9):
        html = auditor_client.get("/audit/actions/").content.decode()
    assert html.count("<details") == 50
    assert 'href="?page=2" rel="next"' in html
