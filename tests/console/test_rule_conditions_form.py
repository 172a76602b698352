"""The token editor's per-rule "Conditions" part, and the conditions on the token page."""

from __future__ import annotations

import re
from typing import Any

import pytest
from django.test import Client

from audit.models import AdminAction
from tests.console import ACCOUNT, make_token
from tokens.models import Token

pytestmark = pytest.mark.django_db

VPC = "vpc-0a1b2c3d4e5f60718"
SUBNET = "subnet-0a1b2c3d4e5f60718"
PROFILE = f"arn:aws:iam::{ACCOUNT}:instance-profile/apps/*"
CONDITIONS = (
    "aws_vpc_ids",
    "aws_subnet_ids",
    "aws_ami_ids",
    "aws_instance_profile_arns",
    "aws_security_group_ids",
    "aws_tags",
    "require_imdsv2",
    "max_imds_hop_limit",
    "require_source_ip_match",
)


def form_data(rules: list[dict[str, str]], **fields: Any) -> dict[str, Any]:
    """What the browser posts; an unticked checkbox is simply absent."""
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
        for key, value in {"aws_account": "", "aws_regions": "", "aws_role": "", **rule}.items():
            data[f"rules-{index}-{key}"] = value
    data.update(fields)
    return data


def details_of(html: str, row: int) -> str:
    """The opening tag of a rule's "Conditions" disclosure."""
    match = re.search(rf'<details id="rule-{row}-conditions"[^>]*>', html)
    assert match, html
    return match.group(0)


# --- the editor -------------------------------------------------------------------------------


def test_each_rule_row_has_a_closed_conditions_part_with_every_input(admin_client: Client):
    html = admin_client.get("/tokens/new/").content.decode()
    assert "open" not in details_of(html, 1)
    assert "<summary>Conditions of rule 1" in html
    for name in CONDITIONS:
        assert f'name="rules-0-{name}"' in html
    assert 'type="checkbox" name="rules-0-require_imdsv2"' in html


def test_conditions_entered_in_the_form_are_saved_in_tctl_shape(admin_client: Client, admin_user):
    rule = {
        "aws_account": ACCOUNT,
        "aws_regions": "us-west-2",
        "aws_vpc_ids": f"{VPC}, vpc-0a1b2c3d",
        "aws_subnet_ids": SUBNET,
        "aws_ami_ids": "ami-0a1b2c3d",
        "aws_instance_profile_arns": f"{PROFILE}\narn:aws:iam::{ACCOUNT}:instance-profile/a,b",
        "aws_security_group_ids": "sg-0a1b2c3d sg-1a2b3c4d",
        "aws_tags": "env=production\nenv=staging\n\nteam = web\ncanary=",
        "require_imdsv2": "on",
        "max_imds_hop_limit": "1",
        "require_source_ip_match": "on",
    }
    response = admin_client.post("/tokens/new/", form_data([rule]))

    assert response.status_code == 302, response.content.decode()
    assert Token.objects.get(name="web-fleet").allow == [
        {
            "aws_account": ACCOUNT,
            "aws_regions": ["us-west-2"],
            "aws_vpc_ids": [VPC, "vpc-0a1b2c3d"],
            "aws_subnet_ids": [SUBNET],
            "aws_ami_ids": ["ami-0a1b2c3d"],
            "aws_instance_profile_arns": [PROFILE, f"arn:aws:iam::{ACCOUNT}:instance-profile/a,b"],
            "aws_security_group_ids": ["sg-0a1b2c3d", "sg-1a2b3c4d"],
            "aws_tags": {"canary": [""], "env": ["production", "staging"], "team": ["web"]},
            "require_imdsv2": True,
            "max_imds_hop_limit": 1,
            "require_source_ip_match": True,
        }
    ]
    action = AdminAction.objects.get(action="token.create")
    assert action.after["spec"]["allow"][0]["aws_vpc_ids"] == [VPC, "vpc-0a1b2c3d"]


def test_a_row_without_conditions_saves_a_plain_teleport_rule(admin_client: Client):
    response = admin_client.post("/tokens/new/", form_data([{"aws_account": ACCOUNT}]))
    assert response.status_code == 302
    assert Token.objects.get(name="web-fleet").allow == [{"aws_account": ACCOUNT}]


def test_a_bad_vpc_id_is_shown_in_the_opened_conditions_of_its_row(admin_client: Client):
    rules = [{"aws_account": ACCOUNT}, {"aws_account": ACCOUNT, "aws_vpc_ids": "subnet-0a1b2c3d"}]
    response = admin_client.post("/tokens/new/", form_data(rules))

    assert response.status_code == 200
    html = response.content.decode()
    assert 'id="id_rules-1-aws_vpc_ids_error"' in html
    assert "is a subnet id, not a VPC id" in html
    assert "open" in details_of(html, 2)
    assert "open" not in details_of(html, 1)
    assert 'value="subnet-0a1b2c3d"' in html
    assert not Token.objects.exists()


def test_a_tag_line_without_an_equals_sign_is_refused_on_the_tags_input(admin_client: Client):
    rules = [{"aws_account": ACCOUNT, "aws_tags": "env=prod\njust-a-key"}]
    html = admin_client.post("/tokens/new/", form_data(rules)).content.decode()
    assert 'id="id_rules-0-aws_tags_error"' in html
    assert "Line 2: write the tag as key=value." in html
    assert not Token.objects.exists()


def test_a_tag_value_error_names_the_tag(admin_client: Client):
    rules = [{"aws_account": ACCOUNT, "aws_tags": "env=" + "x" * 257}]
    html = admin_client.post("/tokens/new/", form_data(rules)).content.decode()
    assert 'id="id_rules-0-aws_tags_error"' in html
    assert "Tag env: a tag value has at most 256 characters" in html


@pytest.mark.parametrize(
    ("value", "message"),
    [("two", "Enter a whole number."), ("0", "outside AWS&#x27;s hop limits 1 to 64")],
)
def test_a_bad_hop_limit_is_refused_on_its_input(admin_client: Client, value, message):
    rules = [{"aws_account": ACCOUNT, "max_imds_hop_limit": value}]
    html = admin_client.post("/tokens/new/", form_data(rules)).content.decode()
    assert 'id="id_rules-0-max_imds_hop_limit_error"' in html
    assert message in html
    assert not Token.objects.exists()


def test_a_profile_of_another_account_is_refused_on_the_profiles_input(admin_client: Client):
    rules = [
        {
            "aws_account": ACCOUNT,
            "aws_instance_profile_arns": "arn:aws:iam::222222222222:instance-profile/web",
        }
    ]
    html = admin_client.post("/tokens/new/", form_data(rules)).content.decode()
    assert 'id="id_rules-0-aws_instance_profile_arns_error"' in html
    assert "in account 222222222222 but the rule admits account 111111111111" in html


def test_add_rule_keeps_the_conditions_typed_so_far(admin_client: Client):
    rules = [{"aws_account": ACCOUNT, "aws_vpc_ids": VPC, "require_imdsv2": "on"}]
    html = admin_client.post("/tokens/new/", form_data(rules, action="add_rule")).content.decode()

    assert 'name="rules-TOTAL_FORMS" value="2"' in html
    assert f'value="{VPC}"' in html
    assert re.search(r'<input type="checkbox" name="rules-0-require_imdsv2"[^>]*checked', html)
    assert not re.search(r'<input type="checkbox" name="rules-1-require_imdsv2"[^>]*checked', html)
    assert "open" in details_of(html, 1)
    assert "open" not in details_of(html, 2)


def test_edit_shows_the_rules_current_conditions(admin_client: Client):
    make_token(
        "web",
        allow=[
            {
                "aws_account": ACCOUNT,
                "aws_vpc_ids": [VPC, "vpc-0a1b2c3d"],
                "aws_instance_profile_arns": [PROFILE],
                "aws_tags": {"env": ["production", "staging"]},
                "max_imds_hop_limit": 2,
                "require_source_ip_match": True,
            },
            {"aws_account": ACCOUNT, "aws_regions": ["eu-west-1"]},
        ],
    )
    html = admin_client.get("/tokens/web/edit/").content.decode()

    assert "open" in details_of(html, 1)
    assert "open" not in details_of(html, 2)
    assert f'value="{VPC}, vpc-0a1b2c3d"' in html
    assert f">\n{PROFILE}</textarea>" in html
    assert ">\nenv=production\nenv=staging</textarea>" in html
    assert 'name="rules-0-max_imds_hop_limit" value="2"' in html
    assert re.search(r'name="rules-0-require_source_ip_match"[^>]*checked', html)
    assert not re.search(r'name="rules-0-require_imdsv2"[^>]*checked', html)


def test_saving_an_edit_unchanged_keeps_every_condition(admin_client: Client):
    allow = [
        {
            "aws_account": ACCOUNT,
            "aws_security_group_ids": ["sg-0a1b2c3d"],
            "aws_tags": {"env": ["production"]},
            "require_imdsv2": True,
        }
    ]
    make_token("web", allow=allow)
    rules = [
        {
            "aws_account": ACCOUNT,
            "aws_security_group_ids": "sg-0a1b2c3d",
            "aws_tags": "env=production",
            "require_imdsv2": "on",
        }
    ]
    # The edit page counts the stored rules as initial rows, as a browser posts it back.
    data = form_data(rules, name="web", **{"rules-INITIAL_FORMS": "1"})
    response = admin_client.post("/tokens/web/edit/", data)
    assert response.status_code == 302
    assert Token.objects.get(name="web").allow == allow


def test_an_auditor_cannot_save_conditions(auditor_client: Client):
    rules = [{"aws_account": ACCOUNT, "aws_vpc_ids": VPC}]
    assert auditor_client.post("/tokens/new/", form_data(rules)).status_code == 403
    assert not Token.objects.exists()


def test_anonymous_visitors_are_sent_to_sign_in(client: Client):
    response = client.post("/tokens/new/", form_data([{"aws_account": ACCOUNT}]))
    assert response.status_code == 302 and "/accounts/login/" in response["Location"]


# --- the token page ---------------------------------------------------------------------------


def test_the_token_page_lists_each_rules_conditions(auditor_client: Client):
    make_token(
        "web",
        allow=[
            {
                "aws_account": ACCOUNT,
                "aws_vpc_ids": [VPC],
                "aws_instance_profile_arns": [PROFILE],
                "aws_security_group_ids": ["sg-0a1b2c3d", "sg-1a2b3c4d"],
                "aws_tags": {"env": ["production", "staging"], "items": ["x"]},
                "require_imdsv2": True,
                "max_imds_hop_limit": 1,
                "require_source_ip_match": True,
            },
            {"aws_account": ACCOUNT, "aws_regions": ["eu-west-1"]},
        ],
    )
    html = auditor_client.get("/tokens/web/").content.decode()

    assert '<th scope="col">Conditions</th>' in html
    assert f'<dt>VPC, one of</dt><dd class="mono break">{VPC}</dd>' in html
    assert PROFILE in html
    assert "sg-0a1b2c3d, sg-1a2b3c4d" in html
    assert '<span class="mono">env</span> = <span class="mono">“production”</span> or' in html
    # A tag named "items" must not be mistaken for the mapping's method by the template.
    assert '<span class="mono">items</span> = <span class="mono">“x”</span>' in html
    assert "IMDSv2 required" in html
    assert "<dt>IMDS hop limit</dt><dd>at most 1</dd>" in html
    assert "<dt>Source address</dt><dd>one of the instance's own addresses</dd>" in html
    assert '<span class="muted">None</span>' in html  # the second rule has none


def test_condition_values_are_escaped_on_the_token_page(admin_client: Client):
    make_token("web", allow=[{"aws_account": ACCOUNT, "aws_tags": {"<b>k": ["<script>"]}}])
    html = admin_client.get("/tokens/web/").content.decode()
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert "&lt;b&gt;k" in html
