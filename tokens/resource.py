"""The EC2 join token resource (Teleport `kind: token`, `version: v2`) and its validation.

Pure Python, no Django: the model, the services, the API, the forms and the management commands
all validate through `validate_resource`, so a token means the same thing whichever door it came
in by. Validation follows Teleport's `ProvisionTokenV2.CheckAndSetDefaults` for the ec2 join method
and is stricter where Teleport is lax (account ID, region and role ARN syntax, TTL bounds, unknown
fields), because a token is a security policy and a typo in it must not silently widen or disable
it. Every problem found is reported at once, each with the document, the field path and the fix.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from tokens.allow_rules import AllowRule, _check_allow
from tokens.aws_names import partition_of_region
from tokens.constants import (
    DEFAULT_IID_TTL,
    DESCRIPTION_MAX_LENGTH,
    JOIN_METHOD_EC2,
    LABEL_KEY_MAX_LENGTH,
    LABEL_VALUE_MAX_LENGTH,
    MAX_IID_TTL,
    MAX_LABELS,
    MIN_IID_TTL,
    NAME_MAX_LENGTH,
    ORIGIN_LABEL,
    ORIGIN_VALUES,
    REFUSED_ROLES,
    RESOURCE_KIND,
    RESOURCE_VERSION,
    ROLE_ALIASES,
    ROLES,
)
from tokens.durations import (
    _duration_ns,
    format_duration,
    format_timestamp,
    parse_duration,
    parse_timestamp,
)
from tokens.errors import (
    FieldError,
    ResourceError,
    _check_keys,
    _Errors,
    _is_unsafe_char,
    _kind,
    _mapping,
    _show,
    field_name,
)
from tokens.frozen import FrozenMapping
from tokens.rule_conditions import TagConditions

# The resource's parts live in their own modules (errors, durations, AWS names, allow rules and
# their conditions); callers keep importing every public name from here.
__all__ = [
    "AllowRule",
    "FieldError",
    "Labels",
    "ResourceError",
    "TagConditions",
    "TokenResource",
    "canonical_role",
    "field_name",
    "format_duration",
    "format_timestamp",
    "parse_duration",
    "parse_timestamp",
    "partition_of_region",
    "validate_resource",
]

# --------------------------------------------------------------------------------------------
# Values


class Labels(FrozenMapping[str]):
    """A token's labels: key to value, immutable, hashable, iterated in key order."""

    __slots__ = ()


@dataclass(frozen=True)
class TokenResource:
    """A validated EC2 join token. Build it with `validate_resource`, or from a stored row.

    The constructor only normalises containers (tuples, `Labels`) and the expiry's timezone; it
    does not validate, because rows are only ever written from validated resources.
    """

    name: str
    roles: tuple[str, ...]
    allow: tuple[AllowRule, ...]
    join_method: str = JOIN_METHOD_EC2
    aws_iid_ttl: str = DEFAULT_IID_TTL
    expires: datetime | None = None
    labels: Mapping[str, str] = field(default_factory=Labels)
    description: str = ""
    # This product's extension (docs/extensions.md, "Re-join"): a registered host that proves it
    # holds its key may join again without an admin. Off unless set, as in Teleport.
    allow_rejoin: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "roles", tuple(self.roles))
        object.__setattr__(self, "allow", tuple(self.allow))
        if not isinstance(self.labels, Labels):
            object.__setattr__(self, "labels", Labels(self.labels))
        if self.expires is not None:
            if self.expires.tzinfo is None or self.expires.utcoffset() is None:
                # A naive expiry would be read in whatever zone the reader assumes.
                raise ValueError("TokenResource.expires must be timezone-aware")
            object.__setattr__(self, "expires", self.expires.astimezone(UTC))

    @property
    def iid_ttl(self) -> timedelta:
        """How old (since the instance's pendingTime) an identity document may be."""
        return parse_duration(self.aws_iid_ttl)

    def is_expired(self, now: datetime) -> bool:
        """True from the expiry instant on (Teleport treats an expired token as not found)."""
        return self.expires is not None and now >= self.expires

    def to_dict(self) -> dict[str, Any]:
        """The tctl object; `validate_resource(r.to_dict()) == r` for every valid `r`."""
        metadata: dict[str, Any] = {"name": self.name}
        if self.description:
            metadata["description"] = self.description
        if self.expires is not None:
            metadata["expires"] = format_timestamp(self.expires)
        if self.labels:
            metadata["labels"] = dict(self.labels)
        spec: dict[str, Any] = {
            "roles": list(self.roles),
            "join_method": self.join_method,
            "aws_iid_ttl": self.aws_iid_ttl,
            "allow": [rule.to_dict() for rule in self.allow],
        }
        if self.allow_rejoin:
            # Written only when on, so that a plain token exports exactly as Teleport's.
            spec["allow_rejoin"] = True
        return {
            "kind": RESOURCE_KIND,
            "version": RESOURCE_VERSION,
            "metadata": metadata,
            "spec": spec,
        }


# --------------------------------------------------------------------------------------------
# Roles


_ROLE_LOOKUP: dict[str, str] = {role.lower(): role for role in ROLES} | ROLE_ALIASES


def canonical_role(name: str) -> str | None:
    """Teleport's spelling of a role usable with ec2 (`node` -> `Node`), or None."""
    return _ROLE_LOOKUP.get(name.lower())


# --------------------------------------------------------------------------------------------
# Validation

_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]*", re.ASCII)
_LABEL_KEY = re.compile(r"[a-zA-Z/.0-9_*-]+", re.ASCII)
_TOP_KEYS = ("kind", "version", "metadata", "spec")
_METADATA_KEYS = ("name", "description", "labels", "expires")
# Teleport writes these on `tctl get`; they carry no policy, so an export re-imports cleanly.
_METADATA_IGNORED = ("namespace", "revision", "id")
_SPEC_KEYS = ("roles", "join_method", "aws_iid_ttl", "allow", "allow_rejoin")
_OTHER_METHOD_BLOCKS = (
    "azure",
    "azure_devops",
    "bitbucket",
    "bound_keypair",
    "circleci",
    "env0",
    "gcp",
    "github",
    "gitlab",
    "kubernetes",
    "oracle",
    "spacelift",
    "terraform_cloud",
    "tpm",
)
_SPEC_EXPLAINED = {
    "bot_name": (
        "bot_name belongs to Bot tokens, and the Bot role cannot use the ec2 join method; remove it"
    ),
    "suggested_labels": "suggested labels are not supported for ec2 tokens here; remove them",
    "suggested_agent_matcher_labels": (
        "suggested agent matcher labels are not supported for ec2 tokens here; remove them"
    ),
} | {
    block: (
        f"the {block} block configures the {block} join method; only the ec2 join method is "
        "supported, remove it"
    )
    for block in _OTHER_METHOD_BLOCKS
}
_ONLY_EC2 = "only the ec2 join method is supported"


def validate_resource(obj: object, document: int = 0) -> TokenResource:
    """Check one tctl-shaped token object (a decoded YAML/JSON mapping) and build the resource.

    Raises ResourceError listing every problem found, each with `document` and a field path.
    Kubernetes manifests are converted by `tokens.codecs` before they reach this function.
    """
    errors = _Errors(document)
    if not isinstance(obj, Mapping):
        errors.add(
            "",
            f"a token resource must be a mapping with kind, version, metadata and spec, "
            f"not {_kind(obj)}",
        )
        raise ResourceError(errors.items)

    _check_keys(errors, "", obj, _TOP_KEYS, explain={"apiVersion": _K8S_HINT})
    _check_constant(errors, "kind", obj.get("kind"), RESOURCE_KIND)
    _check_constant(errors, "version", obj.get("version"), RESOURCE_VERSION)

    metadata = _mapping(errors, "metadata", obj.get("metadata"), required=True)
    name, description, expires, labels = "", "", None, Labels()
    if metadata is not None:
        name = _check_name(errors, metadata.get("name"))
        _check_keys(errors, "metadata", metadata, _METADATA_KEYS, ignored=_METADATA_IGNORED)
        namespace = metadata.get("namespace")
        if namespace not in (None, "default"):
            errors.add(
                "metadata.namespace",
                f"namespace {_show(namespace)} does not exist; tokens live in the default "
                "namespace, remove the field",
            )
        description = _check_description(errors, metadata.get("description"))
        expires = _check_expires(errors, metadata.get("expires"))
        labels = _check_labels(errors, metadata.get("labels"))

    spec = _mapping(errors, "spec", obj.get("spec"), required=True)
    roles: tuple[str, ...] = ()
    rules: tuple[AllowRule, ...] = ()
    join_method, ttl = JOIN_METHOD_EC2, DEFAULT_IID_TTL
    allow_rejoin = False
    if spec is not None:
        _check_keys(errors, "spec", spec, _SPEC_KEYS, explain=_SPEC_EXPLAINED)
        roles = _check_roles(errors, spec.get("roles"))
        join_method = _check_join_method(errors, spec.get("join_method"), spec.get("allow"))
        ttl = _check_ttl(errors, spec.get("aws_iid_ttl"))
        rules = _check_allow(errors, spec.get("allow"))
        allow_rejoin = _check_allow_rejoin(errors, spec.get("allow_rejoin"))

    if errors:
        raise ResourceError(errors.items)
    return TokenResource(
        name=name,
        roles=roles,
        allow=rules,
        join_method=join_method,
        aws_iid_ttl=ttl,
        expires=expires,
        labels=labels,
        description=description,
        allow_rejoin=allow_rejoin,
    )


_K8S_HINT = (
    "apiVersion marks a Kubernetes manifest; import it as YAML or JSON text (the Kubernetes "
    "form is converted there) or write the tctl form with kind: token"
)


def _check_constant(errors: _Errors, path: str, value: object, expected: str) -> None:
    if value is None:
        errors.add(path, f"required; add `{path}: {expected}`")
    elif value != expected:
        errors.add(path, f"must be {_show(expected)}, not {_show(value)}; set `{path}: {expected}`")


def _check_name(errors: _Errors, value: object) -> str:
    path = "metadata.name"
    if value is None or value == "":
        errors.add(path, "required; give the token a name, e.g. ec2-token")
        return ""
    if not isinstance(value, str):
        errors.add(path, f"must be a string, not {_kind(value)}; put the name in quotes")
        return ""
    if len(value) > NAME_MAX_LENGTH:
        errors.add(path, f"is {len(value)} characters long; use at most {NAME_MAX_LENGTH}")
        return ""
    if not _NAME.fullmatch(value):
        errors.add(
            path,
            f"{_show(value)} is not a safe name; use letters, digits, '-', '_' and '.', "
            "starting with a letter, digit or '_'",
        )
        return ""
    return value


def _check_description(errors: _Errors, value: object) -> str:
    path = "metadata.description"
    if value is None:
        return ""
    if not isinstance(value, str):
        errors.add(path, f"must be a string, not {_kind(value)}; put the text in quotes")
        return ""
    if len(value) > DESCRIPTION_MAX_LENGTH:
        errors.add(path, f"is {len(value)} characters long; shorten it to {DESCRIPTION_MAX_LENGTH}")
        return ""
    if any(_is_unsafe_char(char) for char in value):
        # Control characters would reach terminals and logs through every export, and lone
        # surrogates (possible through JSON escapes) cannot be stored as UTF-8.
        errors.add(
            path,
            "contains control characters or invalid code points; only newlines and tabs are "
            "allowed besides printable text",
        )
        return ""
    return value


def _check_expires(errors: _Errors, value: object) -> datetime | None:
    path = "metadata.expires"
    if value is None:
        return None
    if isinstance(value, datetime):
        if value.tzinfo is None or value.utcoffset() is None:
            errors.add(
                path,
                "has no timezone; add one, e.g. 2030-01-01T00:00:00Z (Z means UTC)",
            )
            return None
        return value.astimezone(UTC)
    if isinstance(value, date):
        errors.add(
            path,
            f"{value.isoformat()} is a date without a time and timezone; write e.g. "
            f"{value.isoformat()}T00:00:00Z",
        )
        return None
    if not isinstance(value, str):
        errors.add(
            path, f"must be an RFC 3339 timestamp such as 2030-01-01T00:00:00Z, not {_kind(value)}"
        )
        return None
    try:
        return parse_timestamp(value)
    except ValueError as exc:
        errors.add(path, str(exc))
        return None


def _check_labels(errors: _Errors, value: object) -> Labels:
    path = "metadata.labels"
    labels = _mapping(errors, path, value)
    if labels is None:
        return Labels()
    if len(labels) > MAX_LABELS:
        errors.add(path, f"has {len(labels)} labels; use at most {MAX_LABELS}")
        return Labels()
    good: dict[str, str] = {}
    for key, text in labels.items():
        where = f"{path}[{_show(key)}]"
        if not isinstance(key, str):
            errors.add(where, f"a label key must be a string, not {_kind(key)}; quote it")
            continue
        if len(key) > LABEL_KEY_MAX_LENGTH:
            errors.add(where, f"the key is longer than {LABEL_KEY_MAX_LENGTH} characters")
            continue
        if not _LABEL_KEY.fullmatch(key):
            errors.add(
                where,
                f"invalid label key: {_show(key)}; use letters, digits and / . _ * - only",
            )
            continue
        if not isinstance(text, str):
            errors.add(
                where, f"a label value must be a string, not {_kind(text)}; put it in quotes"
            )
            continue
        if len(text) > LABEL_VALUE_MAX_LENGTH:
            errors.add(where, f"the value is longer than {LABEL_VALUE_MAX_LENGTH} characters")
            continue
        if any(_is_unsafe_char(char) for char in text):
            errors.add(
                where,
                "the value contains control characters or invalid code points; only newlines "
                "and tabs are allowed besides printable text",
            )
            continue
        if key == ORIGIN_LABEL and text not in ORIGIN_VALUES:
            errors.add(
                where,
                f"invalid origin value {_show(text)}, must be one of {', '.join(ORIGIN_VALUES)}",
            )
            continue
        good[key] = text
    return Labels(good)


def _check_roles(errors: _Errors, value: object) -> tuple[str, ...]:
    path = "spec.roles"
    if value is None or value == []:
        errors.add(path, "the token is missing roles; list at least one, e.g. [Node]")
        return ()
    if not isinstance(value, list):
        errors.add(path, f"must be a list of roles such as [Node], not {_kind(value)}")
        return ()
    roles: list[str] = []
    seen: dict[str, int] = {}
    for index, item in enumerate(value):
        where = f"{path}[{index}]"
        if not isinstance(item, str):
            errors.add(where, f"a role must be a string such as Node, not {_kind(item)}")
            continue
        role = canonical_role(item)
        if role is None:
            reason = REFUSED_ROLES.get(item.lower())
            errors.add(
                where,
                reason or f"role {_show(item)} is not registered; use one of {', '.join(ROLES)}",
            )
            continue
        if role in seen:
            errors.add(
                where, f"duplicate role {_show(role)} (also {path}[{seen[role]}]); list it once"
            )
            continue
        seen[role] = index
        roles.append(role)
    return tuple(roles)


def _check_join_method(errors: _Errors, value: object, allow: object) -> str:
    path = "spec.join_method"
    if value is None:
        if allow:
            return JOIN_METHOD_EC2
        errors.add(
            path,
            f"{_ONLY_EC2}; without join_method and allow rules Teleport would make this a "
            "shared-secret token: set join_method: ec2 and add allow rules",
        )
        return JOIN_METHOD_EC2
    if value != JOIN_METHOD_EC2:
        errors.add(path, f"{_ONLY_EC2}, not {_show(value)}; set join_method: ec2")
    return JOIN_METHOD_EC2


def _check_allow_rejoin(errors: _Errors, value: object) -> bool:
    """`spec.allow_rejoin`: a boolean; a string such as "true" is refused, not guessed at."""
    if value is None:
        return False
    if not isinstance(value, bool):
        errors.add(
            "spec.allow_rejoin",
            f"must be true or false, not {_kind(value)}; write `allow_rejoin: true` to let "
            "registered hosts re-join with a proof of their key, or remove the field",
        )
        return False
    return value


def _check_ttl(errors: _Errors, value: object) -> str:
    path = "spec.aws_iid_ttl"
    if value is None:
        return DEFAULT_IID_TTL
    if isinstance(value, bool) or not isinstance(value, str):
        errors.add(
            path,
            f"must be a Go duration string such as {DEFAULT_IID_TTL!r}, not {_kind(value)} "
            "(a bare number has no unit)",
        )
        return DEFAULT_IID_TTL
    if not value.strip():
        errors.add(
            path,
            f"is empty; omit the field for the default {DEFAULT_IID_TTL} or give a duration "
            "such as 10m",
        )
        return DEFAULT_IID_TTL
    try:
        ns = _duration_ns(value)
    except ValueError as exc:
        errors.add(path, str(exc))
        return DEFAULT_IID_TTL
    if ns <= 0:
        errors.add(
            path,
            f"must be positive, not {_show(value)}; omit the field for the default "
            f"{DEFAULT_IID_TTL} or give a duration such as 10m",
        )
    elif ns < MIN_IID_TTL * 1_000_000_000:
        errors.add(path, f"{_show(value)} is shorter than {MIN_IID_TTL}s; no instance could join")
    elif ns > MAX_IID_TTL * 1_000_000_000:
        errors.add(
            path,
            f"{_show(value)} is longer than the maximum of "
            f"{format_duration(timedelta(seconds=MAX_IID_TTL))}: an identity document is a "
            "bearer credential, keep its window short (the default is 5m)",
        )
    else:
        return format_duration(timedelta(microseconds=ns // 1_000))
    return DEFAULT_IID_TTL
