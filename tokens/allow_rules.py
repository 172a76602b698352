"""An allow rule of an ec2 token (`AllowRule`) and the validation of `spec.allow`.

Pure Python, no Django. A rule admits instances by account, regions and the role used to look
them up, with Teleport's semantics (empty means "any"), plus the optional conditions of
`tokens.rule_conditions`. Validation checks each rule on its own and then the rules against
each other (duplicates, account and partition agreement), because a rule that can never match
or that matches more than its author meant is a hole in the token's policy.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from tokens.aws_names import _ACCOUNT, _role_arn_problem, partition_of_region
from tokens.constants import (
    CONDITION_FIELDS,
    MAX_ALLOW_RULES,
    MAX_REGIONS_PER_RULE,
    RESOURCE_ID_CONDITIONS,
)
from tokens.errors import _check_keys, _Errors, _kind, _mapping, _number_text, _show
from tokens.rule_conditions import TagConditions, _check_conditions, _is_set

__all__ = ["AllowRule"]

_RULE_KEYS = ("aws_account", "aws_regions", "aws_role", *CONDITION_FIELDS)
_RULE_EXPLAINED = {
    # Teleport's own wording, which users may search for.
    "aws_arn": 'the "ec2" join method does not support the "aws_arn" parameter; '
    "remove it (aws_arn belongs to the iam join method)",
}


@dataclass(frozen=True)
class AllowRule:
    """One allow rule: an instance matches if its account and region are allowed.

    Empty `aws_account` or `aws_regions` means "any" (Teleport's semantics); `aws_role` is the
    role assumed to call DescribeInstances in the instance's account.

    The other fields are this product's optional conditions (`CONDITION_FIELDS`), checked by
    `joins.conditions` against the DescribeInstances answer once this rule has matched. Each
    one left at its default adds no condition, so a plain Teleport rule keeps its meaning. The
    id lists and `aws_instance_profile_arns` are alternatives (one must match);
    `aws_security_group_ids` and `aws_tags` are requirements (every one must hold).
    """

    aws_account: str = ""
    aws_regions: tuple[str, ...] = ()
    aws_role: str = ""
    aws_vpc_ids: tuple[str, ...] = ()
    aws_subnet_ids: tuple[str, ...] = ()
    aws_ami_ids: tuple[str, ...] = ()
    aws_instance_profile_arns: tuple[str, ...] = ()
    aws_security_group_ids: tuple[str, ...] = ()
    aws_tags: Mapping[str, tuple[str, ...]] = field(default_factory=TagConditions)
    require_imdsv2: bool = False
    max_imds_hop_limit: int | None = None
    require_source_ip_match: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "aws_regions", tuple(self.aws_regions))
        for name in RESOURCE_ID_CONDITIONS.keys() | {"aws_instance_profile_arns"}:
            object.__setattr__(self, name, tuple(getattr(self, name)))
        if not isinstance(self.aws_tags, TagConditions):
            object.__setattr__(self, "aws_tags", TagConditions(self.aws_tags))

    @property
    def conditions(self) -> tuple[str, ...]:
        """The names of the conditions this rule sets, in the order a join checks them."""
        return tuple(name for name in CONDITION_FIELDS if _is_set(getattr(self, name)))

    @property
    def tag_conditions(self) -> tuple[tuple[str, tuple[str, ...]], ...]:
        """`aws_tags` as (key, allowed values) pairs in key order.

        For templates: a Django template looks up `mapping.items` as the key "items" first, so
        a tag named "items" would hide the method.
        """
        return tuple(self.aws_tags.items())

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> AllowRule:
        """The rule of a `to_dict` mapping, without validation.

        Only for mappings this module wrote from a validated rule (a stored row); anything
        from outside goes through `validate_resource`.
        """
        hop_limit = data.get("max_imds_hop_limit")
        return cls(
            aws_account=data.get("aws_account", ""),
            aws_regions=tuple(data.get("aws_regions", ())),
            aws_role=data.get("aws_role", ""),
            aws_vpc_ids=tuple(data.get("aws_vpc_ids", ())),
            aws_subnet_ids=tuple(data.get("aws_subnet_ids", ())),
            aws_ami_ids=tuple(data.get("aws_ami_ids", ())),
            aws_instance_profile_arns=tuple(data.get("aws_instance_profile_arns", ())),
            aws_security_group_ids=tuple(data.get("aws_security_group_ids", ())),
            aws_tags=TagConditions(data.get("aws_tags") or {}),
            require_imdsv2=data.get("require_imdsv2") is True,
            max_imds_hop_limit=(
                hop_limit
                if isinstance(hop_limit, int) and not isinstance(hop_limit, bool)
                else None
            ),
            require_source_ip_match=data.get("require_source_ip_match") is True,
        )

    def to_dict(self) -> dict[str, Any]:
        """The rule as Teleport writes it: only the fields that are set, conditions last."""
        out: dict[str, Any] = {}
        if self.aws_account:
            out["aws_account"] = self.aws_account
        if self.aws_regions:
            out["aws_regions"] = list(self.aws_regions)
        if self.aws_role:
            out["aws_role"] = self.aws_role
        for name in self.conditions:
            value = getattr(self, name)
            if name == "aws_tags":
                out[name] = {key: list(values) for key, values in value.items()}
            elif isinstance(value, tuple):
                out[name] = list(value)
            else:
                out[name] = value
        return out


def _check_allow(errors: _Errors, value: object) -> tuple[AllowRule, ...]:
    path = "spec.allow"
    if value is None or value == []:
        errors.add(
            path,
            'the "ec2" join method requires defined token allow rules; add at least one rule '
            'with aws_account (e.g. aws_account: "111111111111")',
        )
        return ()
    if not isinstance(value, list):
        errors.add(path, f"must be a list of rules, not {_kind(value)}")
        return ()
    if len(value) > MAX_ALLOW_RULES:
        errors.add(path, f"has {len(value)} rules; use at most {MAX_ALLOW_RULES} (split the token)")
        return ()
    rules: list[AllowRule] = []
    first_seen: dict[AllowRule, int] = {}
    for index, item in enumerate(value):
        where = f"{path}[{index}]"
        rule = _check_rule(errors, where, item)
        if rule is None:
            continue
        if rule in first_seen:
            errors.add(where, f"same rule as {path}[{first_seen[rule]}]; remove the duplicate")
            continue
        first_seen[rule] = index
        rules.append(rule)
    return tuple(rules)


def _check_rule(errors: _Errors, path: str, item: object) -> AllowRule | None:
    before = len(errors.items)
    rule = _mapping(errors, path, item, required=True)
    if rule is None:
        return None
    _check_keys(errors, path, rule, _RULE_KEYS, explain=_RULE_EXPLAINED)
    account = _check_account(errors, f"{path}.aws_account", rule.get("aws_account"))
    regions, partition = _check_regions(errors, f"{path}.aws_regions", rule.get("aws_regions"))
    role, role_account, role_partition = "", "", ""
    raw_role = rule.get("aws_role")
    role_path = f"{path}.aws_role"
    if raw_role not in (None, ""):
        if not isinstance(raw_role, str):
            errors.add(role_path, f"must be an IAM role ARN string, not {_kind(raw_role)}")
        else:
            checked = _role_arn_problem(raw_role)
            if isinstance(checked, str):
                errors.add(role_path, checked)
            else:
                role_partition, role_account, role = checked
                if account and role_account != account:
                    errors.add(
                        role_path,
                        f"the role is in account {role_account} but aws_account is {account}; "
                        "a rule's role must be in the rule's account",
                    )
                if partition and role_partition != partition:
                    errors.add(
                        role_path,
                        f"the role is in partition {role_partition} but aws_regions are in "
                        f"{partition}; use a role ARN of the regions' partition",
                    )
    if not rule.get("aws_account") and not rule.get("aws_role"):
        errors.add(
            path,
            'allow rule for "ec2" join method must set "aws_account" or "aws_role"; '
            'add aws_account: "<12-digit account ID>"',
        )
    conditions = _check_conditions(
        errors, path, rule, account or role_account, partition or role_partition
    )
    if len(errors.items) != before:
        return None
    return AllowRule(aws_account=account, aws_regions=regions, aws_role=role, **conditions)


def _check_account(errors: _Errors, path: str, value: object) -> str:
    if value is None or value == "":
        return ""
    if isinstance(value, bool):
        errors.add(path, f"must be a 12-digit account ID in quotes, not {_kind(value)}")
        return ""
    if isinstance(value, int):
        digits = _number_text(value)
        if len(digits) == 12 and digits.isdigit():
            hint = f'write aws_account: "{digits}" in quotes'
        else:
            hint = (
                "YAML read it as a number and leading zeros may have been lost; write the full "
                '12-digit ID in quotes, e.g. aws_account: "011111111111"'
            )
        errors.add(path, f"the account ID must be a quoted string, not the number {digits}; {hint}")
        return ""
    if not isinstance(value, str):
        errors.add(path, f"must be a 12-digit account ID in quotes, not {_kind(value)}")
        return ""
    if not _ACCOUNT.fullmatch(value):
        errors.add(
            path,
            f"{_show(value)} is not an AWS account ID; write exactly 12 digits, e.g. "
            '"111111111111"',
        )
        return ""
    return value


def _check_regions(errors: _Errors, path: str, value: object) -> tuple[tuple[str, ...], str]:
    """The regions and the one partition they belong to ("" when none or invalid)."""
    if value is None:
        return (), ""
    if not isinstance(value, list):
        errors.add(path, f"must be a list of regions such as [us-west-2], not {_kind(value)}")
        return (), ""
    if len(value) > MAX_REGIONS_PER_RULE:
        errors.add(path, f"has {len(value)} regions; use at most {MAX_REGIONS_PER_RULE}")
        return (), ""
    regions: list[str] = []
    partitions: dict[str, str] = {}
    seen: dict[str, int] = {}
    for index, item in enumerate(value):
        where = f"{path}[{index}]"
        if not isinstance(item, str):
            errors.add(where, f"a region must be a string such as us-west-2, not {_kind(item)}")
            continue
        partition = partition_of_region(item)
        if partition is None:
            hint = (
                "; AWS region names are lower case"
                if partition_of_region(item.lower())
                else "; write a region name such as us-west-2, us-gov-west-1 or cn-north-1"
            )
            errors.add(where, f"{_show(item)} is not an AWS region{hint}")
            continue
        if item in seen:
            errors.add(
                where, f"duplicate region {_show(item)} (also {path}[{seen[item]}]); list it once"
            )
            continue
        seen[item] = index
        partitions.setdefault(partition, item)
        regions.append(item)
    if len(partitions) > 1:
        mixed = ", ".join(f"{name} ({example})" for name, example in partitions.items())
        errors.add(
            path,
            f"mixes the partitions {mixed}; an AWS account lives in one partition, so write "
            "one rule per partition",
        )
        return tuple(regions), ""
    return tuple(regions), next(iter(partitions), "")
