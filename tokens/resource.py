"""The EC2 join token resource (Teleport `kind: token`, `version: v2`) and its validation.

Pure Python, no Django: the model, the services, the API, the forms and the management commands
all validate through `validate_resource`, so a token means the same thing whichever door it came
in by. Validation follows Teleport's `ProvisionTokenV2.CheckAndSetDefaults` for the ec2 join method
and is stricter where Teleport is lax (account ID, region and role ARN syntax, TTL bounds, unknown
fields), because a token is a security policy and a typo in it must not silently widen or disable
it. Every problem found is reported at once, each with the document, the field path and the fix.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal, InvalidOperation
from typing import Any

from tokens.constants import (
    CONDITION_FIELDS,
    DEFAULT_IID_TTL,
    DESCRIPTION_MAX_LENGTH,
    JOIN_METHOD_EC2,
    LABEL_KEY_MAX_LENGTH,
    LABEL_VALUE_MAX_LENGTH,
    MAX_ALLOW_RULES,
    MAX_CONDITION_VALUES,
    MAX_IID_TTL,
    MAX_IMDS_HOP_LIMIT,
    MAX_LABELS,
    MAX_REGIONS_PER_RULE,
    MAX_TAG_CONDITIONS,
    MAX_TAG_VALUES,
    MIN_IID_TTL,
    MIN_IMDS_HOP_LIMIT,
    NAME_MAX_LENGTH,
    ORIGIN_LABEL,
    ORIGIN_VALUES,
    PARTITIONS,
    REFUSED_ROLES,
    REGION_DIRECTIONS,
    RESOURCE_ID_CONDITIONS,
    RESOURCE_ID_NOUNS,
    RESOURCE_KIND,
    RESOURCE_VERSION,
    ROLE_ALIASES,
    ROLES,
    TAG_KEY_MAX_LENGTH,
    TAG_VALUE_MAX_LENGTH,
)

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
# Errors


@dataclass(frozen=True)
class FieldError:
    """One problem in one field of one document; `field` is a path like `spec.allow[1].aws_role`.

    `document` counts the resources of an input from 0 (see `tokens.codecs.load_documents`);
    an empty `field` means the document as a whole.
    """

    document: int
    field: str
    message: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class ResourceError(Exception):
    """A token resource (or a batch of them) was refused; `details` lists every problem found.

    The API answers it as 400 `invalid_token_resource` with `details`; commands print `message`
    and each detail. Raised only after all fields were checked, so one round trip shows the user
    everything to fix.
    """

    code = "invalid_token_resource"
    #: A hostile input can hold a million mistakes; the first ones are enough to act on.
    max_details = 100

    def __init__(self, details: Sequence[FieldError], message: str | None = None) -> None:
        self.details: list[FieldError] = list(details[: self.max_details])
        if len(details) > self.max_details:
            hidden = len(details) - self.max_details
            self.details.append(
                FieldError(
                    details[self.max_details].document,
                    "",
                    f"{hidden} more problems are not listed; fix the ones above first",
                )
            )
        self.message = message or _summarise(self.details)
        super().__init__(self.message)

    def as_dict(self) -> dict[str, Any]:
        """The API error body of the contract (section 5)."""
        return {
            "error": self.code,
            "message": self.message,
            "details": [detail.as_dict() for detail in self.details],
        }


def _summarise(details: Sequence[FieldError]) -> str:
    if not details:
        return "the token resource is invalid"
    first = details[0]
    where = f"document {first.document}" + (f", {first.field}" if first.field else "")
    if len(details) == 1:
        return f"invalid token resource: {where}: {first.message}"
    return f"invalid token resource ({len(details)} problems); first: {where}: {first.message}"


class _Errors:
    """Collects the problems of one document so that all of them are reported together."""

    def __init__(self, document: int) -> None:
        self.document = document
        self.items: list[FieldError] = []

    def add(self, path: str, message: str) -> None:
        self.items.append(FieldError(self.document, path, message))

    def __bool__(self) -> bool:
        return bool(self.items)


# --------------------------------------------------------------------------------------------
# Values


class Labels(Mapping[str, str]):
    """An immutable, hashable mapping of label key to value, iterated in key order.

    A frozen dataclass must stay hashable and compare by value; a dict would break both, and a
    tuple of pairs would make `resource.labels["k"]` awkward for callers.
    """

    __slots__ = ("_items", "_map")

    def __init__(self, items: Mapping[str, str] | Iterable[tuple[str, str]] = ()) -> None:
        data = dict(items)
        self._items: tuple[tuple[str, str], ...] = tuple(sorted(data.items()))
        self._map: dict[str, str] = dict(self._items)

    def __getitem__(self, key: str) -> str:
        return self._map[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._map)

    def __len__(self) -> int:
        return len(self._items)

    def __hash__(self) -> int:
        return hash(self._items)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Labels):
            return self._items == other._items
        if isinstance(other, Mapping):
            return self._map == dict(other)
        return NotImplemented

    def __repr__(self) -> str:
        return f"Labels({self._map!r})"


class TagConditions(Mapping[str, tuple[str, ...]]):
    """The `aws_tags` condition of a rule: tag key to the values it may have, immutable.

    Hashable and compared by value like `Labels`, so that rules stay usable as dict keys (the
    duplicate-rule check) whatever order the keys were written in.
    """

    __slots__ = ("_items", "_map")

    def __init__(
        self,
        items: Mapping[str, Iterable[str]] | Iterable[tuple[str, Iterable[str]]] = (),
    ) -> None:
        pairs = items.items() if isinstance(items, Mapping) else items
        data = {key: tuple(values) for key, values in pairs}
        self._items: tuple[tuple[str, tuple[str, ...]], ...] = tuple(sorted(data.items()))
        self._map: dict[str, tuple[str, ...]] = dict(self._items)

    def __getitem__(self, key: str) -> tuple[str, ...]:
        return self._map[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._map)

    def __len__(self) -> int:
        return len(self._items)

    def __hash__(self) -> int:
        return hash(self._items)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, TagConditions):
            return self._items == other._items
        if isinstance(other, Mapping):
            return self._map == {key: tuple(values) for key, values in other.items()}
        return NotImplemented

    def __repr__(self) -> str:
        return f"TagConditions({self._map!r})"


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


def _is_set(value: object) -> bool:
    """Whether a condition field holds a condition (False, None and empties do not)."""
    return value is not None and value is not False and value != () and value != {}


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
# Durations (Go's time.ParseDuration syntax)

_DURATION_UNITS_NS: dict[str, int] = {
    "ns": 1,
    "us": 1_000,
    "\u00b5s": 1_000,  # micro sign, as Go prints it
    "\u03bcs": 1_000,  # Greek mu, which Go also accepts
    "ms": 1_000_000,
    "s": 1_000_000_000,
    "m": 60_000_000_000,
    "h": 3_600_000_000_000,
}
_DURATION_ELEMENT = re.compile(r"([0-9]*(?:\.[0-9]*)?)(ns|us|\u00b5s|\u03bcs|ms|s|m|h)?")
_DURATION_MAX_LENGTH = 64
# Go's time.Duration is an int64 of nanoseconds; beyond that Go reports an overflow.
_DURATION_MAX_NS = 2**63 - 1


def _duration_ns(text: str) -> int:
    if not isinstance(text, str):
        raise ValueError(f"a duration must be a string such as {DEFAULT_IID_TTL!r}")
    if not text:
        raise ValueError(f"the duration is empty; write one such as {DEFAULT_IID_TTL!r}")
    if len(text) > _DURATION_MAX_LENGTH:
        raise ValueError("the duration is too long to be a real one")
    rest, sign = text, 1
    if rest[0] in "+-":
        sign = -1 if rest[0] == "-" else 1
        rest = rest[1:]
    if rest == "0":
        return 0
    if not rest:
        raise ValueError(f"{_show(text)} is not a duration; write one such as {DEFAULT_IID_TTL!r}")
    total = Decimal(0)
    while rest:
        match = _DURATION_ELEMENT.match(rest)
        number, unit = (match.group(1), match.group(2)) if match else ("", None)
        if number in ("", "."):
            raise ValueError(
                f"{_show(text)} is not a duration; write a number followed by a unit, such as "
                f"{DEFAULT_IID_TTL!r}, '90s' or '1h30m'"
            )
        if unit is None:
            trailing = rest[len(number) :]
            if trailing and trailing[0].isalpha():
                bad = re.match(r"[^0-9.]+", trailing)
                raise ValueError(
                    f"{_show(text)} has the unknown unit {bad.group(0) if bad else trailing!r}; "
                    "units are ns, us, ms, s, m and h (e.g. '24h' rather than '1d')"
                )
            raise ValueError(
                f"{_show(text)} has a number without a unit; add one of ns, us, ms, s, m, h "
                f"(e.g. {DEFAULT_IID_TTL!r})"
            )
        try:
            total += Decimal(number) * _DURATION_UNITS_NS[unit]
        except InvalidOperation as exc:
            raise ValueError(f"{_show(text)} is not a duration") from exc
        rest = rest[match.end() :] if match else ""
        if total > _DURATION_MAX_NS:
            raise ValueError(f"{_show(text)} is too large for a duration")
    return sign * int(total)


def parse_duration(text: str) -> timedelta:
    """Parse a Go duration (`"5m"`, `"1h30m"`, `"90s"`, `"1.5h"`, `"300ms"`).

    Raises ValueError with a message fit to show a user. Sub-microsecond parts are dropped
    (timedelta's resolution); nothing this product stores needs them.
    """
    ns = _duration_ns(text)
    micro = abs(ns) // 1_000
    return timedelta(microseconds=micro if ns >= 0 else -micro)


def format_duration(td: timedelta) -> str:
    """The shortest Go-parsable spelling: `5m`, `1h30m`, `1m30.5s`, `300ms`, `0s`.

    Go's own `Duration.String()` writes `5m0s`; both parse to the same value in Go and here, and
    the short form is the one Teleport's documentation and users write.
    """
    micro = td // timedelta(microseconds=1)
    if micro == 0:
        return "0s"
    sign = "-" if micro < 0 else ""
    micro = abs(micro)
    if micro < 1_000_000:
        if micro < 1_000:
            return f"{sign}{micro}us"
        return f"{sign}{_decimal_text(micro, 1_000)}ms"
    hours, micro = divmod(micro, 3_600_000_000)
    minutes, micro = divmod(micro, 60_000_000)
    parts = []
    if hours:
        parts.append(f"{hours}h")
    if minutes:
        parts.append(f"{minutes}m")
    if micro:
        parts.append(f"{_decimal_text(micro, 1_000_000)}s")
    return sign + "".join(parts)


def _decimal_text(value: int, scale: int) -> str:
    whole, frac = divmod(value, scale)
    if not frac:
        return str(whole)
    digits = len(str(scale)) - 1
    return f"{whole}.{frac:0{digits}d}".rstrip("0")


# --------------------------------------------------------------------------------------------
# Timestamps (RFC 3339)

_RFC3339 = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?"
    r"(?:([Zz])|([+-])(\d{2}):(\d{2}))",
    re.ASCII,
)


def parse_timestamp(text: str) -> datetime:
    """Parse an RFC 3339 timestamp, which must carry a zone; the result is in UTC.

    Fractions beyond microseconds (Go writes nanoseconds) are truncated. Raises ValueError.
    """
    match = _RFC3339.fullmatch(text)
    if not match:
        raise ValueError(
            f"{_show(text)} is not an RFC 3339 timestamp with a zone; write it like "
            "2030-01-01T00:00:00Z"
        )
    year, month, day, hour, minute, second = (int(match.group(i)) for i in range(1, 7))
    fraction = (match.group(7) or "").ljust(6, "0")[:6]
    if match.group(8):
        offset = timedelta(0)
    else:
        offset = timedelta(hours=int(match.group(10)), minutes=int(match.group(11)))
        if match.group(9) == "-":
            offset = -offset
    try:
        zone = timezone(offset)
        moment = datetime(year, month, day, hour, minute, second, int(fraction), tzinfo=zone)
        return moment.astimezone(UTC)
    except (ValueError, OverflowError) as exc:
        raise ValueError(f"{_show(text)} is not a valid date and time ({exc})") from exc


def format_timestamp(moment: datetime) -> str:
    """RFC 3339 in UTC with a `Z`, fractions only when present: `2030-01-01T00:00:00Z`."""
    moment = moment.astimezone(UTC)
    text = (
        f"{moment.year:04d}-{moment.month:02d}-{moment.day:02d}"
        f"T{moment.hour:02d}:{moment.minute:02d}:{moment.second:02d}"
    )
    if moment.microsecond:
        text += f".{moment.microsecond:06d}".rstrip("0")
    return text + "Z"


# --------------------------------------------------------------------------------------------
# AWS names

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


def _role_arn_problem(arn: str) -> tuple[str, str, str] | str:
    """(partition, account, arn) for a well-formed IAM role ARN, else the message to show."""
    example = (
        f"write it as arn:<partition>:iam::<12-digit account>:role/<name>, e.g. {_ROLE_EXAMPLE}"
    )
    if len(arn) > _ARN_MAX_LENGTH:
        return f"is longer than {_ARN_MAX_LENGTH} characters, too long for an IAM role ARN"
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
        return f"the ARN's account {_show(account)} is not 12 digits; {example}"
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
_RULE_KEYS = ("aws_account", "aws_regions", "aws_role", *CONDITION_FIELDS)
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
_RULE_EXPLAINED = {
    # Teleport's own wording, which users may search for.
    "aws_arn": 'the "ec2" join method does not support the "aws_arn" parameter; '
    "remove it (aws_arn belongs to the iam join method)",
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


def _check_keys(
    errors: _Errors,
    path: str,
    obj: Mapping[Any, Any],
    allowed: Sequence[str],
    ignored: Sequence[str] = (),
    explain: Mapping[str, str] | None = None,
) -> None:
    for key in obj:
        if key in allowed or key in ignored:
            continue
        where = _join(path, field_name(key))
        if isinstance(key, str) and explain and key in explain:
            errors.add(where, explain[key])
        else:
            errors.add(
                where,
                f"unknown field {_show(key)}; {path or 'a token'} takes only "
                f"{', '.join(allowed)}: remove it or fix its spelling",
            )


def _check_constant(errors: _Errors, path: str, value: object, expected: str) -> None:
    if value is None:
        errors.add(path, f"required; add `{path}: {expected}`")
    elif value != expected:
        errors.add(path, f"must be {_show(expected)}, not {_show(value)}; set `{path}: {expected}`")


def _mapping(
    errors: _Errors, path: str, value: object, required: bool = False
) -> Mapping[Any, Any] | None:
    if value is None:
        if required:
            errors.add(path, f"required; add a {path} mapping")
        return None
    if not isinstance(value, Mapping):
        errors.add(path, f"must be a mapping, not {_kind(value)}")
        return None
    return value


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


# --------------------------------------------------------------------------------------------
# Allow-rule conditions (optional, beyond Teleport; see docs/extensions.md)

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
    if len(arn) > _ARN_MAX_LENGTH:
        return f"is longer than {_ARN_MAX_LENGTH} characters, too long for an ARN"
    parts = arn.split(":", 5)
    if len(parts) != 6 or parts[0] != "arn":
        return f"{_show(arn)} is not an ARN; {example}"
    _, arn_partition, service, region, arn_account, resource = parts
    if arn_partition not in PARTITIONS:
        return (
            f"the ARN's partition {_show(arn_partition)} is not supported; use one of "
            f"{', '.join(PARTITIONS)}"
        )
    if service != "iam":
        return f"{_show(arn)} is not an IAM ARN (service {_show(service)}); {example}"
    if region:
        return f"IAM ARNs have no region, but {_show(arn)} names {_show(region)}; {example}"
    if not _ACCOUNT.fullmatch(arn_account):
        return (
            f"the ARN's account {_show(arn_account)} is not 12 digits (a * may only end the "
            f"ARN); {example}"
        )
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


# --------------------------------------------------------------------------------------------
# Helpers


def field_name(key: object) -> str:
    """A mapping key as it appears in a field path, made safe and short for messages."""
    if isinstance(key, str) and len(key) <= 80:
        return key
    return _show(key)


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _is_unsafe_char(char: str) -> bool:
    code = ord(char)
    return (code < 0x20 and char not in "\n\t") or 0x7F <= code < 0xA0 or 0xD800 <= code <= 0xDFFF


def _kind(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return f"the number {_number_text(value)}"
    if isinstance(value, str):
        return f"the string {_show(value)}"
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list | tuple):
        return "a list"
    if isinstance(value, datetime):
        return "a timestamp"
    if isinstance(value, date):
        return "a date"
    return f"a value of type {type(value).__name__}"


def _show(value: object, limit: int = 80) -> str:
    """A value quoted for a message, cut short so that a hostile input cannot flood logs."""
    if isinstance(value, str):
        text = value if len(value) <= limit else value[:limit] + "..."
        return json.dumps(text, ensure_ascii=True)
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return _number_text(value)
    return _kind(value)


def _number_text(value: int | float) -> str:
    # Python refuses to print integers of more than 4300 digits, and nobody wants to read one.
    if isinstance(value, int) and abs(value) >= 10**30:
        return "with more than 30 digits"
    return str(value)
