"""The optional allow-rule conditions (ids, instance profiles, tags, IMDS), beyond Teleport.

Pure Python, no Django. A Teleport ec2 rule admits an account and regions; this product lets a
rule also require VPCs, subnets, AMIs, security groups, instance profiles, tags and IMDS settings
(docs/extensions.md). Here are their value type (`TagConditions`) and their validation; the
check against a real instance is `joins.conditions`. Kept apart from the rest of the rule so
that the base Teleport semantics in `tokens.allow_rules` read without them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from tokens.aws_names import _profile_arn_problem, _resource_id_problem
from tokens.constants import (
    MAX_CONDITION_VALUES,
    MAX_IMDS_HOP_LIMIT,
    MAX_TAG_CONDITIONS,
    MAX_TAG_VALUES,
    MIN_IMDS_HOP_LIMIT,
    RESOURCE_ID_CONDITIONS,
    RESOURCE_ID_NOUNS,
    TAG_KEY_MAX_LENGTH,
    TAG_VALUE_MAX_LENGTH,
)
from tokens.errors import _Errors, _is_unsafe_char, _kind, _number_text, _show, field_name
from tokens.frozen import FrozenMapping

__all__ = ["TagConditions"]


class TagConditions(FrozenMapping[tuple[str, ...]]):
    """The `aws_tags` condition of a rule: tag key to the values it may have, immutable.

    Hashable and compared by value like `Labels`, so that rules stay usable as dict keys (the
    duplicate-rule check) whatever order the keys were written in.
    """

    __slots__ = ()

    @staticmethod
    def _value(value: Any) -> tuple[str, ...]:
        return tuple(value)


def _is_set(value: object) -> bool:
    """Whether a condition field holds a condition (False, None and empties do not)."""
    return value is not None and value is not False and value != () and value != {}


def _check_conditions(
    errors: _Errors, path: str, rule: Mapping[Any, Any], account: str, partition: str
) -> dict[str, Any]:
    """The rule's condition fields as `AllowRule` keyword arguments; absent ones are left out.

    `account` and `partition` are the rule's own (from `aws_account`, `aws_regions` or
    `aws_role`, "" when unknown): an instance profile elsewhere could never be the instance's.
    """
    out: dict[str, Any] = {}
    for name, prefix in RESOURCE_ID_CONDITIONS.items():
        noun = RESOURCE_ID_NOUNS[name]
        out[name] = _check_condition_list(
            errors,
            f"{path}.{name}",
            rule.get(name),
            f"{noun} ids",
            lambda item, prefix=prefix, noun=noun: _resource_id_problem(item, prefix, noun),
        )
    out["aws_instance_profile_arns"] = _check_condition_list(
        errors,
        f"{path}.aws_instance_profile_arns",
        rule.get("aws_instance_profile_arns"),
        "instance profile ARNs",
        lambda item: _profile_arn_problem(item, account, partition),
    )
    out["aws_tags"] = _check_tags(errors, f"{path}.aws_tags", rule.get("aws_tags"))
    out["require_imdsv2"] = _check_flag(
        errors, f"{path}.require_imdsv2", rule.get("require_imdsv2")
    )
    out["max_imds_hop_limit"] = _check_hop_limit(
        errors, f"{path}.max_imds_hop_limit", rule.get("max_imds_hop_limit")
    )
    out["require_source_ip_match"] = _check_flag(
        errors, f"{path}.require_source_ip_match", rule.get("require_source_ip_match")
    )
    return out


def _check_condition_list(
    errors: _Errors,
    path: str,
    value: object,
    what: str,
    problem_of: Callable[[str], str | None],
) -> tuple[str, ...]:
    """A list condition: absent (None) is no condition; an empty list is refused as a mistake,
    because reading it as "any" would silently disable a condition the author meant to set."""
    if value is None:
        return ()
    field_key = path.rsplit(".", 1)[-1]
    if not isinstance(value, list):
        errors.add(path, f"must be a list of {what}, not {_kind(value)}; e.g. {field_key}: [...]")
        return ()
    if not value:
        errors.add(
            path, f"is empty; list at least one of the allowed {what}, or remove {field_key}"
        )
        return ()
    if len(value) > MAX_CONDITION_VALUES:
        errors.add(path, f"has {len(value)} entries; use at most {MAX_CONDITION_VALUES}")
        return ()
    good: list[str] = []
    seen: dict[str, int] = {}
    for index, item in enumerate(value):
        where = f"{path}[{index}]"
        if not isinstance(item, str):
            errors.add(where, f"must be a string, not {_kind(item)}")
            continue
        problem = problem_of(item)
        if problem:
            errors.add(where, problem)
            continue
        if item in seen:
            errors.add(where, f"duplicate {_show(item)} (also {path}[{seen[item]}]); list it once")
            continue
        seen[item] = index
        good.append(item)
    return tuple(good)


def _check_tags(errors: _Errors, path: str, value: object) -> TagConditions:
    """`aws_tags`: every key must be on the instance with one of its listed values."""
    if value is None:
        return TagConditions()
    example = "e.g. aws_tags: {env: [production, staging]}"
    if not isinstance(value, Mapping):
        errors.add(
            path,
            f"must be a mapping of tag key to a list of allowed values, {example}; "
            f"not {_kind(value)}",
        )
        return TagConditions()
    if not value:
        errors.add(path, f"is empty; name at least one tag ({example}), or remove aws_tags")
        return TagConditions()
    if len(value) > MAX_TAG_CONDITIONS:
        errors.add(
            path,
            f"has {len(value)} keys; an instance has at most {MAX_TAG_CONDITIONS} tags, so use "
            f"at most {MAX_TAG_CONDITIONS}",
        )
        return TagConditions()
    good: dict[str, tuple[str, ...]] = {}
    for key, values in value.items():
        where = f"{path}[{_show(key)}]"
        if not isinstance(key, str):
            errors.add(where, f"a tag key must be a string, not {_kind(key)}; quote it")
            continue
        if not key or len(key) > TAG_KEY_MAX_LENGTH:
            errors.add(where, f"a tag key has 1 to {TAG_KEY_MAX_LENGTH} characters")
            continue
        if any(_is_unsafe_char(char) or char in "\n\t" for char in key):
            errors.add(where, "the tag key contains control characters; AWS tag keys cannot")
            continue
        if not isinstance(values, list):
            hint = f"; write {field_name(key)}: [{values}]" if isinstance(values, str) else ""
            errors.add(
                where, f"must be a list of the tag's allowed values, not {_kind(values)}{hint}"
            )
            continue
        if not values:
            errors.add(where, "is empty; list at least one allowed value of the tag")
            continue
        if len(values) > MAX_TAG_VALUES:
            errors.add(where, f"has {len(values)} values; use at most {MAX_TAG_VALUES}")
            continue
        allowed: list[str] = []
        for index, text in enumerate(values):
            at = f"{where}[{index}]"
            if not isinstance(text, str):
                errors.add(
                    at,
                    f"a tag value must be a string, not {_kind(text)}; put it in quotes "
                    "(YAML reads yes, 123 or 2030-01-01 as other types)",
                )
            elif len(text) > TAG_VALUE_MAX_LENGTH:
                errors.add(at, f"a tag value has at most {TAG_VALUE_MAX_LENGTH} characters")
            elif any(_is_unsafe_char(char) or char in "\n\t" for char in text):
                errors.add(at, "the tag value contains control characters; AWS tag values cannot")
            elif text in allowed:
                errors.add(at, f"duplicate value {_show(text)}; list it once")
            else:
                allowed.append(text)
        if len(allowed) == len(values):
            good[key] = tuple(allowed)
    return TagConditions(good)


def _check_flag(errors: _Errors, path: str, value: object) -> bool:
    if value is None:
        return False
    if not isinstance(value, bool):
        errors.add(path, f"must be true or false, not {_kind(value)}")
        return False
    return value


def _check_hop_limit(errors: _Errors, path: str, value: object) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        errors.add(
            path,
            f"must be a whole number from {MIN_IMDS_HOP_LIMIT} to {MAX_IMDS_HOP_LIMIT}, not "
            f"{_kind(value)}; 1 keeps the metadata service out of reach of containers",
        )
        return None
    if not MIN_IMDS_HOP_LIMIT <= value <= MAX_IMDS_HOP_LIMIT:
        errors.add(
            path,
            f"{_number_text(value)} is outside AWS's hop limits {MIN_IMDS_HOP_LIMIT} to "
            f"{MAX_IMDS_HOP_LIMIT}; 1 keeps the metadata service out of reach of containers",
        )
        return None
    return value
