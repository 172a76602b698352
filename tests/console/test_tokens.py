"""Token pages: list, detail, the editor with its allow-rule rows, delete and download."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import Any

import hcl2
import pytest
import time_machine
import yaml
from django.test import Client

from audit.models import AdminAction
from tests.console import ACCOUNT, OTHER_ACCOUNT, make_attempt, make_host, make_token
from tokens.codecs import parse_tokens
from tokens.models import Token

pytestmark = pytest.mark.django_db

ROLE_ARN = f"arn:aws:iam::{OTHER_ACCOUNT}:role/describe-instances"


def form_data(rules: list[dict[str, str]] | None = None, **fields: Any) -> dict[str, Any]:
    """What the browser posts from the token editor."""
    rules = rules if rules is not None else [{"aws_account": ACCOUNT, "aws_regions": "us-west-2"}]
    data: dict[str, Any] = {
        "action": "save",
        "name": "web-fleet",
        "roles": ["Node"],
        "aws_iid_ttl": "5m",
        "expires": "",
        "description": "",
        "labels": "",
        "rules-TOTAL_FORMS": str(len(rules)),
        "rules-INITIAL_FORMS": "0",
        "rules-MIN_NUM_FORMS": "0",
        "rules-MAX_NUM_FORMS": "100",
    }
    for index, rule in enumerate(rules):
        for key in ("aws_account", "aws_regions", "aws_role"):
            data[f"rules-{index}-{key}"] = rule.get(key, "")
        if rule.get("DELETE"):
            data[f"rules-{index}-DELETE"] = "on"
    data.update(fields)
    return data


# --- list ----------------------------------------------------------------------------------


def test_the_empty_list_invites_admins_to_create_or_upload(admin_client: Client):
    html = admin_client.get("/tokens/").content.decode()
    assert "No tokens yet" in html
    assert 'href="/tokens/new/"' in html and 'href="/tokens/upload/"' in html


def test_the_list_shows_each_token_with_its_rules_summary(admin_client: Client):
    make_token(
        "web",
        roles=["Node", "App"],
        allow=[
            {"aws_account": ACCOUNT, "aws_regions": ["us-west-2", "eu-west-1"]},
            {"aws_account": OTHER_ACCOUNT, "aws_role": ROLE_ARN},
        ],
    )
    html = admin_client.get("/tokens/").content.decode()
    assert 'href="/tokens/web/"' in html
    for text in (ACCOUNT, OTHER_ACCOUNT, "us-west-2, eu-west-1", "App", "5m", "Active"):
        assert text in html
    assert "<caption>" in html


def test_the_list_searches_and_filters_by_status(admin_client: Client):
    with time_machine.travel(datetime(2026, 1, 1, tzinfo=UTC), tick=False):
        make_token("old-one", metadata={"expires": "2026-06-01T00:00:00Z"})
        make_token("live-one")
        make_token("other")
    with time_machine.travel(datetime(2026, 7, 1, tzinfo=UTC), tick=False):
        expired = admin_client.get("/tokens/?status=expired").content.decode()
        active = admin_client.get("/tokens/?status=active").content.decode()
        searched = admin_client.get("/tokens/?q=live").content.decode()
        nothing = admin_client.get("/tokens/?q=zzz").content.decode()
    assert "/tokens/old-one/" in expired and "/tokens/live-one/" not in expired
    assert "/tokens/live-one/" in active and "/tokens/old-one/" not in active
    assert "/tokens/live-one/" in searched and "/tokens/other/" not in searched
    assert "No tokens match" in nothing
    assert 'tabs__count">1<' in expired.replace("\n", "").replace(" ", "")


def test_the_list_keeps_its_query_count_flat(admin_client: Client, django_assert_max_num_queries):
    for index in range(30):
        make_token(f"token-{index:02d}")
    with django_assert_max_num_queries(8):
        response = admin_client.get("/tokens/")
    assert response.content.count(b'href="/tokens/token-') == 30


# --- detail --------------------------------------------------------------------------------


def test_the_detail_shows_every_field_rules_and_recent_attempts(admin_client: Client):
    make_token(
        "web",
        metadata={"labels": {"env": "prod"}, "expires": "2030-01-01T00:00:00Z"},
        allow=[{"aws_account": OTHER_ACCOUNT, "aws_regions": ["eu-west-1"], "aws_role": ROLE_ARN}],
    )
    for _ in range(12):
        make_attempt(token="web")
    make_host(token="web")
    html = admin_client.get("/tokens/web/").content.decode()
    for text in (
        "web for tests",
        "env",
        "prod",
        "2030-01-01 00:00:00",
        ROLE_ARN,
        "eu-west-1",
        "1 host",
        "/joins/?token=web",
    ):
        assert text in html, text
    assert len(re.findall(r'href="/joins/\d+/"', html)) == 10
    for fmt in ("yaml", "json", "k8s", "terraform"):
        assert f'href="/tokens/web/download/{fmt}/"' in html


@pytest.mark.parametrize(
    ("fmt", "media_type", "filename"),
    [
        ("yaml", "application/yaml", "web.yaml"),
        ("json", "application/json", "web.json"),
        ("k8s", "application/yaml", "web.k8s.yaml"),
        ("terraform", "text/plain", "web.tf"),
    ],
)
def test_a_download_is_an_attachment_that_parses(auditor_client: Client, fmt, media_type, filename):
    token = make_token("web", metadata={"labels": {"env": "prod"}})
    response = auditor_client.get(f"/tokens/web/download/{fmt}/")
    assert response.status_code == 200
    assert response["Content-Type"].startswith(media_type)
    assert response["Content-Disposition"] == f'attachment; filename="{filename}"'
    text = response.content.decode()
    if fmt == "terraform":
        parsed = hcl2.loads(text)
        assert "teleport_provision_token" in json.dumps(parsed)
        assert ACCOUNT in json.dumps(parsed)
    else:
        if fmt == "json":
            assert json.loads(text)["metadata"]["name"] == "web"
        else:
            assert yaml.safe_load(text)["metadata"]["name"] == "web"
        assert parse_tokens(text) == [token.to_resource()]


def test_an_unknown_download_format_is_404(admin_client: Client):
    make_token("web")
    assert admin_client.get("/tokens/web/download/xml/").status_code == 404


# --- create --------------------------------------------------------------------------------


def test_an_admin_creates_a_token_with_two_allow_rules(admin_client: Client, admin_user):
    data = form_data(
        rules=[
            {"aws_account": ACCOUNT, "aws_regions": "us-west-2, us-east-1"},
            {
                "aws_account": OTHER_ACCOUNT,
                "aws_regions": "eu-west-1 eu-central-1",
                "aws_role": ROLE_ARN,
            },
        ],
        roles=["Node", "Db"],
        aws_iid_ttl="10m",
        expires="2030-05-01T08:30",
        description="web servers",
        labels="env=prod\n\nteam = platform\n",
    )
    response = admin_client.post("/tokens/new/", data, REMOTE_ADDR="198.51.100.4")
    assert response.status_code == 302 and response["Location"] == "/tokens/web-fleet/"
    token = Token.objects.get(name="web-fleet")
    assert token.roles == ["Node", "Db"]
    assert token.aws_iid_ttl == "10m"
    assert token.expires == datetime(2030, 5, 1, 8, 30, tzinfo=UTC)
    assert token.description == "web servers"
    assert token.labels == {"env": "prod", "team": "platform"}
    assert token.allow == [
        {"aws_account": ACCOUNT, "aws_regions": ["us-west-2", "us-east-1"]},
        {
            "aws_account": OTHER_ACCOUNT,
            "aws_regions": ["eu-west-1", "eu-central-1"],
            "aws_role": ROLE_ARN,
        },
    ]
    assert token.created_by == admin_user
    action = AdminAction.objects.get(action="token.create")
    assert action.actor == admin_user and action.via == "console"
    assert action.remote_addr == "198.51.100.4"
    page = admin_client.get(response["Location"]).content.decode()
    assert "Token web-fleet was created." in page


def test_a_bad_account_id_is_shown_next_to_its_row(admin_client: Client):
    data = form_data(
        rules=[
            {"aws_account": ACCOUNT},
            {"aws_account": "12345", "aws_regions": "us-west-2"},
        ]
    )
    response = admin_client.post("/tokens/new/", data)
    assert response.status_code == 200
    html = response.content.decode()
    assert '<ul class="errorlist" id="id_rules-1-aws_account_error">' in html
    assert "is not an AWS account ID" in html
    assert 'id="id_rules-0-aws_account_error"' not in html
    assert 'aria-invalid="true"' in html
    assert "The token was not saved." in html
    # What the user typed is kept.
    assert 'value="12345"' in html and 'value="web-fleet"' in html
    assert not Token.objects.exists()


def test_a_region_error_lands_on_the_regions_of_the_right_row(admin_client: Client):
    data = form_data(
        rules=[
            {},  # a blank row is skipped, so the resource's rule 1 is the form's row 3
            {"aws_account": ACCOUNT},
            {"aws_account": OTHER_ACCOUNT, "aws_regions": "us-wst-2"},
        ]
    )
    html = admin_client.post("/tokens/new/", data).content.decode()
    assert 'id="id_rules-2-aws_regions_error"' in html
    assert "is not an AWS region" in html


def test_token_level_errors_land_on_their_fields(admin_client: Client):
    data = form_data(name="bad name!", roles=[], aws_iid_ttl="3d", labels="no-equals-sign")
    html = admin_client.post("/tokens/new/", data).content.decode()
    assert 'id="id_labels_error"' in html and "write the label as key=value" in html
    data = form_data(name="bad name!", roles=[], aws_iid_ttl="3d")
    html = admin_client.post("/tokens/new/", data).content.decode()
    assert 'id="id_name_error"' in html
    assert 'id="id_roles_error"' in html
    assert 'id="id_aws_iid_ttl_error"' in html
    assert not Token.objects.exists()


def test_a_token_without_rules_says_so_above_the_rules(admin_client: Client):
    html = admin_client.post("/tokens/new/", form_data(rules=[{}])).content.decode()
    assert 'id="rules-errors"' in html and "requires defined token allow rules" in html


def test_an_existing_name_is_refused_on_create(admin_client: Client):
    make_token("web-fleet")
    html = admin_client.post("/tokens/new/", form_data()).content.decode()
    assert "already exists" in html
    assert Token.objects.get(name="web-fleet").description == "web-fleet for tests"


def test_add_rule_redisplays_the_form_with_one_more_row(admin_client: Client):
    data = form_data(action="add_rule", name="half-done", description="keep me")
    response = admin_client.post("/tokens/new/", data)
    assert response.status_code == 200
    html = response.content.decode()
    assert 'name="rules-TOTAL_FORMS" value="2"' in html
    assert 'name="rules-1-aws_account"' in html
    assert 'value="half-done"' in html and "keep me" in html
    assert f'value="{ACCOUNT}"' in html
    assert "errorlist" not in html
    assert not Token.objects.exists()


def test_add_rule_drops_rows_ticked_for_removal(admin_client: Client):
    data = form_data(
        action="add_rule",
        rules=[{"aws_account": ACCOUNT}, {"aws_account": OTHER_ACCOUNT, "DELETE": "on"}],
    )
    html = admin_client.post("/tokens/new/", data).content.decode()
    assert 'name="rules-TOTAL_FORMS" value="2"' in html
    assert OTHER_ACCOUNT not in html


def test_rows_ticked_for_removal_are_not_saved(admin_client: Client):
    data = form_data(
        rules=[{"aws_account": ACCOUNT}, {"aws_account": "not-an-account", "DELETE": "on"}]
    )
    assert admin_client.post("/tokens/new/", data).status_code == 302
    assert Token.objects.get(name="web-fleet").allow == [{"aws_account": ACCOUNT}]


def test_the_form_explains_times_are_utc(admin_client: Client):
    html = admin_client.get("/tokens/new/").content.decode()
    assert "Expires (UTC)" in html and 'type="datetime-local"' in html
    assert 'name="action" value="add_rule"' in html
    for role in ("Node", "Kube", "Db", "WindowsDesktop"):
        assert f'value="{role}"' in html


# --- edit ----------------------------------------------------------------------------------


def test_edit_shows_the_current_values(admin_client: Client):
    make_token(
        "web",
        metadata={"labels": {"env": "prod"}, "expires": "2030-01-01T00:00:00Z"},
        allow=[{"aws_account": ACCOUNT, "aws_regions": ["us-west-2", "us-east-1"]}],
    )
    html = admin_client.get("/tokens/web/edit/").content.decode()
    assert 'value="web"' in html and "disabled" in html
    assert 'value="us-west-2, us-east-1"' in html
    assert "env=prod" in html
    assert 'value="2030-01-01T00:00:00"' in html


def test_edit_saves_changes_and_keeps_the_name(admin_client: Client, admin_user):
    make_token("web")
    data = form_data(
        name="renamed",
        aws_iid_ttl="15m",
        rules=[{"aws_account": OTHER_ACCOUNT, "aws_regions": "eu-west-1"}],
    )
    response = admin_client.post("/tokens/web/edit/", data)
    assert response.status_code == 302 and response["Location"] == "/tokens/web/"
    token = Token.objects.get(name="web")
    assert token.aws_iid_ttl == "15m"
    assert token.allow == [{"aws_account": OTHER_ACCOUNT, "aws_regions": ["eu-west-1"]}]
    assert not Token.objects.filter(name="renamed").exists()
    action = AdminAction.objects.get(action="token.update")
    assert action.before["spec"]["aws_iid_ttl"] == "5m"
    assert action.after["spec"]["aws_iid_ttl"] == "15m"


# --- delete --------------------------------------------------------------------------------


def test_delete_asks_first_naming_the_token_and_its_hosts(admin_client: Client):
    make_token("web")
    make_host(f"{ACCOUNT}-i-0000000000000000a", token="web")
    make_host(f"{ACCOUNT}-i-0000000000000000b", token="web")
    response = admin_client.get("/tokens/web/delete/")
    html = response.content.decode()
    assert "Delete token" in html and "web" in html
    assert "2 hosts joined with this token." in html
    assert Token.objects.filter(name="web").exists()


def test_delete_on_post_removes_the_token_and_records_it(admin_client: Client, admin_user):
    make_token("web")
    response = admin_client.post("/tokens/web/delete/")
    assert response.status_code == 302 and response["Location"] == "/tokens/"
    assert not Token.objects.filter(name="web").exists()
    action = AdminAction.objects.get(action="token.delete")
    assert action.object_id == "web" and action.actor == admin_user
    assert "Token web was deleted." in admin_client.get("/tokens/").content.decode()
