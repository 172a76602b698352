"""`spec.allow_rejoin`: validated, stored, and carried losslessly by every door of a token."""

from __future__ import annotations

import json

import hcl2
import pytest
from django.test import Client

from tests.console import OTHER_ACCOUNT, make_token, token_object
from tests.console.test_tokens import form_data
from tokens.codecs import (
    EXPORT_FORMATS,
    parse_tokens,
    to_json,
    to_kubernetes,
    to_terraform,
    to_yaml,
)
from tokens.models import Token
from tokens.resource import ResourceError, validate_resource

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize("write", [to_yaml, to_json, to_kubernetes], ids=["yaml", "json", "k8s"])
def test_allow_rejoin_survives_a_round_trip_through_each_readable_format(write):
    resource = validate_resource(token_object("web", allow_rejoin=True))
    assert resource.allow_rejoin is True
    assert parse_tokens(write(resource)) == [resource]


def test_terraform_writes_allow_rejoin_as_a_boolean_in_the_spec():
    resource = validate_resource(token_object("web", allow_rejoin=True))
    parsed = json.dumps(hcl2.loads(to_terraform(resource)))
    assert '"allow_rejoin": true' in parsed


def test_a_plain_token_exports_exactly_as_before_without_the_field():
    plain = validate_resource(token_object("web"))
    explicit_off = validate_resource(token_object("web", allow_rejoin=False))
    assert explicit_off == plain
    for _, _, render in EXPORT_FORMATS.values():
        assert "allow_rejoin" not in render(plain)


@pytest.mark.parametrize("value", ["true", 1, "yes", 0])
def test_allow_rejoin_must_be_a_boolean(value):
    with pytest.raises(ResourceError) as refused:
        validate_resource(token_object("web", allow_rejoin=value))
    (detail,) = refused.value.details
    assert detail.field == "spec.allow_rejoin"
    assert "true or false" in detail.message


def test_the_stored_row_keeps_allow_rejoin():
    token = make_token("web", allow_rejoin=True)
    assert Token.objects.get(name="web").allow_rejoin is True
    assert token.to_resource().allow_rejoin is True
    assert make_token("plain").to_resource().allow_rejoin is False


def test_the_api_takes_and_shows_allow_rejoin(admin_client: Client):
    body = token_object("web", allow_rejoin=True)
    created = admin_client.post("/api/v1/tokens", data=body, content_type="application/json")
    assert created.status_code == 201, created.content
    shown = admin_client.get("/api/v1/tokens/web").json()
    assert shown["spec"]["allow_rejoin"] is True
    plain = admin_client.post(
        "/api/v1/tokens", data=token_object("plain"), content_type="application/json"
    )
    assert "allow_rejoin" not in plain.json()["spec"]


def test_the_console_editor_shows_keeps_and_clears_allow_rejoin(admin_client: Client):
    rules = [{"aws_account": OTHER_ACCOUNT, "aws_regions": "eu-west-1"}]
    make_token("web", allow_rejoin=True)
    page = admin_client.get("/tokens/web/edit/").content.decode()
    assert 'name="allow_rejoin"' in page and "checked" in page.split('name="allow_rejoin"')[1][:80]

    kept = admin_client.post("/tokens/web/edit/", form_data(rules, name="web", allow_rejoin="on"))
    assert kept.status_code == 302
    assert Token.objects.get(name="web").allow_rejoin is True
    assert "Allowed with a proof of the host" in admin_client.get("/tokens/web/").content.decode()

    cleared = admin_client.post(
        "/tokens/web/edit/", form_data([{**rules[0], "aws_regions": "eu-central-1"}], name="web")
    )
    assert cleared.status_code == 302
    assert Token.objects.get(name="web").allow_rejoin is False
