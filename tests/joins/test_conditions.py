"""Allow-rule conditions against a DescribeInstances answer: each one passing and refusing."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from joins.conditions import ConditionFailed, evaluate, instance_addresses
from joins.constants import CONDITION_CODES, ERROR_CODES
from tokens.constants import CONDITION_FIELDS
from tokens.resource import AllowRule

ACCOUNT = "123456789012"
VPC = "vpc-0a1b2c3d4e5f60718"
SUBNET = "subnet-0a1b2c3d4e5f60718"
AMI = "ami-0a1b2c3d4e5f60718"
SG_WEB = "sg-0a1b2c3d4e5f60718"
SG_SSH = "sg-08f7e6d5c4b3a2910"
PROFILE = f"arn:aws:iam::{ACCOUNT}:instance-profile/apps/web-servers"

INSTANCE: dict[str, Any] = {
    "InstanceId": "i-0123456789abcdef0",
    "State": {"Code": 16, "Name": "running"},
    "ImageId": AMI,
    "VpcId": VPC,
    "SubnetId": SUBNET,
    "PrivateIpAddress": "10.1.1.4",
    "PublicIpAddress": "54.214.108.84",
    "IamInstanceProfile": {"Arn": PROFILE, "Id": "AIPAEXAMPLE"},
    "SecurityGroups": [
        {"GroupId": SG_WEB, "GroupName": "web"},
        {"GroupId": SG_SSH, "GroupName": "ssh"},
    ],
    "Tags": [{"Key": "env", "Value": "production"}, {"Key": "team", "Value": "web"}],
    "MetadataOptions": {
        "State": "applied",
        "HttpTokens": "required",
        "HttpPutResponseHopLimit": 1,
        "HttpEndpoint": "enabled",
    },
    "NetworkInterfaces": [
        {
            "PrivateIpAddress": "10.1.1.4",
            "Association": {"PublicIp": "54.214.108.84"},
            "PrivateIpAddresses": [
                {"Primary": True, "PrivateIpAddress": "10.1.1.4"},
                {
                    "Primary": False,
                    "PrivateIpAddress": "10.1.1.9",
                    "Association": {"PublicIp": "3.5.140.2"},
                },
            ],
            "Ipv6Addresses": [{"Ipv6Address": "2600:1f14:abc:de00::10"}],
        },
        {"PrivateIpAddress": "10.1.2.7", "PrivateIpAddresses": [], "Ipv6Addresses": []},
    ],
}


def instance(**changes: Any) -> dict[str, Any]:
    """The sample answer with top-level fields replaced; a value of None removes the field."""
    raw = copy.deepcopy(INSTANCE)
    for key, value in changes.items():
        if value is None:
            raw.pop(key, None)
        else:
            raw[key] = value
    return raw


def rule(**conditions: Any) -> AllowRule:
    return AllowRule(aws_account=ACCOUNT, **conditions)


def refusal(the_rule: AllowRule, raw: dict[str, Any], source: str = "10.1.1.4") -> ConditionFailed:
    with pytest.raises(ConditionFailed) as caught:
        evaluate(the_rule, raw, source)
    return caught.value


# --- general ----------------------------------------------------------------------------------


def test_a_rule_without_conditions_checks_nothing_even_against_an_empty_answer():
    assert evaluate(AllowRule(aws_account=ACCOUNT), {}, "") == []


def test_every_condition_has_its_own_403_code():
    assert set(CONDITION_CODES) == set(CONDITION_FIELDS)
    assert len(set(CONDITION_CODES.values())) == len(CONDITION_FIELDS)
    for code in CONDITION_CODES.values():
        assert ERROR_CODES[code][0] == 403


def test_all_conditions_pass_in_order_each_named_for_the_trace():
    the_rule = rule(
        aws_vpc_ids=(VPC,),
        aws_subnet_ids=(SUBNET,),
        aws_ami_ids=(AMI,),
        aws_instance_profile_arns=(PROFILE,),
        aws_security_group_ids=(SG_WEB,),
        aws_tags={"env": ("production",)},
        require_imdsv2=True,
        max_imds_hop_limit=1,
        require_source_ip_match=True,
    )

    results = evaluate(the_rule, instance(), "10.1.1.4")

    assert [result.name for result in results] == [f"condition:{f}" for f in CONDITION_FIELDS]
    assert all(result.detail for result in results)


def test_a_refusal_carries_the_conditions_that_held_before_it():
    the_rule = rule(aws_vpc_ids=(VPC,), aws_ami_ids=("ami-0fffffffffffffff0",), require_imdsv2=True)

    failed = refusal(the_rule, instance())

    assert failed.name == "condition:aws_ami_ids"
    assert [result.name for result in failed.passed] == ["condition:aws_vpc_ids"]


def test_the_agent_message_never_lists_the_rules_allowed_values():
    secret = "vpc-0fffffffffffffff0"
    failed = refusal(rule(aws_vpc_ids=(secret,)), instance())

    assert secret in failed.reason
    assert secret not in failed.message
    assert VPC in failed.message  # the instance's own VPC helps its operator


# --- VPC, subnet, AMI -------------------------------------------------------------------------

ID_CONDITIONS = [
    ("aws_vpc_ids", "VpcId", VPC, "vpc-0fffffffffffffff0", "instance_vpc_not_allowed"),
    (
        "aws_subnet_ids",
        "SubnetId",
        SUBNET,
        "subnet-0fffffffffffffff0",
        "instance_subnet_not_allowed",
    ),
    ("aws_ami_ids", "ImageId", AMI, "ami-0fffffffffffffff0", "instance_ami_not_allowed"),
]


@pytest.mark.parametrize(("field", "attribute", "own", "other", "code"), ID_CONDITIONS)
def test_an_id_condition_passes_when_the_instances_id_is_listed(field, attribute, own, other, code):
    [result] = evaluate(rule(**{field: (other, own)}), instance(), "")
    assert result.name == f"condition:{field}"
    assert own in result.detail


@pytest.mark.parametrize(("field", "attribute", "own", "other", "code"), ID_CONDITIONS)
def test_an_id_condition_refuses_an_instance_elsewhere(field, attribute, own, other, code):
    failed = refusal(rule(**{field: (other,)}), instance())
    assert failed.code == code
    assert own in failed.reason and other in failed.reason


@pytest.mark.parametrize(("field", "attribute", "own", "other", "code"), ID_CONDITIONS)
def test_an_id_condition_fails_closed_when_aws_does_not_report_the_id(
    field, attribute, own, other, code
):
    failed = refusal(rule(**{field: (own,)}), instance(**{attribute: None}))
    assert failed.code == code
    assert f"reported no {attribute}" in failed.reason


# --- instance profile -------------------------------------------------------------------------


def test_an_instance_profile_arn_matches_exactly():
    [result] = evaluate(rule(aws_instance_profile_arns=(PROFILE,)), instance(), "")
    assert PROFILE in result.detail


def test_an_instance_profile_arn_ending_in_a_star_matches_by_prefix():
    pattern = f"arn:aws:iam::{ACCOUNT}:instance-profile/apps/*"
    [result] = evaluate(rule(aws_instance_profile_arns=(pattern,)), instance(), "")
    assert "prefix" in result.detail


def test_an_instance_profile_arn_without_a_star_is_not_a_prefix():
    prefix_only = f"arn:aws:iam::{ACCOUNT}:instance-profile/apps/web"
    failed = refusal(rule(aws_instance_profile_arns=(prefix_only,)), instance())
    assert failed.code == "instance_profile_not_allowed"
    assert PROFILE in failed.reason


def test_an_instance_without_a_profile_is_refused_by_a_profile_condition():
    failed = refusal(
        rule(aws_instance_profile_arns=(f"arn:aws:iam::{ACCOUNT}:instance-profile/*",)),
        instance(IamInstanceProfile=None),
    )
    assert failed.code == "instance_profile_not_allowed"
    assert "no instance profile" in failed.reason


# --- security groups ----------------------------------------------------------------------------


def test_the_instance_must_be_in_every_listed_security_group():
    [result] = evaluate(rule(aws_security_group_ids=(SG_WEB, SG_SSH)), instance(), "")
    assert SG_WEB in result.detail and SG_SSH in result.detail


def test_being_in_only_some_of_the_listed_security_groups_is_refused():
    missing = "sg-0fffffffffffffff0"
    failed = refusal(rule(aws_security_group_ids=(SG_WEB, missing)), instance())
    assert failed.code == "instance_security_group_not_allowed"
    assert missing in failed.reason


def test_an_answer_without_security_groups_fails_closed():
    failed = refusal(rule(aws_security_group_ids=(SG_WEB,)), instance(SecurityGroups=None))
    assert failed.code == "instance_security_group_not_allowed"
    assert "reported no SecurityGroups" in failed.reason


# --- tags -------------------------------------------------------------------------------------


def test_every_listed_tag_must_be_present_with_one_of_its_values():
    the_rule = rule(aws_tags={"env": ("staging", "production"), "team": ("web",)})
    [result] = evaluate(the_rule, instance(), "")
    assert "env=production" in result.detail and "team=web" in result.detail


def test_a_tag_with_another_value_is_refused():
    failed = refusal(rule(aws_tags={"env": ("staging",)}), instance())
    assert failed.code == "instance_tags_not_allowed"
    assert "'production'" in failed.reason and "'staging'" in failed.reason


def test_tag_values_compare_case_sensitively_as_aws_stores_them():
    failed = refusal(rule(aws_tags={"env": ("Production",)}), instance())
    assert failed.code == "instance_tags_not_allowed"


def test_a_missing_tag_is_refused():
    failed = refusal(rule(aws_tags={"env": ("production",), "owner": ("ops",)}), instance())
    assert failed.code == "instance_tags_not_allowed"
    assert "no tag 'owner'" in failed.reason


def test_an_instance_without_tags_is_refused_by_a_tag_condition():
    failed = refusal(rule(aws_tags={"env": ("production",)}), instance(Tags=None))
    assert failed.code == "instance_tags_not_allowed"
    assert "no tags at all" in failed.reason


def test_an_empty_tag_value_can_be_required():
    raw = instance(Tags=[{"Key": "canary", "Value": ""}])
    [result] = evaluate(rule(aws_tags={"canary": ("",)}), raw, "")
    assert "canary=" in result.detail


# --- IMDS -------------------------------------------------------------------------------------


def metadata(**options: Any) -> dict[str, Any]:
    return instance(MetadataOptions={**INSTANCE["MetadataOptions"], **options})


def test_imdsv2_only_passes_require_imdsv2():
    [result] = evaluate(rule(require_imdsv2=True), instance(), "")
    assert result.name == "condition:require_imdsv2"


def test_an_instance_that_still_answers_imdsv1_is_refused():
    failed = refusal(rule(require_imdsv2=True), metadata(HttpTokens="optional"))
    assert failed.code == "instance_imdsv1_allowed"
    assert "'optional'" in failed.reason


def test_metadata_options_still_being_applied_are_not_trusted():
    failed = refusal(rule(require_imdsv2=True), metadata(State="pending"))
    assert failed.code == "instance_imdsv1_allowed"
    assert "not applied" in failed.reason


def test_an_answer_without_metadata_options_fails_closed():
    failed = refusal(rule(require_imdsv2=True), instance(MetadataOptions=None))
    assert failed.code == "instance_imdsv1_allowed"
    assert "reported no MetadataOptions" in failed.reason


@pytest.mark.parametrize(("hops", "limit"), [(1, 1), (1, 2), (2, 2)])
def test_a_hop_limit_at_or_below_the_maximum_passes(hops, limit):
    [result] = evaluate(rule(max_imds_hop_limit=limit), metadata(HttpPutResponseHopLimit=hops), "")
    assert f"{hops} is at most {limit}" in result.detail


def test_a_hop_limit_above_the_maximum_is_refused():
    failed = refusal(rule(max_imds_hop_limit=1), metadata(HttpPutResponseHopLimit=2))
    assert failed.code == "instance_imds_hop_limit_too_high"
    assert "HttpPutResponseHopLimit 2" in failed.reason


@pytest.mark.parametrize("hops", [None, "1", True])
def test_a_missing_or_odd_hop_limit_fails_closed(hops):
    options = {
        k: v for k, v in INSTANCE["MetadataOptions"].items() if k != "HttpPutResponseHopLimit"
    }
    if hops is not None:
        options["HttpPutResponseHopLimit"] = hops
    failed = refusal(rule(max_imds_hop_limit=64), instance(MetadataOptions=options))
    assert failed.code == "instance_imds_hop_limit_too_high"
    assert "no usable HttpPutResponseHopLimit" in failed.reason


# --- source address ---------------------------------------------------------------------------


def test_instance_addresses_gathers_every_private_public_and_ipv6_address():
    found = {str(address): kind for address, kind in instance_addresses(INSTANCE).items()}
    assert found == {
        "10.1.1.4": "private",
        "54.214.108.84": "public",
        "10.1.1.9": "private",
        "3.5.140.2": "public",
        "2600:1f14:abc:de00::10": "IPv6",
        "10.1.2.7": "private",
    }


@pytest.mark.parametrize(
    ("source", "kind"),
    [
        ("10.1.1.4", "private"),
        ("54.214.108.84", "public"),
        ("10.1.1.9", "private"),
        ("3.5.140.2", "public"),
        ("10.1.2.7", "private"),
        ("2600:1f14:abc:de00::10", "IPv6"),
        ("::ffff:10.1.1.4", "private"),
    ],
)
def test_a_request_from_one_of_the_instances_addresses_passes(source, kind):
    [result] = evaluate(rule(require_source_ip_match=True), instance(), source)
    assert f"the instance's {kind} address" in result.detail


def test_a_request_from_another_address_is_refused():
    failed = refusal(rule(require_source_ip_match=True), instance(), "203.0.113.9")
    assert failed.code == "source_ip_mismatch"
    assert "203.0.113.9" in failed.reason and "10.1.1.4 (private)" in failed.reason
    assert "JOINADMIN_TRUSTED_PROXIES" in failed.reason


@pytest.mark.parametrize("source", ["", "unknown", "10.1.1.4, 10.0.0.1"])
def test_a_source_that_is_not_an_address_fails_closed(source):
    failed = refusal(rule(require_source_ip_match=True), instance(), source)
    assert failed.code == "source_ip_mismatch"


def test_an_answer_without_any_address_fails_closed():
    raw = instance(PrivateIpAddress=None, PublicIpAddress=None, NetworkInterfaces=None)
    failed = refusal(rule(require_source_ip_match=True), raw, "10.1.1.4")
    assert failed.code == "source_ip_mismatch"
    assert "reported no address" in failed.reason
