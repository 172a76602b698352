"""AWS names in a token's allow rules: regions and partitions, account ids, IAM ARNs, EC2 ids.

Pure Python, no Django. These are syntax checks only (no AWS call): a region that is not one,
a role ARN in another partition or an instance profile written as a role would make a rule that
silently never matches, so each is refused with a message that says how to write it. The
`_..._problem` functions return that message (or None) for the validators in
`tokens.allow_rules` and `tokens.rule_conditions` to file under the right field.
"""

from __future__ import annotations

import re

from tokens.constants import (
    PARTITIONS,
    REGION_DIRECTIONS,
    RESOURCE_ID_CONDITIONS,
    RESOURCE_ID_NOUNS,
)
from tokens.errors import _show

__all__ = ["partition_of_region"]

# --------------------------------------------------------------------------------------------
# Regions, partitions, accounts and IAM role ARNs

_PREFIX_TO_PARTITION: dict[str, str] = {
    prefix: partition for partition, prefixes in PARTITIONS.items() for prefix in prefixes
}
_REGION = re.compile(
    "(?P<prefix>{})-(?P<direction>{})-(?P<number>[1-9][0-9]?)".format(
        "|".join(re.escape(p) for p in sorted(_PREFIX_TO_PARTITION, key=len, reverse=True)),
        "|".join(sorted(REGION_DIRECTIONS, key=len, reverse=True)),
    ),
    re.ASCII,
)
_ACCOUNT = re.compile(r"[0-9]{12}", re.ASCII)
_IAM_NAME_CHARS = r"[A-Za-z0-9+=,.@_-]"
_ROLE_RESOURCE = re.compile(
    rf"role/(?P<path>(?:{_IAM_NAME_CHARS}+/)*)(?P<name>{_IAM_NAME_CHARS}{{1,64}})", re.ASCII
)
_ROLE_EXAMPLE = "arn:aws:iam::222222222222:role/teleport-DescribeInstances-role"
_ARN_MAX_LENGTH = 2048
_ROLE_PATH_MAX_LENGTH = 512


def partition_of_region(region: str) -> str | None:
    """The AWS partition a region name belongs to, or None if it does not look like a region."""
    match = _REGION.fullmatch(region)
    return _PREFIX_TO_PARTITION[match.group("prefix")] if match else None


def _iam_arn_parts(
    arn: str, *, kind: str, example: str, account_note: str = ""
) -> tuple[str, str, str] | str:
    """(partition, account, resource) of an IAM ARN, else the message to show: the checks every
    IAM ARN passes, whatever it names (`kind`, for the message on its length)."""
    if len(arn) > _ARN_MAX_LENGTH:
        return f"is longer than {_ARN_MAX_LENGTH} characters, too long for {kind}"
    parts = arn.split(":", 5)
    if len(parts) != 6 or parts[0] != "arn":
        return f"{_show(arn)} is not an ARN; {example}"
    _, partition, service, region, account, resource = parts
    if partition not in PARTITIONS:
        return (
            f"the ARN's partition {_show(partition)} is not supported; use one of "
            f"{', '.join(PARTITIONS)}"
        )
    if service != "iam":
        return f"{_show(arn)} is not an IAM ARN (service {_show(service)}); {example}"
    if region:
        return f"IAM ARNs have no region, but {_show(arn)} names {_show(region)}; {example}"
    if not _ACCOUNT.fullmatch(account):
        return f"the ARN's account {_show(account)} is not 12 digits{account_note}; {example}"
    return partition, account, resource


def _role_arn_problem(arn: str) -> tuple[str, str, str] | str:
    """(partition, account, arn) for a well-formed IAM role ARN, else the message to show."""
    example = (
        f"write it as arn:<partition>:iam::<12-digit account>:role/<name>, e.g. {_ROLE_EXAMPLE}"
    )
    parts = _iam_arn_parts(arn, kind="an IAM role ARN", example=example)
    if isinstance(parts, str):
        return parts
    partition, account, resource = parts
    if resource.startswith("assumed-role/") or not resource.startswith("role/"):
        kind = resource.split("/", 1)[0]
        return f"{_show(arn)} names an IAM {kind or 'resource'}, not a role; {example}"
    match = _ROLE_RESOURCE.fullmatch(resource)
    if not match:
        return (
            f"{_show(arn)} has an invalid role path or name (letters, digits and +=,.@_- only, "
            f"name at most 64 characters); {example}"
        )
    if len(match.group("path")) + 1 > _ROLE_PATH_MAX_LENGTH:
        return f"the role path is longer than {_ROLE_PATH_MAX_LENGTH} characters"
    return partition, account, arn


# --------------------------------------------------------------------------------------------
# EC2 ids and instance profile ARNs, for the allow-rule conditions (see docs/extensions.md)

_AWS_ID_HEX = r"(?:[0-9a-f]{8}|[0-9a-f]{17})"
_ANY_RESOURCE_ID = re.compile(rf"(?P<prefix>[a-z]+)-{_AWS_ID_HEX}", re.ASCII)
_PROFILE_EXAMPLE = "arn:aws:iam::111111111111:instance-profile/web-servers"
_PROFILE_RESOURCE = re.compile(
    rf"instance-profile/(?P<path>(?:{_IAM_NAME_CHARS}+/)*)(?P<name>{_IAM_NAME_CHARS}{{1,128}})",
    re.ASCII,
)
# What may come before a trailing `*`: a path and the start of a name.
_PROFILE_PREFIX = re.compile(rf"instance-profile/(?:{_IAM_NAME_CHARS}|/)*", re.ASCII)
_PROFILE_PREFIX_MAX_LENGTH = 512 + 128


def _resource_id_problem(item: str, prefix: str, noun: str) -> str | None:
    """Why `item` is not an EC2 id of the kind `prefix` (`vpc`, `subnet`, ...), or None."""
    if re.fullmatch(rf"{prefix}-{_AWS_ID_HEX}", item, re.ASCII):
        return None
    example = f"{prefix}-0123456789abcdef0"
    fixed = item.strip().lower()
    if re.fullmatch(rf"{prefix}-{_AWS_ID_HEX}", fixed, re.ASCII):
        return f"{_show(item)}: EC2 ids are lower case without spaces; write {_show(fixed)}"
    other = _ANY_RESOURCE_ID.fullmatch(item)
    if other and other.group("prefix") in RESOURCE_ID_CONDITIONS.values():
        field_for = next(
            key for key, value in RESOURCE_ID_CONDITIONS.items() if value == other.group("prefix")
        )
        return (
            f"{_show(item)} is {_a(RESOURCE_ID_NOUNS[field_for])} id, not {_a(noun)} id; move it "
            f"to {field_for}"
        )
    return (
        f"{_show(item)} is not {_a(noun)} id; write {prefix}- and 8 or 17 hexadecimal digits, "
        f"e.g. {example}"
    )


def _a(noun: str) -> str:
    """The noun with its indefinite article: "a VPC", "an AMI"."""
    return f"{'an' if noun[:1] in 'AEIOUaeiou' else 'a'} {noun}"


def _profile_arn_problem(arn: str, account: str, partition: str) -> str | None:
    """Why `arn` is not an instance profile ARN (optionally ending in `*`) of the rule's
    account and partition, or None."""
    example = (
        "write it as arn:<partition>:iam::<12-digit account>:instance-profile/<path/name>, "
        f"optionally ending in * for a prefix, e.g. {_PROFILE_EXAMPLE}"
    )
    parts = _iam_arn_parts(
        arn, kind="an ARN", example=example, account_note=" (a * may only end the ARN)"
    )
    if isinstance(parts, str):
        return parts
    arn_partition, arn_account, resource = parts
    if not resource.startswith("instance-profile/"):
        kind = resource.split("/", 1)[0]
        hint = (
            "; the condition is on the instance profile, whose ARN names instance-profile/"
            if kind == "role"
            else ""
        )
        return f"{_show(arn)} names an IAM {kind or 'resource'}, not an instance profile{hint}"
    wildcard = resource.endswith("*")
    body = resource[:-1] if wildcard else resource
    if "*" in body:
        return f"{_show(arn)}: a * is allowed only once, as the last character (a prefix match)"
    if wildcard:
        if len(body) > _PROFILE_PREFIX_MAX_LENGTH or not _PROFILE_PREFIX.fullmatch(body):
            return (
                f"{_show(arn)} has an invalid path or name before the * (letters, digits and "
                f"+=,.@_-/ only); {example}"
            )
    elif not _PROFILE_RESOURCE.fullmatch(body) or len(body) > _PROFILE_PREFIX_MAX_LENGTH:
        return (
            f"{_show(arn)} has an invalid path or name (letters, digits and +=,.@_- only, "
            f"name at most 128 characters; end it with * for a prefix); {example}"
        )
    if account and arn_account != account:
        return (
            f"the instance profile is in account {arn_account} but the rule admits account "
            f"{account}; an instance can only use a profile of its own account"
        )
    if partition and arn_partition != partition:
        return (
            f"the instance profile is in partition {arn_partition} but the rule's regions or "
            f"role are in {partition}; use an ARN of the rule's partition"
        )
    return None
