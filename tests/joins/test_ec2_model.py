"""EC2's description trimmed for the join (joins/ec2_model.py): the members kept are the ones
the join reads, and they parse exactly as with the full description (moto, in process)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from moto import mock_aws

from joins import ec2_model
from joins.aws import Ec2Lookup
from joins.conditions import evaluate
from tests.joins.conftest import IMAGE_ID
from tests.joins.test_conditions import INSTANCE, rule

REGION = "us-west-2"


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": REGION,
        "AWS_EC2_METADATA_DISABLED": "true",
    }.items():
        monkeypatch.setenv(name, value)
    with mock_aws():
        yield


def _rich_instance() -> str:
    """An instance with the members the conditions read: subnet, groups, profile, tags,
    metadata options."""
    ec2 = boto3.client("ec2", region_name=REGION)
    vpc = ec2.create_vpc(CidrBlock="10.1.0.0/16")["Vpc"]["VpcId"]
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.1.1.0/24")["Subnet"]["SubnetId"]
    groups = [
        ec2.create_security_group(GroupName=name, Description=name, VpcId=vpc)["GroupId"]
        for name in ("web", "ssh")
    ]
    profile = boto3.client("iam", region_name=REGION).create_instance_profile(
        InstanceProfileName="web-servers", Path="/apps/"
    )["InstanceProfile"]["Arn"]
    answer = ec2.run_instances(
        ImageId=IMAGE_ID,
        MinCount=1,
        MaxCount=1,
        SubnetId=subnet,
        SecurityGroupIds=groups,
        IamInstanceProfile={"Arn": profile},
        TagSpecifications=[
            {"ResourceType": "instance", "Tags": [{"Key": "env", "Value": "production"}]}
        ],
        MetadataOptions={"HttpTokens": "required", "HttpPutResponseHopLimit": 1},
    )
    return answer["Instances"][0]["InstanceId"]


def test_the_kept_members_parse_as_with_the_full_description(aws: None) -> None:
    instance_id = _rich_instance()
    full = boto3.client("ec2", region_name=REGION).describe_instances(InstanceIds=[instance_id])
    everything = full["Reservations"][0]["Instances"][0]

    ours = Ec2Lookup().describe(region=REGION, instance_ids=[instance_id])[instance_id].raw

    kept = {name: value for name, value in everything.items() if name in ec2_model.INSTANCE_MEMBERS}
    assert ours == kept
    # The answer had more than the join reads, and what the conditions check is there.
    assert len(everything) > len(ours)
    for name in ("VpcId", "SubnetId", "SecurityGroups", "IamInstanceProfile", "Tags", "ImageId"):
        assert ours[name], name
    assert ours["State"]["Name"] == "running"


class _Reads(dict):  # type: ignore[type-arg]
    """An instance answer that records which of its members are read."""

    def __init__(self, data: dict[str, Any]) -> None:
        super().__init__(data)
        self.read: set[str] = set()

    def get(self, key: str, default: Any = None) -> Any:
        self.read.add(key)
        return super().get(key, default)

    def __getitem__(self, key: str) -> Any:
        self.read.add(key)
        return super().__getitem__(key)


def test_every_member_the_conditions_read_is_kept() -> None:
    every_condition = rule(
        aws_vpc_ids=(INSTANCE["VpcId"],),
        aws_subnet_ids=(INSTANCE["SubnetId"],),
        aws_ami_ids=(INSTANCE["ImageId"],),
        aws_instance_profile_arns=(INSTANCE["IamInstanceProfile"]["Arn"],),
        aws_security_group_ids=(INSTANCE["SecurityGroups"][0]["GroupId"],),
        aws_tags={"env": ("production",)},
        require_imdsv2=True,
        max_imds_hop_limit=1,
        require_source_ip_match=True,
    )
    answer = _Reads(INSTANCE)

    evaluate(every_condition, answer, "10.1.1.4")

    assert answer.read  # the conditions did read the answer
    assert answer.read <= ec2_model.INSTANCE_MEMBERS


def test_a_description_without_a_member_the_join_reads_is_refused() -> None:
    model = {"shapes": {"Instance": {"type": "structure", "members": {"InstanceId": {}}}}}
    with pytest.raises(ValueError, match="State"):
        ec2_model.trimmed(model)


def test_the_cached_full_description_is_left_as_it_was(aws: None) -> None:
    lookup = Ec2Lookup()
    lookup.preload()
    loader = lookup._session._session.get_component("data_loader")
    ours = loader.load_service_model("ec2", "service-2")
    assert set(ours["shapes"]["Instance"]["members"]) == ec2_model.INSTANCE_MEMBERS
    # Another session of the process still loads the whole of it.
    other = boto3.session.Session()._session.get_service_model("ec2")
    assert len(other.shape_for("Instance").members) > len(ec2_model.INSTANCE_MEMBERS) + 20
