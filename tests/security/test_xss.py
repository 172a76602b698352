"""Script payloads in everything users and joining machines write show as text on every page.

The rows are written through the real doors where there is one: the join endpoint records the
claimed token name, node name and user agent of a hostile request; forgetting a host records
the reason given; tokens are stored from validated resources.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.test import Client
from django.utils.html import escape

from joins.host_services import forget_host
from joins.models import JoinAttempt
from tests.console import ACCOUNT, make_attempt, make_host, make_token

pytestmark = pytest.mark.django_db

PAYLOADS = ["<script>alert(1)</script>", '"><img src=x onerror=alert(1)>']
HOST_ID = f"{ACCOUNT}-i-0123456789abcdef0"
FORGOTTEN_ID = f"{ACCOUNT}-i-0fedcba9876543210"


@pytest.fixture(params=PAYLOADS, ids=["script", "img-onerror"])
def payload(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def hostile(payload: str, admin_user: Any, client: Client, settings: Any) -> dict[str, int]:
    """Every user-supplied string of the console carries `payload`."""
    settings.JOIN_RATE_LIMIT = "off"
    make_token("web", metadata={"description": payload, "labels": {"note": payload}})
    make_host(HOST_ID, node_name=payload, token="web")
    make_host(FORGOTTEN_ID, token="web")
    forget_host(FORGOTTEN_ID, actor=admin_user, reason=payload, via="console")
    response = client.post(
        "/api/v1/join",
        data=json.dumps({"token": payload, "node_name": payload, "ec2_identity_document": "x"}),
        content_type="application/json",
        HTTP_USER_AGENT=payload,
    )
    assert response.status_code == 400
    joined = JoinAttempt.objects.get(pk=int(response.json()["join_attempt_id"]))
    assert (joined.token, joined.node_name, joined.user_agent) == (payload, payload, payload)
    refused = make_attempt(token="web", reason=payload, message=payload)
    return {"joined": joined.pk, "refused": refused.pk}


@pytest.mark.parametrize(
    "page",
    [
        "/",  # the latest refusal's reason
        "/tokens/",  # the description
        "/tokens/web/",  # description and label value
        "/joins/",  # the claimed token name
        "/joins/{joined}/",  # token name, node name, user agent
        "/joins/{refused}/",  # message and reason
        "/hosts/",  # node name
        f"/hosts/{HOST_ID}/",  # node name
        "/audit/actions/",  # the reason a host was forgotten
    ],
)
def test_script_payloads_are_shown_escaped(
    admin_client: Client, hostile: dict[str, int], payload: str, page: str
):
    response = admin_client.get(page.format(**hostile))
    assert response.status_code == 200
    html = response.content.decode()
    assert payload not in html
    assert "<script" not in html and "<img" not in html
    assert escape(payload) in html, page


def test_the_join_history_filters_echo_payloads_escaped(admin_client: Client, payload: str):
    html = admin_client.get("/joins/", {"token": payload, "host_id": payload}).content.decode()
    assert payload not in html
    assert escape(payload) in html
