"""Text from users and from joining machines is shown as text, never as markup."""

from __future__ import annotations

import pytest
from django.test import Client

from audit.models import AdminAction
from tests.console import ACCOUNT, make_attempt, make_host, make_token

pytestmark = pytest.mark.django_db

PAYLOAD = '<script>alert("x")</script>'
HOST_ID = f"{ACCOUNT}-i-0123456789abcdef0"


@pytest.fixture
def hostile_rows() -> int:
    make_token(
        "web",
        metadata={"description": PAYLOAD, "labels": {"note": PAYLOAD}},
    )
    make_host(HOST_ID, node_name=PAYLOAD, token="web")
    attempt = make_attempt(
        token="web",
        node_name=PAYLOAD,
        user_agent=PAYLOAD,
        message=PAYLOAD,
        reason=PAYLOAD,
        checks=[{"name": "request", "ok": False, "detail": PAYLOAD}],
        document={"accountId": ACCOUNT, "note": PAYLOAD},
        token_snapshot={"metadata": {"name": "web", "description": PAYLOAD}},
    )
    AdminAction.objects.create(
        time=attempt.time,
        actor_name=PAYLOAD,
        action="host.forget",
        object_type="host",
        object_id=PAYLOAD,
        reason=PAYLOAD,
        before={"node_name": PAYLOAD},
    )
    return attempt.pk


@pytest.mark.parametrize(
    ("page", "shows_payload"),
    [
        ("/", True),  # the refusal's reason
        ("/tokens/", True),  # the description
        ("/tokens/web/", True),  # description and label
        ("/tokens/web/edit/", True),  # description and labels in the form
        ("/tokens/web/delete/", False),
        ("/joins/", False),
        ("/joins/{pk}/", True),  # message, reason, node name, checks, document, snapshot
        ("/hosts/", True),  # node name
        (f"/hosts/{HOST_ID}/", True),
        (f"/hosts/{HOST_ID}/forget/", False),
        ("/audit/actions/", True),  # actor, object, reason, before
    ],
)
def test_script_payloads_are_escaped(
    admin_client: Client, hostile_rows: int, page: str, shows_payload: bool
):
    html = admin_client.get(page.format(pk=hostile_rows)).content.decode()
    assert "<script" not in html
    if shows_payload:
        assert "&lt;script&gt;" in html, page


def test_a_search_query_is_escaped(admin_client: Client):
    html = admin_client.get("/tokens/", {"q": PAYLOAD}).content.decode()
    assert "<script" not in html and "&lt;script&gt;" in html


def test_filter_values_are_escaped(admin_client: Client):
    html = admin_client.get("/joins/", {"token": '"><script>x</script>'}).content.decode()
    assert "<script" not in html and "&quot;&gt;&lt;script&gt;" in html
