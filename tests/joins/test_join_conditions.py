"""Allow-rule conditions through the join endpoint, against instances configured in moto.

Every condition is shown passing and refusing with its own code, its exact reason in the audit
trace, and without an AWS call of its own.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any

import boto3
import pytest
from django.core.cache import caches

from joins import trust
from joins.coalesce import state_cache_key
from joins.models import Host, JoinAttempt
from tests.joins.conftest import (
    ACCOUNT,
    IMAGE_ID,
    OTHER_ACCOUNT,
    OTHER_ROLE,
    Instance,
    make_token,
    post_join,
)

pytestmark = pytest.mark.django_db(transaction=True)

REGION = "us-west-2"
OTHER_ID = {
    "aws_vpc_ids": "vpc-0fffffffffffffff0",
    "aws_subnet_ids": "subnet-0fffffffffffffff0",
    "aws_ami_ids": "ami-0fffffffffffffff0",
    "aws_security_group_ids": "sg-0fffffffffffffff0",
}


@dataclass
class Network:
    """A VPC with a subnet, two security groups and an instance profile, made in moto."""

    vpc_id: str
    subnet_id: str
    web_group: str
    ssh_group: str
    profile_arn: str


@pytest.fixture
def network(world) -> Network:  # type: ignore[no-untyped-def]
    ec2 = world.ec2(REGION)
    vpc_id = ec2.create_vpc(CidrBlock="10.1.0.0/16")["Vpc"]["VpcId"]
    subnet_id = ec2.create_subnet(VpcId=vpc_id, CidrBlock="10.1.1.0/24")["Subnet"]["SubnetId"]
    web = ec2.create_security_group(GroupName="web", Description="web", VpcId=vpc_id)["GroupId"]
    ssh = ec2.create_security_group(GroupName="ssh", Description="ssh", VpcId=vpc_id)["GroupId"]
    iam = boto3.client("iam", region_name=REGION)
    profile = iam.create_instance_profile(InstanceProfileName="web-servers", Path="/apps/")
    return Network(vpc_id, subnet_id, web, ssh, profile["InstanceProfile"]["Arn"])


def launch(world, network: Network, **options: Any) -> Instance:  # type: ignore[no-untyped-def]
    """An instance in the network's subnet, both groups, the profile, IMDSv2 only, hop limit 1,
    tagged env=production; `options` override the run_instances arguments."""
    arguments: dict[str, Any] = {
        "ImageId": IMAGE_ID,
        "MinCount": 1,
        "MaxCount": 1,
        "SubnetId": network.subnet_id,
        "SecurityGroupIds": [network.web_group, network.ssh_group],
        "IamInstanceProfile": {"Arn": network.profile_arn},
        "TagSpecifications": [
            {"ResourceType": "instance", "Tags": [{"Key": "env", "Value": "production"}]}
        ],
        "MetadataOptions": {"HttpTokens": "required", "HttpPutResponseHopLimit": 1},
    }
    arguments.update(options)
    answer = world.ec2(REGION).run_instances(**arguments)
    return Instance(ACCOUNT, REGION, answer["Instances"][0]["InstanceId"])


def described(world, instance: Instance) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    answer = world.ec2(instance.region).describe_instances(InstanceIds=[instance.instance_id])
    return answer["Reservations"][0]["Instances"][0]


def token_with(**conditions: Any) -> None:
    make_token(allow=[{"aws_account": ACCOUNT, "aws_regions": [REGION], **conditions}])


def join(client, world, instance: Instance, **extra: Any):  # type: ignore[no-untyped-def]
    return post_join(client, world.body("ec2-token", world.document(instance)), **extra)


def only_attempt() -> JoinAttempt:
    [attempt] = JoinAttempt.objects.all()
    return attempt


def assert_joined(response) -> JoinAttempt:  # type: ignore[no-untyped-def]
    assert response.status_code == 200, response.content
    attempt = only_attempt()
    assert attempt.outcome == "allowed"
    assert Host.objects.count() == 1
    return attempt


def assert_refused(response, code: str) -> JoinAttempt:  # type: ignore[no-untyped-def]
    assert response.status_code == 403, response.content
    body = response.json()
    assert body["error"] == code
    attempt = only_attempt()
    assert attempt.error == code and attempt.outcome == "denied"
    assert body["join_attempt_id"] == str(attempt.pk)
    assert Host.objects.count() == 0
    last = attempt.checks[-1]
    assert last["ok"] is False and last["detail"] == attempt.reason
    return attempt


def check_names(attempt: JoinAttempt) -> list[str]:
    return [check["name"] for check in attempt.checks]


# --- every condition passes -------------------------------------------------------------------


def test_an_instance_meeting_every_condition_joins_with_one_trace_entry_per_condition(
    client, world, network, at_launch
):
    instance = launch(world, network)
    raw = described(world, instance)
    token_with(
        aws_vpc_ids=[network.vpc_id],
        aws_subnet_ids=[network.subnet_id],
        aws_ami_ids=[IMAGE_ID],
        aws_instance_profile_arns=[f"arn:aws:iam::{ACCOUNT}:instance-profile/apps/*"],
        aws_security_group_ids=[network.web_group, network.ssh_group],
        aws_tags={"env": ["staging", "production"]},
        require_imdsv2=True,
        max_imds_hop_limit=1,
        require_source_ip_match=True,
    )

    attempt = assert_joined(join(client, world, instance, REMOTE_ADDR=raw["PrivateIpAddress"]))

    assert check_names(attempt)[-11:] == [
        "instance",
        "condition:aws_vpc_ids",
        "condition:aws_subnet_ids",
        "condition:aws_ami_ids",
        "condition:aws_instance_profile_arns",
        "condition:aws_security_group_ids",
        "condition:aws_tags",
        "condition:require_imdsv2",
        "condition:max_imds_hop_limit",
        "condition:require_source_ip_match",
        "issue",
    ]
    assert all(check["ok"] for check in attempt.checks)


def test_conditions_make_no_aws_call_of_their_own(client, world, network, at_launch, settings):
    settings.AWS_STATE_CACHE_SECONDS = 0
    trust.reset()
    instance = launch(world, network)
    token_with(aws_vpc_ids=[network.vpc_id], aws_tags={"env": ["production"]}, require_imdsv2=True)

    assert_joined(join(client, world, instance))

    assert trust.instance_lookup().stats().calls == 1


def test_a_token_without_conditions_traces_exactly_as_before(client, world, network, at_launch):
    instance = launch(world, network)
    make_token()
    attempt = assert_joined(join(client, world, instance))
    assert not any(name.startswith("condition:") for name in check_names(attempt))


# --- VPC, subnet, AMI, security groups --------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "code"),
    [
        ("aws_vpc_ids", "instance_vpc_not_allowed"),
        ("aws_subnet_ids", "instance_subnet_not_allowed"),
        ("aws_ami_ids", "instance_ami_not_allowed"),
        ("aws_security_group_ids", "instance_security_group_not_allowed"),
    ],
)
def test_an_instance_outside_the_listed_ids_is_refused(
    client, world, network, at_launch, field, code
):
    instance = launch(world, network)
    token_with(**{field: [OTHER_ID[field]]})

    attempt = assert_refused(join(client, world, instance), code)

    assert attempt.checks[-1]["name"] == f"condition:{field}"
    assert OTHER_ID[field] in attempt.reason
    assert OTHER_ID[field] not in attempt.message


@pytest.mark.parametrize("field", ["aws_vpc_ids", "aws_subnet_ids", "aws_ami_ids"])
def test_an_instance_with_a_listed_id_passes(client, world, network, at_launch, field):
    instance = launch(world, network)
    own = {"aws_vpc_ids": network.vpc_id, "aws_subnet_ids": network.subnet_id}.get(field, IMAGE_ID)
    token_with(**{field: [OTHER_ID[field], own]})

    attempt = assert_joined(join(client, world, instance))

    [entry] = [c for c in attempt.checks if c["name"] == f"condition:{field}"]
    assert own in entry["detail"]


def test_an_instance_in_only_one_of_two_required_groups_is_refused(
    client, world, network, at_launch
):
    instance = launch(world, network, SecurityGroupIds=[network.web_group])
    token_with(aws_security_group_ids=[network.web_group, network.ssh_group])

    attempt = assert_refused(join(client, world, instance), "instance_security_group_not_allowed")

    assert network.ssh_group in attempt.reason


# --- instance profile -------------------------------------------------------------------------


def test_the_exact_instance_profile_arn_passes(client, world, network, at_launch):
    instance = launch(world, network)
    token_with(aws_instance_profile_arns=[network.profile_arn])
    assert_joined(join(client, world, instance))


def test_another_instance_profile_is_refused(client, world, network, at_launch):
    instance = launch(world, network)
    token_with(aws_instance_profile_arns=[f"arn:aws:iam::{ACCOUNT}:instance-profile/db/*"])
    attempt = assert_refused(join(client, world, instance), "instance_profile_not_allowed")
    assert network.profile_arn in attempt.reason


def test_an_instance_without_a_profile_is_refused(client, world, network, at_launch):
    instance = launch(world, network, IamInstanceProfile={})
    raw = described(world, instance)
    assert "IamInstanceProfile" not in raw or not raw["IamInstanceProfile"]
    token_with(aws_instance_profile_arns=[network.profile_arn])
    attempt = assert_refused(join(client, world, instance), "instance_profile_not_allowed")
    assert "no instance profile" in attempt.reason


# --- tags -------------------------------------------------------------------------------------


def test_an_instance_with_an_allowed_tag_value_passes(client, world, network, at_launch):
    instance = launch(world, network)
    token_with(aws_tags={"env": ["production"]})
    attempt = assert_joined(join(client, world, instance))
    assert "env=production" in attempt.checks[-2]["detail"]


def test_an_instance_with_another_tag_value_is_refused(client, world, network, at_launch):
    instance = launch(world, network)
    token_with(aws_tags={"env": ["staging"]})
    attempt = assert_refused(join(client, world, instance), "instance_tags_not_allowed")
    assert "'env' = 'production'" in attempt.reason


def test_an_instance_without_the_tag_is_refused(client, world, network, at_launch):
    instance = launch(world, network, TagSpecifications=[])
    token_with(aws_tags={"env": ["production"]})
    attempt = assert_refused(join(client, world, instance), "instance_tags_not_allowed")
    assert "no tag 'env'" in attempt.reason


# --- IMDS -------------------------------------------------------------------------------------


def test_an_imdsv2_only_instance_passes_require_imdsv2(client, world, network, at_launch):
    instance = launch(world, network)
    token_with(require_imdsv2=True)
    assert_joined(join(client, world, instance))


def test_an_instance_answering_imdsv1_is_refused(client, world, network, at_launch):
    instance = launch(world, network, MetadataOptions={"HttpTokens": "optional"})
    token_with(require_imdsv2=True)
    attempt = assert_refused(join(client, world, instance), "instance_imdsv1_allowed")
    assert "HttpTokens 'optional'" in attempt.reason


def test_a_hop_limit_within_the_maximum_passes(client, world, network, at_launch):
    instance = launch(world, network, MetadataOptions={"HttpPutResponseHopLimit": 2})
    token_with(max_imds_hop_limit=2)
    assert_joined(join(client, world, instance))


def test_a_hop_limit_reaching_containers_is_refused(client, world, network, at_launch):
    instance = launch(world, network, MetadataOptions={"HttpPutResponseHopLimit": 2})
    token_with(max_imds_hop_limit=1)
    attempt = assert_refused(join(client, world, instance), "instance_imds_hop_limit_too_high")
    assert "HttpPutResponseHopLimit 2" in attempt.reason


# --- source address ---------------------------------------------------------------------------


def test_a_request_from_the_instances_private_address_passes(client, world, network, at_launch):
    instance = launch(world, network)
    private = described(world, instance)["PrivateIpAddress"]
    token_with(require_source_ip_match=True)
    attempt = assert_joined(join(client, world, instance, REMOTE_ADDR=private))
    assert f"came from {private}, the instance's private address" in attempt.checks[-2]["detail"]


def test_a_request_from_the_instances_public_address_passes(client, world, at_launch):
    instance = world.launch()  # the default subnet gives it a public address
    public = described(world, instance)["PublicIpAddress"]
    token_with(require_source_ip_match=True)
    attempt = assert_joined(join(client, world, instance, REMOTE_ADDR=public))
    assert "public address" in attempt.checks[-2]["detail"]


def test_a_request_from_elsewhere_is_refused(client, world, network, at_launch):
    instance = launch(world, network)
    token_with(require_source_ip_match=True)
    attempt = assert_refused(
        join(client, world, instance, REMOTE_ADDR="203.0.113.9"), "source_ip_mismatch"
    )
    assert "203.0.113.9" in attempt.reason
    assert described(world, instance)["PrivateIpAddress"] in attempt.reason


def test_x_forwarded_for_is_ignored_without_a_trusted_proxy(client, world, network, at_launch):
    instance = launch(world, network)
    private = described(world, instance)["PrivateIpAddress"]
    token_with(require_source_ip_match=True)

    response = join(client, world, instance, HTTP_X_FORWARDED_FOR=private)

    attempt = assert_refused(response, "source_ip_mismatch")
    assert "came from 127.0.0.1" in attempt.reason


def test_x_forwarded_for_from_a_trusted_proxy_names_the_source(
    client, world, network, at_launch, settings
):
    settings.TRUSTED_PROXIES = [ipaddress.ip_network("127.0.0.0/8")]
    instance = launch(world, network)
    private = described(world, instance)["PrivateIpAddress"]
    token_with(require_source_ip_match=True)

    response = join(client, world, instance, HTTP_X_FORWARDED_FOR=f"198.51.100.1, {private}")

    attempt = assert_joined(response)
    assert attempt.remote_addr == private


def test_a_trusted_proxy_forwarding_another_client_is_refused(
    client, world, network, at_launch, settings
):
    settings.TRUSTED_PROXIES = [ipaddress.ip_network("127.0.0.0/8")]
    instance = launch(world, network)
    private = described(world, instance)["PrivateIpAddress"]
    token_with(require_source_ip_match=True)

    # A client may write anything on the left of the chain; only the proxy's entry counts.
    response = join(client, world, instance, HTTP_X_FORWARDED_FOR=f"{private}, 198.51.100.1")

    attempt = assert_refused(response, "source_ip_mismatch")
    assert "came from 198.51.100.1" in attempt.reason


# --- which rule, and in which order -----------------------------------------------------------


def test_only_the_first_matching_rules_conditions_count(client, world, network, at_launch):
    instance = launch(world, network)
    make_token(
        allow=[
            {"aws_account": ACCOUNT, "aws_vpc_ids": [OTHER_ID["aws_vpc_ids"]]},
            {"aws_account": ACCOUNT},
        ]
    )
    attempt = assert_refused(join(client, world, instance), "instance_vpc_not_allowed")
    assert attempt.matched_rule == 0


def test_conditions_of_a_rule_that_does_not_match_are_not_checked(
    client, world, network, at_launch
):
    instance = launch(world, network)
    make_token(
        allow=[
            {"aws_role": OTHER_ROLE, "aws_vpc_ids": [OTHER_ID["aws_vpc_ids"]]},
            {"aws_account": ACCOUNT, "aws_vpc_ids": [network.vpc_id]},
        ]
    )
    attempt = assert_joined(join(client, world, instance))
    assert attempt.matched_rule == 1
    assert OTHER_ACCOUNT not in str(attempt.checks)


def test_conditions_run_only_after_describe_instances_found_the_instance_running(
    client, world, network, at_launch
):
    instance = launch(world, network)
    world.ec2(REGION).stop_instances(InstanceIds=[instance.instance_id])
    token_with(aws_vpc_ids=[OTHER_ID["aws_vpc_ids"]])

    response = join(client, world, instance)

    assert response.json()["error"] == "instance_not_running"
    assert not any(name.startswith("condition:") for name in check_names(only_attempt()))


def test_the_trace_keeps_the_conditions_that_held_before_the_refusal(
    client, world, network, at_launch
):
    instance = launch(world, network, MetadataOptions={"HttpTokens": "optional"})
    token_with(aws_vpc_ids=[network.vpc_id], require_imdsv2=True, require_source_ip_match=True)

    attempt = assert_refused(join(client, world, instance), "instance_imdsv1_allowed")

    tail = [(c["name"], c["ok"]) for c in attempt.checks[-3:]]
    assert tail == [
        ("instance", True),
        ("condition:aws_vpc_ids", True),
        ("condition:require_imdsv2", False),
    ]


def test_a_cached_running_confirmation_cannot_pass_conditions(
    client, world, network, at_launch, settings
):
    settings.AWS_STATE_CACHE_SECONDS = 5  # as with a shared cache (the default without one: 0)
    trust.reset()
    instance = launch(world, network)
    token_with(aws_vpc_ids=[network.vpc_id])
    caches["default"].set(state_cache_key(REGION, "", instance.instance_id), "running", 60)

    response = join(client, world, instance)

    assert response.status_code == 503
    assert response["Retry-After"]
    attempt = only_attempt()
    assert attempt.error == "aws_unavailable" and attempt.outcome == "error"
    assert "details are not at hand" in attempt.reason
    assert Host.objects.count() == 0
