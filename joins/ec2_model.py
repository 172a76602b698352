"""EC2's service description as the join's boto3 session loads it: an instance described by
only the members the join reads. No Django import.

Why: botocore parses a DescribeInstances answer by walking the output shape, and for every
instance it walks all 61 members of EC2's `Instance` shape whether the answer has them or not.
A join reads a dozen (its state, and what the allow-rule conditions check: joins/conditions.py).
With the shape cut down to those, the same parser reads a 100-instance answer in 1.65 ms of CPU
instead of 3.56 on the benchmark machine (bench/RESULTS.md); real answers describe each
instance at far greater length, and the elements of members that are not in the shape are
skipped unread. Everything else of the description is EC2's own, loaded by botocore: requests
are built and signed as before, and the members that remain are parsed by
botocore's code with their own types. A test holds the members read here to what the
conditions read, and their parse to that of the full description (tests/joins/test_ec2_model.py).

Only the session of `joins.aws.Ec2Lookup` loads it; boto3 sessions elsewhere are untouched.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

# The members of an instance that the join reads: `joins.aws` (InstanceId, State) and the
# conditions of `joins.conditions`.
INSTANCE_MEMBERS = frozenset(
    {
        "IamInstanceProfile",
        "ImageId",
        "InstanceId",
        "Ipv6Address",
        "MetadataOptions",
        "NetworkInterfaces",
        "PrivateIpAddress",
        "PublicIpAddress",
        "SecurityGroups",
        "State",
        "SubnetId",
        "Tags",
        "VpcId",
    }
)


def trimmed(model: dict[str, Any]) -> dict[str, Any]:
    """EC2's service description with the `Instance` shape cut to INSTANCE_MEMBERS (a new
    dictionary; `model`, botocore's cached copy, is not changed)."""
    shapes = dict(model["shapes"])
    instance = dict(shapes["Instance"])
    members = instance["members"]
    missing = INSTANCE_MEMBERS - members.keys()
    if missing:  # a botocore whose EC2 description renamed a member the join reads
        raise ValueError(f"EC2's Instance shape has no {', '.join(sorted(missing))}")
    instance["members"] = {name: members[name] for name in members if name in INSTANCE_MEMBERS}
    shapes["Instance"] = instance
    return {**model, "shapes": shapes}


def install(botocore_session: Any) -> None:
    """Have `botocore_session` load EC2's description trimmed (see the module doc): its loader
    is wrapped, once, for EC2's `service-2` description only."""
    loader = botocore_session.get_component("data_loader")
    original: Callable[..., Any] = loader.load_service_model
    if getattr(original, "joinadmin_trimmed", False):
        return
    cache: dict[Any, dict[str, Any]] = {}

    def load_service_model(service_name: str, type_name: str, api_version: Any = None) -> Any:
        model = original(service_name, type_name, api_version)
        if service_name != "ec2" or type_name != "service-2":
            return model
        key = (api_version, id(model))
        if key not in cache:
            cache.clear()
            cache[key] = trimmed(model)
        return cache[key]

    load_service_model.joinadmin_trimmed = True  # type: ignore[attr-defined]
    loader.load_service_model = load_service_model
