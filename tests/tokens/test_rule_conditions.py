"""Allow-rule conditions in the token resource: validation with exact field paths, and every
format (tctl YAML, JSON, Kubernetes, Terraform) carrying them without loss."""

from __future__ import annotations

import copy
import json
import shutil
import subprocess
from typing import Any

import hcl2
import pytest
import yaml
from hcl2.utils import SerializationOptions
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tokens.codecs import parse_tokens, to_json, to_json_list, to_kubernetes, to_terraform, to_yaml
from tokens.constants import CONDITION_FIELDS, MAX_CONDITION_VALUES, MAX_TAG_CONDITIONS
from tokens.models import Token
from tokens.resource import (
    AllowRule,
    ResourceError,
    TagConditions,
    TokenResource,
    validate_resource,
)

ACCOUNT = "111111111111"
VPC = "vpc-0a1b2c3d4e5f60718"
PROFILE = f"arn:aws:iam::{ACCOUNT}:instance-profile/apps/web-servers"

FULL_RULE: dict[str, Any] = {
    "aws_account": ACCOUNT,
    "aws_regions": ["us-west-2"],
    "aws_vpc_ids": [VPC, "vpc-0a1b2c3d"],
    "aws_subnet_ids": ["subnet-0a1b2c3d4e5f60718"],
    "aws_ami_ids": ["ami-0a1b2c3d4e5f60718"],
    "aws_instance_profile_arns": [PROFILE, f"arn:aws:iam::{ACCOUNT}:instance-profile/batch-*"],
    "aws_security_group_ids": ["sg-0a1b2c3d4e5f60718", "sg-08f7e6d5c4b3a2910"],
    "aws_tags": {"env": ["production", "staging"], "aws:autoscaling:groupName": ["web"]},
    "require_imdsv2": True,
    "max_imds_hop_limit": 1,
    "require_source_ip_match": True,
}


def token(*rules: dict[str, Any]) -> dict[str, Any]:
    return {
        "kind": "token",
        "version": "v2",
        "metadata": {"name": "ec2-token"},
        "spec": {"roles": ["Node"], "join_method": "ec2", "allow": list(rules)},
    }


def problems(*rules: dict[str, Any]) -> dict[str, str]:
    """Field path -> message of every problem of a token with these rules."""
    with pytest.raises(ResourceError) as caught:
        validate_resource(token(*rules))
    return {detail.field: detail.message for detail in caught.value.details}


def with_rule(**fields: Any) -> dict[str, Any]:
    return {"aws_account": ACCOUNT, "aws_regions": ["us-west-2"], **fields}


# --- accepted ---------------------------------------------------------------------------------


def test_a_rule_with_every_condition_is_accepted_as_written():
    [rule] = validate_resource(token(FULL_RULE)).allow

    assert rule.aws_vpc_ids == (VPC, "vpc-0a1b2c3d")
    assert rule.aws_subnet_ids == ("subnet-0a1b2c3d4e5f60718",)
    assert rule.aws_ami_ids == ("ami-0a1b2c3d4e5f60718",)
    assert rule.aws_instance_profile_arns == tuple(FULL_RULE["aws_instance_profile_arns"])
    assert rule.aws_security_group_ids == ("sg-0a1b2c3d4e5f60718", "sg-08f7e6d5c4b3a2910")
    assert rule.aws_tags == {
        "env": ("production", "staging"),
        "aws:autoscaling:groupName": ("web",),
    }
    assert rule.require_imdsv2 is True
    assert rule.max_imds_hop_limit == 1
    assert rule.require_source_ip_match is True
    assert rule.conditions == CONDITION_FIELDS


def test_a_plain_teleport_rule_has_no_conditions_and_writes_only_teleports_fields():
    [rule] = validate_resource(token({"aws_account": ACCOUNT, "aws_regions": ["us-west-2"]})).allow

    assert rule.conditions == ()
    assert rule.to_dict() == {"aws_account": ACCOUNT, "aws_regions": ["us-west-2"]}


def test_false_flags_mean_the_same_as_absent_ones_and_are_not_written():
    plain = validate_resource(token(with_rule()))
    explicit = validate_resource(
        token(with_rule(require_imdsv2=False, require_source_ip_match=False))
    )

    assert explicit == plain
    assert explicit.allow[0].to_dict() == {"aws_account": ACCOUNT, "aws_regions": ["us-west-2"]}


def test_to_dict_writes_only_the_conditions_that_are_set():
    rule = AllowRule(aws_account=ACCOUNT, aws_ami_ids=("ami-0a1b2c3d",), max_imds_hop_limit=2)
    assert rule.to_dict() == {
        "aws_account": ACCOUNT,
        "aws_ami_ids": ["ami-0a1b2c3d"],
        "max_imds_hop_limit": 2,
    }


def test_the_order_of_tag_keys_does_not_make_a_different_rule():
    one = with_rule(aws_tags={"env": ["prod"], "team": ["web"]})
    two = with_rule(aws_tags={"team": ["web"], "env": ["prod"]})
    assert validate_resource(token(one)) == validate_resource(token(two))
    assert "same rule as spec.allow[0]" in problems(one, two)["spec.allow[1]"]


def test_rules_differing_only_in_conditions_are_different_rules():
    resource = validate_resource(token(with_rule(aws_vpc_ids=[VPC]), with_rule()))
    assert len(resource.allow) == 2


def test_a_role_only_rule_takes_profiles_of_the_roles_account():
    role = f"arn:aws:iam::{ACCOUNT}:role/describe"
    [rule] = validate_resource(
        token({"aws_role": role, "aws_instance_profile_arns": [PROFILE]})
    ).allow
    assert rule.aws_instance_profile_arns == (PROFILE,)


def test_an_instance_profile_prefix_may_cover_a_whole_account():
    wildcard = f"arn:aws:iam::{ACCOUNT}:instance-profile/*"
    [rule] = validate_resource(token(with_rule(aws_instance_profile_arns=[wildcard]))).allow
    assert rule.aws_instance_profile_arns == (wildcard,)


def test_aws_reserved_tag_keys_and_empty_values_are_accepted():
    rule = with_rule(aws_tags={"aws:cloudformation:stack-name": ["web"], "canary": [""]})
    [parsed] = validate_resource(token(rule)).allow
    assert parsed.aws_tags["canary"] == ("",)


# --- refused, each with its exact field path --------------------------------------------------

REFUSALS = [
    ("aws_vpc_ids", "vpc-0a1b2c3d", "spec.allow[0].aws_vpc_ids", "must be a list of VPC ids"),
    ("aws_vpc_ids", [], "spec.allow[0].aws_vpc_ids", "is empty"),
    ("aws_vpc_ids", ["vpc-123"], "spec.allow[0].aws_vpc_ids[0]", "8 or 17 hexadecimal digits"),
    ("aws_vpc_ids", ["VPC-0A1B2C3D"], "spec.allow[0].aws_vpc_ids[0]", "lower case"),
    (
        "aws_vpc_ids",
        ["subnet-0a1b2c3d"],
        "spec.allow[0].aws_vpc_ids[0]",
        "is a subnet id, not a VPC id; move it to aws_subnet_ids",
    ),
    ("aws_vpc_ids", [VPC, VPC], "spec.allow[0].aws_vpc_ids[1]", "duplicate"),
    ("aws_vpc_ids", [7], "spec.allow[0].aws_vpc_ids[0]", "must be a string"),
    ("aws_subnet_ids", ["subnet-xyz"], "spec.allow[0].aws_subnet_ids[0]", "not a subnet id"),
    ("aws_ami_ids", ["ami-0a1b2c3d4e5f6071"], "spec.allow[0].aws_ami_ids[0]", "is not an AMI id"),
    (
        "aws_security_group_ids",
        ["web-servers"],
        "spec.allow[0].aws_security_group_ids[0]",
        "not a security group id",
    ),
    (
        "aws_security_group_ids",
        ["sg-0a1b2c3d"] * 2,
        "spec.allow[0].aws_security_group_ids[1]",
        "duplicate",
    ),
    (
        "aws_vpc_ids",
        [f"vpc-{i:08x}" for i in range(MAX_CONDITION_VALUES + 1)],
        "spec.allow[0].aws_vpc_ids",
        f"use at most {MAX_CONDITION_VALUES}",
    ),
    (
        "aws_instance_profile_arns",
        [f"arn:aws:iam::{ACCOUNT}:role/web"],
        "spec.allow[0].aws_instance_profile_arns[0]",
        "names an IAM role, not an instance profile",
    ),
    (
        "aws_instance_profile_arns",
        [f"arn:aws:iam::{ACCOUNT}:instance-profile/*/web"],
        "spec.allow[0].aws_instance_profile_arns[0]",
        "as the last character",
    ),
    (
        "aws_instance_profile_arns",
        ["arn:aws:iam::*:instance-profile/web"],
        "spec.allow[0].aws_instance_profile_arns[0]",
        "is not 12 digits",
    ),
    (
        "aws_instance_profile_arns",
        ["arn:aws:iam::222222222222:instance-profile/web"],
        "spec.allow[0].aws_instance_profile_arns[0]",
        "in account 222222222222 but the rule admits account 111111111111",
    ),
    (
        "aws_instance_profile_arns",
        [f"arn:aws-cn:iam::{ACCOUNT}:instance-profile/web"],
        "spec.allow[0].aws_instance_profile_arns[0]",
        "partition aws-cn",
    ),
    (
        "aws_instance_profile_arns",
        [f"arn:aws:iam:us-west-2:{ACCOUNT}:instance-profile/web"],
        "spec.allow[0].aws_instance_profile_arns[0]",
        "IAM ARNs have no region",
    ),
    (
        "aws_instance_profile_arns",
        [f"arn:aws:iam::{ACCOUNT}:instance-profile/we b"],
        "spec.allow[0].aws_instance_profile_arns[0]",
        "invalid path or name",
    ),
    ("aws_tags", ["env=prod"], "spec.allow[0].aws_tags", "must be a mapping"),
    ("aws_tags", {}, "spec.allow[0].aws_tags", "is empty"),
    ("aws_tags", {"env": "prod"}, 'spec.allow[0].aws_tags["env"]', "write env: [prod]"),
    ("aws_tags", {"env": []}, 'spec.allow[0].aws_tags["env"]', "at least one allowed value"),
    ("aws_tags", {"env": [True]}, 'spec.allow[0].aws_tags["env"][0]', "put it in quotes"),
    ("aws_tags", {"env": ["a", "a"]}, 'spec.allow[0].aws_tags["env"][1]', "duplicate"),
    ("aws_tags", {"k" * 129: ["a"]}, "spec.allow[0].aws_tags", "1 to 128 characters"),
    ("aws_tags", {"env": ["v" * 257]}, 'spec.allow[0].aws_tags["env"][0]', "at most 256"),
    ("aws_tags", {"env": ["a\nb"]}, 'spec.allow[0].aws_tags["env"][0]', "control characters"),
    (
        "aws_tags",
        {f"k{i}": ["v"] for i in range(MAX_TAG_CONDITIONS + 1)},
        "spec.allow[0].aws_tags",
        f"use at most {MAX_TAG_CONDITIONS}",
    ),
    ("require_imdsv2", "true", "spec.allow[0].require_imdsv2", "must be true or false"),
    ("require_imdsv2", 1, "spec.allow[0].require_imdsv2", "must be true or false"),
    ("require_source_ip_match", "yes", "spec.allow[0].require_source_ip_match", "true or false"),
    ("max_imds_hop_limit", 0, "spec.allow[0].max_imds_hop_limit", "outside AWS's hop limits"),
    ("max_imds_hop_limit", 65, "spec.allow[0].max_imds_hop_limit", "outside AWS's hop limits"),
    ("max_imds_hop_limit", "1", "spec.allow[0].max_imds_hop_limit", "must be a whole number"),
    ("max_imds_hop_limit", 1.0, "spec.allow[0].max_imds_hop_limit", "must be a whole number"),
    ("max_imds_hop_limit", True, "spec.allow[0].max_imds_hop_limit", "must be a whole number"),
]


@pytest.mark.parametrize(("field", "value", "path", "fragment"), REFUSALS)
def test_an_invalid_condition_is_refused_with_its_exact_field_path(field, value, path, fragment):
    found = problems(with_rule(**{field: value}))
    matching = [message for where, message in found.items() if where.startswith(path)]
    assert matching, found
    assert fragment in matching[0], matching[0]


def test_a_misspelt_condition_is_refused_as_an_unknown_field():
    found = problems(with_rule(aws_vpc_id=[VPC]))
    assert "unknown field" in found["spec.allow[0].aws_vpc_id"]
    assert "aws_vpc_ids" in found["spec.allow[0].aws_vpc_id"]


def test_every_problem_of_a_rule_is_reported_at_once():
    found = problems(with_rule(aws_vpc_ids=["x"], aws_ami_ids=["y"], max_imds_hop_limit=99))
    assert set(found) == {
        "spec.allow[0].aws_vpc_ids[0]",
        "spec.allow[0].aws_ami_ids[0]",
        "spec.allow[0].max_imds_hop_limit",
    }


def test_yaml_values_that_read_as_other_types_are_refused_not_guessed():
    text = """
kind: token
version: v2
metadata: {name: t}
spec:
  roles: [Node]
  join_method: ec2
  allow:
  - aws_account: "111111111111"
    aws_tags: {enabled: [yes], build: [123]}
"""
    with pytest.raises(ResourceError) as caught:
        parse_tokens(text)
    fields = {detail.field for detail in caught.value.details}
    assert fields == {'spec.allow[0].aws_tags["enabled"][0]', 'spec.allow[0].aws_tags["build"][0]'}


# --- every format round-trips -----------------------------------------------------------------

FULL = validate_resource(token(FULL_RULE, {"aws_account": "222222222222"}))


def terraform_body(text: str) -> dict[str, Any]:
    options = SerializationOptions(
        with_comments=False, explicit_blocks=False, strip_string_quotes=True
    )
    [block] = hcl2.loads(text, serialization_options=options)["resource"]
    [named] = block["teleport_provision_token"].values()
    return named


def from_terraform(text: str) -> TokenResource:
    body = terraform_body(text)
    return validate_resource({"kind": "token", **body})


@pytest.mark.parametrize(
    "encode",
    [lambda r: to_yaml([r]), to_json, lambda r: to_json_list([r]), to_kubernetes],
    ids=["yaml", "json", "json-list", "kubernetes"],
)
def test_every_condition_survives_a_round_trip(encode):
    assert parse_tokens(encode(FULL)) == [FULL]


def test_every_condition_survives_a_terraform_round_trip():
    assert from_terraform(to_terraform(FULL)) == FULL


def test_the_terraform_export_writes_flags_and_numbers_as_hcl_values_and_tag_keys_quoted():
    text = to_terraform(FULL)
    assert "require_imdsv2          = true\n" in text
    assert "max_imds_hop_limit      = 1\n" in text
    assert '"aws:autoscaling:groupName" = ["web"]' in text
    assert terraform_body(text)["spec"]["allow"][0]["require_imdsv2"] is True


@pytest.mark.skipif(shutil.which("terraform") is None, reason="terraform is not installed")
def test_the_terraform_export_with_conditions_is_formatted_as_terraform_fmt_would(tmp_path):
    path = tmp_path / "token.tf"
    path.write_text(to_terraform(FULL))
    done = subprocess.run(
        ["terraform", "fmt", "-check", "-diff", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_kubernetes_manifest_carries_the_conditions_in_its_spec():
    manifest = yaml.safe_load(to_kubernetes(FULL))
    assert manifest["spec"]["allow"][0] == FULL_RULE


def test_the_json_export_writes_each_condition_as_given():
    assert json.loads(to_json(FULL))["spec"]["allow"][0] == FULL_RULE


def test_a_plain_token_exports_exactly_as_before_conditions_existed():
    plain = validate_resource(token({"aws_account": ACCOUNT, "aws_regions": ["us-west-2"]}))
    assert to_yaml([plain]) == (
        "kind: token\n"
        "version: v2\n"
        "metadata:\n"
        "  name: ec2-token\n"
        "spec:\n"
        "  roles:\n"
        "  - Node\n"
        "  join_method: ec2\n"
        "  aws_iid_ttl: 5m\n"
        "  allow:\n"
        '  - aws_account: "111111111111"\n'
        "    aws_regions:\n"
        "    - us-west-2\n"
    )


@pytest.mark.django_db
def test_a_stored_token_gives_back_every_condition():
    row = Token()
    row.apply_resource(FULL)
    row.save()
    assert Token.objects.get(pk=row.pk).to_resource() == FULL


# --- property: any valid rule with conditions, any format --------------------------------------

TAG_TEXT = st.characters(exclude_categories=("Cs", "Cc"))


def resource_ids(prefix: str) -> st.SearchStrategy[tuple[str, ...]]:
    one = st.from_regex(rf"{prefix}-([0-9a-f]{{8}}|[0-9a-f]{{17}})", fullmatch=True)
    return st.lists(one, max_size=3, unique=True).map(tuple)


@st.composite
def rules_with_conditions(draw: st.DrawFn) -> AllowRule:
    account = draw(st.from_regex(r"[0-9]{12}", fullmatch=True))
    path = draw(st.from_regex(r"([A-Za-z0-9+=,.@_-]{1,8}/){0,2}", fullmatch=True))
    name = draw(st.from_regex(r"[A-Za-z0-9+=,.@_-]{1,20}", fullmatch=True))
    star = draw(st.sampled_from(["", "*"]))
    profiles = draw(
        st.sampled_from([(), (f"arn:aws:iam::{account}:instance-profile/{path}{name}{star}",)])
    )
    tags = draw(
        st.dictionaries(
            st.text(TAG_TEXT, min_size=1, max_size=20),
            st.lists(st.text(TAG_TEXT, max_size=20), min_size=1, max_size=3, unique=True).map(
                tuple
            ),
            max_size=3,
        )
    )
    return AllowRule(
        aws_account=account,
        aws_regions=draw(st.sampled_from([(), ("us-west-2",)])),
        aws_vpc_ids=draw(resource_ids("vpc")),
        aws_subnet_ids=draw(resource_ids("subnet")),
        aws_ami_ids=draw(resource_ids("ami")),
        aws_instance_profile_arns=profiles,
        aws_security_group_ids=draw(resource_ids("sg")),
        aws_tags=TagConditions(tags),
        require_imdsv2=draw(st.booleans()),
        max_imds_hop_limit=draw(st.none() | st.integers(1, 64)),
        require_source_ip_match=draw(st.booleans()),
    )


def resource_of(rule: AllowRule) -> TokenResource:
    return TokenResource(name="t", roles=("Node",), allow=(rule,))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rule=rules_with_conditions())
def test_any_valid_rule_with_conditions_round_trips_through_every_format(rule):
    resource = resource_of(rule)
    assert validate_resource(resource.to_dict()) == resource
    for text in (to_yaml([resource]), to_json(resource), to_kubernetes(resource)):
        assert parse_tokens(text) == [resource]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rule=rules_with_conditions())
def test_any_valid_rule_with_conditions_round_trips_through_terraform(rule):
    texts = [value for values in rule.aws_tags.values() for value in values]
    # python-hcl2 cannot read back a literal `${` (see test_codecs); checked exactly elsewhere.
    if any("${" in text or "%{" in text for text in [*texts, *rule.aws_tags]):
        return
    resource = resource_of(rule)
    assert from_terraform(to_terraform(resource)) == resource


def test_validation_leaves_the_input_mapping_unchanged():
    original = copy.deepcopy(FULL_RULE)
    validate_resource(token(FULL_RULE))
    assert original == FULL_RULE
