"""Allow-rule conditions, checked against the DescribeInstances answer. Pure: no Django, no AWS.

A rule's optional conditions (`tokens.constants.CONDITION_FIELDS`: VPC, subnet, AMI, instance
profile, security groups, tags, IMDS options, source address) are checked only for the rule that
matched the document, only after DescribeInstances said the instance runs, and only against
that answer: the join makes no AWS call for them, so none happens before the signature is good.

Each condition either passes with a `ConditionResult` for the audit trace or refuses with
`ConditionFailed`, carrying its own code (`joins.constants.CONDITION_CODES`), a message for the
agent and the exact reason for the auditor. Anything the answer does not report (a missing
`VpcId`, no `MetadataOptions`, a hop limit that is not a number) refuses: a condition that
cannot be checked is not met.

Semantics, in the words of `docs/extensions.md`:

* `aws_vpc_ids`, `aws_subnet_ids`, `aws_ami_ids`: the instance's `VpcId`, `SubnetId`, `ImageId`
  must be one of the listed ids.
* `aws_instance_profile_arns`: the instance's `IamInstanceProfile.Arn` must equal one of the
  listed ARNs, or start with the part before the `*` of one that ends in `*`.
* `aws_security_group_ids`: the instance must be in *every* listed group (its `SecurityGroups`);
  requiring all rather than any means an author who lists a group by mistake locks instances
  out, never lets more in.
* `aws_tags`: every listed key must be on the instance with one of its listed values (exact,
  case-sensitive, as AWS stores tags).
* `require_imdsv2`: `MetadataOptions.HttpTokens` must be `required` (and the options applied).
* `max_imds_hop_limit`: `MetadataOptions.HttpPutResponseHopLimit` must be at most the limit.
* `require_source_ip_match`: the request's source address (after trusted proxies, see
  `joins.net.client_address`) must be one of the instance's own private or public addresses.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from joins.constants import CONDITION_CODES
from tokens.constants import CONDITION_FIELDS
from tokens.resource import AllowRule

__all__ = [
    "CHECK_PREFIX",
    "ConditionFailed",
    "ConditionResult",
    "check_name",
    "evaluate",
    "instance_addresses",
]

#: Trace entries of conditions are named `condition:<field>`, e.g. `condition:aws_vpc_ids`.
CHECK_PREFIX = "condition:"
#: The state AWS reports once changed metadata options are in effect.
_METADATA_APPLIED = "applied"
_SHOWN_MAX = 80


def check_name(field: str) -> str:
    """The trace name of a condition field: `aws_vpc_ids` -> `condition:aws_vpc_ids`."""
    return f"{CHECK_PREFIX}{field}"


@dataclass(frozen=True)
class ConditionResult:
    """A condition that held, with what was compared (for the audit trace)."""

    field: str
    detail: str

    @property
    def name(self) -> str:
        return check_name(self.field)


class ConditionFailed(Exception):
    """A condition of the matched rule is not met (or could not be checked: fail closed).

    `code` is the condition's refusal code (403), `message` what the agent is told (it names
    the instance's own attribute, never the rule's allowed values), `reason` the exact cause for
    the audit trace, `passed` the conditions checked before this one, in order.
    """

    def __init__(
        self,
        field: str,
        reason: str,
        message: str,
        passed: Iterable[ConditionResult] = (),
    ) -> None:
        super().__init__(reason)
        self.field = field
        self.code = CONDITION_CODES[field]
        self.reason = reason
        self.message = message
        self.passed: list[ConditionResult] = list(passed)

    @property
    def name(self) -> str:
        return check_name(self.field)


class _Refused(Exception):
    """Raised by one condition's check; `evaluate` turns it into `ConditionFailed`."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.message = message


def evaluate(
    rule: AllowRule, instance_raw: Mapping[str, Any], source_addr: str
) -> list[ConditionResult]:
    """Check every condition `rule` sets against one DescribeInstances `Instances[]` item.

    Returns one result per condition, in `CONDITION_FIELDS` order (none for a rule without
    conditions). Raises `ConditionFailed` at the first condition not met; the ones that held
    before it are in its `passed`.
    """
    results: list[ConditionResult] = []
    instance_id = _text(instance_raw.get("InstanceId")) or "the instance"
    for field in CONDITION_FIELDS:
        if field not in rule.conditions:
            continue
        check = _CHECKS[field]
        try:
            detail = check(rule, instance_raw, instance_id, source_addr)
        except _Refused as exc:
            raise ConditionFailed(field, exc.reason, exc.message, results) from None
        results.append(ConditionResult(field, detail))
    return results


# --- identity of the instance ---------------------------------------------------------------


def _one_of(
    attribute: str, noun: str, field: str
) -> Callable[[AllowRule, Mapping[str, Any], str, str], str]:
    """A check that the instance's `attribute` (e.g. `VpcId`) is one of the rule's `field`."""

    def check(rule: AllowRule, raw: Mapping[str, Any], instance_id: str, _source: str) -> str:
        allowed: tuple[str, ...] = getattr(rule, field)
        value = _text(raw.get(attribute))
        if not value:
            raise _Refused(
                f"DescribeInstances reported no {attribute} for {instance_id}, so its {noun} "
                f"cannot be checked against {_listing(allowed)}",
                f"the {noun} of instance {instance_id} is unknown, so the token's rule cannot "
                "be satisfied",
            )
        if value not in allowed:
            raise _Refused(
                f"{instance_id} is in {noun} {_show(value)}; the rule allows {_listing(allowed)}",
                f"instance {instance_id} is in {noun} {_show(value)}, which the token's rule "
                "does not allow",
            )
        return f"{noun} {value} is allowed"

    return check


def _check_profile(rule: AllowRule, raw: Mapping[str, Any], instance_id: str, _: str) -> str:
    allowed = rule.aws_instance_profile_arns
    profile = raw.get("IamInstanceProfile")
    arn = _text(profile.get("Arn")) if isinstance(profile, Mapping) else ""
    if not arn:
        raise _Refused(
            f"DescribeInstances reported no instance profile for {instance_id}; the rule "
            f"requires one of {_listing(allowed)}",
            f"instance {instance_id} has no instance profile, and the token's rule requires one",
        )
    for pattern in allowed:
        if arn == pattern or (pattern.endswith("*") and arn.startswith(pattern[:-1])):
            how = "matches the prefix" if pattern.endswith("*") else "is"
            return f"instance profile {arn} {how} {pattern}"
    raise _Refused(
        f"{instance_id} has instance profile {_show(arn)}; the rule allows {_listing(allowed)}",
        f"instance {instance_id} has instance profile {_show(arn)}, which the token's rule does "
        "not allow",
    )


def _check_security_groups(
    rule: AllowRule, raw: Mapping[str, Any], instance_id: str, _: str
) -> str:
    required = rule.aws_security_group_ids
    groups = raw.get("SecurityGroups")
    if not isinstance(groups, list):
        raise _Refused(
            f"DescribeInstances reported no SecurityGroups for {instance_id}; the rule requires "
            f"every one of {_listing(required)}",
            f"the security groups of instance {instance_id} are unknown, so the token's rule "
            "cannot be satisfied",
        )
    have = [_text(group.get("GroupId")) for group in groups if isinstance(group, Mapping)]
    missing = [group for group in required if group not in have]
    if missing:
        shown = _listing([g for g in have if g]) if any(have) else "no security group"
        raise _Refused(
            f"{instance_id} is not in {_listing(missing)}; the rule requires every one of "
            f"{_listing(required)} and the instance is in {shown}",
            f"instance {instance_id} is not in every security group the token's rule requires",
        )
    return f"in every required security group: {', '.join(required)}"


def _check_tags(rule: AllowRule, raw: Mapping[str, Any], instance_id: str, _: str) -> str:
    tags: dict[str, str] = {}
    # AWS leaves `Tags` out of the answer for an instance without tags.
    for tag in raw.get("Tags") or ():
        if isinstance(tag, Mapping) and isinstance(tag.get("Key"), str):
            tags[tag["Key"]] = _text(tag.get("Value"))
    matched: list[str] = []
    for key, allowed in rule.aws_tags.items():
        if key not in tags:
            raise _Refused(
                f"{instance_id} has no tag {_show(key)}; the rule requires it with one of "
                f"{_listing(allowed)}"
                + ("" if tags else " (DescribeInstances reported no tags at all)"),
                f"instance {instance_id} lacks a tag the token's rule requires",
            )
        if tags[key] not in allowed:
            raise _Refused(
                f"{instance_id} has tag {_show(key)} = {_show(tags[key])}; the rule allows "
                f"{_listing(allowed)}",
                f"instance {instance_id} has a tag value the token's rule does not allow",
            )
        matched.append(f"{key}={tags[key]}")
    return f"required tags present with allowed values: {', '.join(matched)}"


# --- instance metadata service --------------------------------------------------------------


def _metadata_options(raw: Mapping[str, Any], instance_id: str, what: str) -> Mapping[str, Any]:
    """The instance's `MetadataOptions` once applied; refuses when absent or still changing."""
    options = raw.get("MetadataOptions")
    if not isinstance(options, Mapping):
        raise _Refused(
            f"DescribeInstances reported no MetadataOptions for {instance_id}, so {what} cannot "
            "be checked",
            f"the metadata options of instance {instance_id} are unknown, so the token's rule "
            "cannot be satisfied",
        )
    state = options.get("State")
    if state is not None and state != _METADATA_APPLIED:
        # While a change is pending the reported values are the requested ones, not the ones in
        # effect: the old, possibly weaker, options may still answer.
        raise _Refused(
            f"the metadata options of {instance_id} are {_show(state)}, not applied; the "
            f"reported values may not be in effect yet, so {what} cannot be relied on",
            f"the metadata options of instance {instance_id} are still being changed; retry "
            "once the change is applied",
        )
    return options


def _check_imdsv2(rule: AllowRule, raw: Mapping[str, Any], instance_id: str, _: str) -> str:
    options = _metadata_options(raw, instance_id, "IMDSv2 enforcement")
    tokens = options.get("HttpTokens")
    if tokens != "required":
        raise _Refused(
            f"{instance_id} has MetadataOptions.HttpTokens {_show(tokens)}; the rule requires "
            '"required" (IMDSv2 only), since IMDSv1 answers anyone who can make the instance '
            "send a GET request",
            f"instance {instance_id} allows IMDSv1; the token's rule requires IMDSv2 only "
            "(HttpTokens=required)",
        )
    return "MetadataOptions.HttpTokens is required: IMDSv1 is off"


def _check_hop_limit(rule: AllowRule, raw: Mapping[str, Any], instance_id: str, _: str) -> str:
    limit = rule.max_imds_hop_limit
    options = _metadata_options(raw, instance_id, "the IMDS hop limit")
    hops = options.get("HttpPutResponseHopLimit")
    if isinstance(hops, bool) or not isinstance(hops, int):
        raise _Refused(
            f"DescribeInstances reported no usable HttpPutResponseHopLimit for {instance_id} "
            f"({_show(hops)}); the rule allows at most {limit}",
            f"the IMDS hop limit of instance {instance_id} is unknown, so the token's rule "
            "cannot be satisfied",
        )
    if limit is None or hops > limit:
        raise _Refused(
            f"{instance_id} has MetadataOptions.HttpPutResponseHopLimit {hops}; the rule allows "
            f"at most {limit} (a limit above 1 lets containers on the instance reach IMDS)",
            f"the IMDS hop limit of instance {instance_id} is {hops}, higher than the token's "
            "rule allows",
        )
    return f"MetadataOptions.HttpPutResponseHopLimit {hops} is at most {limit}"


# --- source address -------------------------------------------------------------------------

_IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def _parse_address(text: object) -> _IPAddress | None:
    """An address as compared: IPv4-mapped IPv6 (`::ffff:10.0.0.1`, from a dual-stack socket)
    is the IPv4 address it carries; anything that is not an address is None."""
    if not isinstance(text, str) or not text.strip():
        return None
    try:
        address = ipaddress.ip_address(text.strip())
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def instance_addresses(raw: Mapping[str, Any]) -> dict[_IPAddress, str]:
    """Every address DescribeInstances reports for the instance, each with its kind.

    The instance's primary private and public addresses, and on each network interface its
    private addresses, the public addresses associated with them, and its IPv6 addresses.
    """
    found: dict[_IPAddress, str] = {}

    def add(value: object, kind: str) -> None:
        address = _parse_address(value)
        if address is not None:
            found.setdefault(address, kind)

    add(raw.get("PrivateIpAddress"), "private")
    add(raw.get("PublicIpAddress"), "public")
    add(raw.get("Ipv6Address"), "IPv6")
    for interface in _mappings(raw.get("NetworkInterfaces")):
        add(interface.get("PrivateIpAddress"), "private")
        association = interface.get("Association")
        if isinstance(association, Mapping):
            add(association.get("PublicIp"), "public")
        for private in _mappings(interface.get("PrivateIpAddresses")):
            add(private.get("PrivateIpAddress"), "private")
            association = private.get("Association")
            if isinstance(association, Mapping):
                add(association.get("PublicIp"), "public")
        for ipv6 in _mappings(interface.get("Ipv6Addresses")):
            add(ipv6.get("Ipv6Address"), "IPv6")
    return found


def _check_source(rule: AllowRule, raw: Mapping[str, Any], instance_id: str, source: str) -> str:
    addresses = instance_addresses(raw)
    shown = ", ".join(f"{address} ({kind})" for address, kind in addresses.items())
    request_from = _parse_address(source)
    if request_from is None:
        raise _Refused(
            f"the request's source address {_show(source)} is not an IP address, so it cannot "
            f"be matched to {instance_id}'s addresses",
            "the request's source address is unknown, so the token's rule cannot be satisfied",
        )
    if not addresses:
        raise _Refused(
            f"DescribeInstances reported no address for {instance_id}, so the request from "
            f"{request_from} cannot be matched to it",
            f"the addresses of instance {instance_id} are unknown, so the token's rule cannot "
            "be satisfied",
        )
    kind = addresses.get(request_from)
    if kind is None:
        raise _Refused(
            f"the request came from {request_from}, which is not an address of {instance_id} "
            f"(DescribeInstances reports {shown}); behind a proxy, list it in "
            "JOINADMIN_TRUSTED_PROXIES so that X-Forwarded-For is believed",
            f"the request does not come from an address of instance {instance_id}",
        )
    return f"the request came from {request_from}, the instance's {kind} address"


_CHECKS: dict[str, Callable[[AllowRule, Mapping[str, Any], str, str], str]] = {
    "aws_vpc_ids": _one_of("VpcId", "VPC", "aws_vpc_ids"),
    "aws_subnet_ids": _one_of("SubnetId", "subnet", "aws_subnet_ids"),
    "aws_ami_ids": _one_of("ImageId", "AMI", "aws_ami_ids"),
    "aws_instance_profile_arns": _check_profile,
    "aws_security_group_ids": _check_security_groups,
    "aws_tags": _check_tags,
    "require_imdsv2": _check_imdsv2,
    "max_imds_hop_limit": _check_hop_limit,
    "require_source_ip_match": _check_source,
}


# --- helpers --------------------------------------------------------------------------------


def _mappings(value: object) -> list[Mapping[str, Any]]:
    return [item for item in value if isinstance(item, Mapping)] if isinstance(value, list) else []


def _text(value: object) -> str:
    return value if isinstance(value, str) else ""


def _show(value: object) -> str:
    """A value from AWS or the request, quoted and cut short for the trace."""
    if not isinstance(value, str):
        return "nothing" if value is None else repr(value)[:_SHOWN_MAX]
    text = value if len(value) <= _SHOWN_MAX else value[:_SHOWN_MAX] + "..."
    return repr(text)


def _listing(values: Iterable[str]) -> str:
    items = [_show(value) for value in values]
    return ", ".join(items) if items else "nothing"
