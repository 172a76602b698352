"""Validation of the token resource: every rule, valid and invalid, with field path and message."""

from __future__ import annotations

import copy
from datetime import UTC, date, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tokens.constants import MAX_ALLOW_RULES, MAX_LABELS, MAX_REGIONS_PER_RULE, NAME_MAX_LENGTH
from tokens.resource import (
    AllowRule,
    FieldError,
    Labels,
    ResourceError,
    TokenResource,
    format_duration,
    format_timestamp,
    parse_duration,
    parse_timestamp,
    partition_of_region,
    validate_resource,
)

DELETE = object()

VALID = {
    "kind": "token",
    "version": "v2",
    "metadata": {"name": "ec2-token"},
    "spec": {
        "roles": ["Node"],
        "join_method": "ec2",
        "aws_iid_ttl": "5m",
        "allow": [{"aws_account": "111111111111", "aws_regions": ["us-west-1", "us-west-2"]}],
    },
}


def token(**changes: object) -> dict:
    """A copy of VALID with `changes` applied; keys are paths like `spec.allow.0.aws_account`."""
    obj = copy.deepcopy(VALID)
    for path, value in changes.items():
        *parents, last = path.split(".")
        node: object = obj
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node.setdefault(part, {})
        if isinstance(node, list):
            node[int(last)] = value
        elif value is DELETE:
            node.pop(last, None)
        else:
            node[last] = value
    return obj


def problems(obj: object) -> list[FieldError]:
    with pytest.raises(ResourceError) as caught:
        validate_resource(obj, document=3)
    return caught.value.details


# Each case: the change, the field that must be named, and a fragment of its message.
INVALID = {
    "a list instead of a mapping": ([VALID], "", "must be a mapping"),
    "no kind": ({"kind": DELETE}, "kind", "required"),
    "another kind": ({"kind": "role"}, "kind", 'must be "token"'),
    "no version": ({"version": DELETE}, "version", "required"),
    "version v1": ({"version": "v1"}, "version", 'must be "v2"'),
    "an unknown top-level field": ({"status": {}}, "status", "unknown field"),
    "a Kubernetes apiVersion": (
        {"apiVersion": "resources.teleport.dev/v2"},
        "apiVersion",
        "Kubernetes manifest",
    ),
    "no metadata": ({"metadata": DELETE}, "metadata", "required"),
    "metadata as a list": ({"metadata": ["ec2-token"]}, "metadata", "must be a mapping"),
    "no name": ({"metadata.name": DELETE}, "metadata.name", "required"),
    "an empty name": ({"metadata.name": ""}, "metadata.name", "required"),
    "a numeric name": ({"metadata.name": 1234}, "metadata.name", "put the name in quotes"),
    "a name with a space": ({"metadata.name": "ec2 token"}, "metadata.name", "not a safe name"),
    "a name with a slash": ({"metadata.name": "a/b"}, "metadata.name", "not a safe name"),
    "a name starting with a dot": ({"metadata.name": ".hidden"}, "metadata.name", "starting"),
    "a name starting with a dash": ({"metadata.name": "-x"}, "metadata.name", "starting"),
    "a name with non-ASCII letters": ({"metadata.name": "tökén"}, "metadata.name", "safe name"),
    "a name too long": (
        {"metadata.name": "a" * (NAME_MAX_LENGTH + 1)},
        "metadata.name",
        f"at most {NAME_MAX_LENGTH}",
    ),
    "another namespace": ({"metadata.namespace": "prod"}, "metadata.namespace", "default"),
    "an unknown metadata field": ({"metadata.owner": "ops"}, "metadata.owner", "unknown field"),
    "a numeric description": ({"metadata.description": 5}, "metadata.description", "string"),
    "a description too long": (
        {"metadata.description": "x" * 1025},
        "metadata.description",
        "shorten it",
    ),
    "a description with a NUL": (
        {"metadata.description": "a\x00b"},
        "metadata.description",
        "control characters",
    ),
    "a description with an escape sequence": (
        {"metadata.description": "\x1b[31mred"},
        "metadata.description",
        "control characters",
    ),
    "a description with a lone surrogate": (
        {"metadata.description": "a\ud800"},
        "metadata.description",
        "invalid code points",
    ),
    "a naive expiry": (
        {"metadata.expires": datetime(2030, 1, 1)},
        "metadata.expires",
        "no timezone",
    ),
    "an expiry that is a date": (
        {"metadata.expires": date(2030, 1, 1)},
        "metadata.expires",
        "2030-01-01T00:00:00Z",
    ),
    "an expiry in words": ({"metadata.expires": "tomorrow"}, "metadata.expires", "RFC 3339"),
    "an expiry without a zone": (
        {"metadata.expires": "2030-01-01T00:00:00"},
        "metadata.expires",
        "with a zone",
    ),
    "an expiry on a day that does not exist": (
        {"metadata.expires": "2030-02-30T00:00:00Z"},
        "metadata.expires",
        "not a valid date",
    ),
    "an expiry as a number": ({"metadata.expires": 1893456000}, "metadata.expires", "RFC 3339"),
    "labels as a list": ({"metadata.labels": ["env"]}, "metadata.labels", "must be a mapping"),
    "a label key with a space": (
        {"metadata.labels": {"bad key": "x"}},
        'metadata.labels["bad key"]',
        "invalid label key",
    ),
    "a label key too long": (
        {"metadata.labels": {"k" * 257: "x"}},
        f'metadata.labels["{"k" * 80}..."]',
        "longer than 256",
    ),
    "a numeric label value": (
        {"metadata.labels": {"env": 1}},
        'metadata.labels["env"]',
        "put it in quotes",
    ),
    "a label value with a control character": (
        {"metadata.labels": {"env": "a\x07"}},
        'metadata.labels["env"]',
        "control characters",
    ),
    "an origin label Teleport does not know": (
        {"metadata.labels": {"teleport.dev/origin": "manual"}},
        'metadata.labels["teleport.dev/origin"]',
        "invalid origin value",
    ),
    "too many labels": (
        {"metadata.labels": {f"k{i}": "v" for i in range(MAX_LABELS + 1)}},
        "metadata.labels",
        f"at most {MAX_LABELS}",
    ),
    "no spec": ({"spec": DELETE}, "spec", "required"),
    "spec as a string": ({"spec": "ec2"}, "spec", "must be a mapping"),
    "a bot_name": ({"spec.bot_name": "robot"}, "spec.bot_name", "Bot role cannot use"),
    "a github block": ({"spec.github": {}}, "spec.github", "only the ec2 join method"),
    "suggested labels": ({"spec.suggested_labels": {}}, "spec.suggested_labels", "not supported"),
    "a misspelt spec field": ({"spec.aws_iid_tll": "5m"}, "spec.aws_iid_tll", "unknown field"),
    "no roles": ({"spec.roles": DELETE}, "spec.roles", "missing roles"),
    "an empty role list": ({"spec.roles": []}, "spec.roles", "missing roles"),
    "roles as a string": ({"spec.roles": "Node"}, "spec.roles", "must be a list"),
    "a role that is not a string": ({"spec.roles": [1]}, "spec.roles[0]", "must be a string"),
    "an unknown role": ({"spec.roles": ["Foo"]}, "spec.roles[0]", 'role "Foo" is not registered'),
    "the Bot role": (
        {"spec.roles": ["Bot"]},
        "spec.roles[0]",
        "the Bot role cannot use the ec2 join method; use",
    ),
    "the Instance role": ({"spec.roles": ["instance"]}, "spec.roles[0]", "Instance role"),
    "the Auth role": ({"spec.roles": ["Auth"]}, "spec.roles[0]", "never granted"),
    "the Admin role": ({"spec.roles": ["Admin"]}, "spec.roles[0]", "internal"),
    "a role listed twice in two spellings": (
        {"spec.roles": ["Node", "node"]},
        "spec.roles[1]",
        'duplicate role "Node"',
    ),
    "the token join method": (
        {"spec.join_method": "token"},
        "spec.join_method",
        "only the ec2 join method is supported",
    ),
    "the iam join method": (
        {"spec.join_method": "iam"},
        "spec.join_method",
        "only the ec2 join method is supported",
    ),
    "an upper-case join method": (
        {"spec.join_method": "EC2"},
        "spec.join_method",
        "only the ec2 join method is supported",
    ),
    "no join method and no allow rules": (
        {"spec.join_method": DELETE, "spec.allow": DELETE},
        "spec.join_method",
        "only the ec2 join method is supported",
    ),
    "no allow rules": (
        {"spec.allow": DELETE},
        "spec.allow",
        'the "ec2" join method requires defined token allow rules',
    ),
    "an empty allow list": ({"spec.allow": []}, "spec.allow", "requires defined token allow"),
    "allow as a mapping": (
        {"spec.allow": {"aws_account": "111111111111"}},
        "spec.allow",
        "must be a list",
    ),
    "too many allow rules": (
        {"spec.allow": [{"aws_account": f"{i:012d}"} for i in range(MAX_ALLOW_RULES + 1)]},
        "spec.allow",
        f"at most {MAX_ALLOW_RULES}",
    ),
    "a rule that is a string": ({"spec.allow": ["111111111111"]}, "spec.allow[0]", "mapping"),
    "a rule with aws_arn": (
        {"spec.allow.0.aws_arn": "arn:aws:sts::111111111111:assumed-role/x/y"},
        "spec.allow[0].aws_arn",
        'the "ec2" join method does not support the "aws_arn" parameter',
    ),
    "a misspelt rule field": (
        {"spec.allow.0.aws_acount": "111111111111"},
        "spec.allow[0].aws_acount",
        "unknown field",
    ),
    "a rule with neither account nor role": (
        {"spec.allow": [{"aws_regions": ["us-west-2"]}]},
        "spec.allow[0]",
        'must set "aws_account" or "aws_role"',
    ),
    "an account that lost its quotes": (
        {"spec.allow.0.aws_account": 111111111111},
        "spec.allow[0].aws_account",
        'write aws_account: "111111111111" in quotes',
    ),
    "an account that lost its leading zeros": (
        {"spec.allow.0.aws_account": 11111111111},
        "spec.allow[0].aws_account",
        "leading zeros",
    ),
    "an account too short": (
        {"spec.allow.0.aws_account": "12345"},
        "spec.allow[0].aws_account",
        "exactly 12 digits",
    ),
    "an account with a letter": (
        {"spec.allow.0.aws_account": "11111111111a"},
        "spec.allow[0].aws_account",
        "exactly 12 digits",
    ),
    "an account with a space": (
        {"spec.allow.0.aws_account": " 111111111111"},
        "spec.allow[0].aws_account",
        "exactly 12 digits",
    ),
    "an account with non-ASCII digits": (
        {"spec.allow.0.aws_account": "\u0661" * 12},
        "spec.allow[0].aws_account",
        "exactly 12 digits",
    ),
    "an account that is a boolean": (
        {"spec.allow.0.aws_account": True},
        "spec.allow[0].aws_account",
        "12-digit",
    ),
    "regions as a string": (
        {"spec.allow.0.aws_regions": "us-west-2"},
        "spec.allow[0].aws_regions",
        "must be a list",
    ),
    "a region without a number": (
        {"spec.allow.0.aws_regions": ["us-west"]},
        "spec.allow[0].aws_regions[0]",
        "not an AWS region",
    ),
    "an upper-case region": (
        {"spec.allow.0.aws_regions": ["US-WEST-2"]},
        "spec.allow[0].aws_regions[0]",
        "lower case",
    ),
    "a region of no partition": (
        {"spec.allow.0.aws_regions": ["mars-east-1"]},
        "spec.allow[0].aws_regions[0]",
        "not an AWS region",
    ),
    "a region numbered zero": (
        {"spec.allow.0.aws_regions": ["us-east-0"]},
        "spec.allow[0].aws_regions[0]",
        "not an AWS region",
    ),
    "an availability zone instead of a region": (
        {"spec.allow.0.aws_regions": ["us-east-1a"]},
        "spec.allow[0].aws_regions[0]",
        "not an AWS region",
    ),
    "a region that is a number": (
        {"spec.allow.0.aws_regions": [1]},
        "spec.allow[0].aws_regions[0]",
        "must be a string",
    ),
    "a region listed twice": (
        {"spec.allow.0.aws_regions": ["us-west-2", "us-west-2"]},
        "spec.allow[0].aws_regions[1]",
        "duplicate region",
    ),
    "regions of two partitions": (
        {"spec.allow.0.aws_regions": ["us-west-2", "us-gov-west-1"]},
        "spec.allow[0].aws_regions",
        "mixes the partitions aws (us-west-2), aws-us-gov (us-gov-west-1)",
    ),
    "too many regions": (
        {"spec.allow.0.aws_regions": ["us-west-2"] * (MAX_REGIONS_PER_RULE + 1)},
        "spec.allow[0].aws_regions",
        f"at most {MAX_REGIONS_PER_RULE}",
    ),
    "a role name instead of an ARN": (
        {"spec.allow.0.aws_role": "teleport-DescribeInstances-role"},
        "spec.allow[0].aws_role",
        "is not an ARN",
    ),
    "a user ARN": (
        {"spec.allow.0.aws_role": "arn:aws:iam::111111111111:user/bob"},
        "spec.allow[0].aws_role",
        "names an IAM user, not a role",
    ),
    "an assumed-role ARN": (
        {"spec.allow.0.aws_role": "arn:aws:sts::111111111111:assumed-role/r/s"},
        "spec.allow[0].aws_role",
        "not an IAM ARN",
    ),
    "an ARN of another service": (
        {"spec.allow.0.aws_role": "arn:aws:s3:::bucket"},
        "spec.allow[0].aws_role",
        "not an IAM ARN",
    ),
    "an IAM ARN with a region": (
        {"spec.allow.0.aws_role": "arn:aws:iam:us-west-2:111111111111:role/r"},
        "spec.allow[0].aws_role",
        "IAM ARNs have no region",
    ),
    "an ARN of an unknown partition": (
        {"spec.allow.0.aws_role": "arn:aws-iso:iam::111111111111:role/r"},
        "spec.allow[0].aws_role",
        'partition "aws-iso" is not supported',
    ),
    "an ARN with a short account": (
        {"spec.allow.0.aws_role": "arn:aws:iam::1111:role/r"},
        "spec.allow[0].aws_role",
        "is not 12 digits",
    ),
    "an ARN with a space in the role name": (
        {"spec.allow.0.aws_role": "arn:aws:iam::111111111111:role/te st"},
        "spec.allow[0].aws_role",
        "invalid role path or name",
    ),
    "an ARN with a role name too long": (
        {"spec.allow.0.aws_role": "arn:aws:iam::111111111111:role/" + "r" * 65},
        "spec.allow[0].aws_role",
        "invalid role path or name",
    ),
    "an ARN with an empty role name": (
        {"spec.allow.0.aws_role": "arn:aws:iam::111111111111:role/"},
        "spec.allow[0].aws_role",
        "invalid role path or name",
    ),
    "a role ARN that is not a string": (
        {"spec.allow.0.aws_role": ["arn"]},
        "spec.allow[0].aws_role",
        "must be an IAM role ARN string",
    ),
    "a role in another account than the rule's": (
        {"spec.allow.0.aws_role": "arn:aws:iam::222222222222:role/r"},
        "spec.allow[0].aws_role",
        "the role is in account 222222222222 but aws_account is 111111111111",
    ),
    "a role in another partition than the regions'": (
        {"spec.allow.0.aws_role": "arn:aws-cn:iam::111111111111:role/r"},
        "spec.allow[0].aws_role",
        "partition aws-cn but aws_regions are in aws",
    ),
    "the same rule twice": (
        {"spec.allow": [{"aws_account": "111111111111"}, {"aws_account": "111111111111"}]},
        "spec.allow[1]",
        "same rule as spec.allow[0]",
    ),
    "a TTL as a bare number": (
        {"spec.aws_iid_ttl": 300},
        "spec.aws_iid_ttl",
        "Go duration string",
    ),
    "a TTL in words": ({"spec.aws_iid_ttl": "5 minutes"}, "spec.aws_iid_ttl", "without a unit"),
    "a TTL in days": ({"spec.aws_iid_ttl": "1d"}, "spec.aws_iid_ttl", "unknown unit"),
    "a TTL without a number": ({"spec.aws_iid_ttl": "m"}, "spec.aws_iid_ttl", "a number"),
    "a zero TTL": ({"spec.aws_iid_ttl": "0"}, "spec.aws_iid_ttl", "must be positive"),
    "a zero TTL with a unit": ({"spec.aws_iid_ttl": "0s"}, "spec.aws_iid_ttl", "positive"),
    "a negative TTL": ({"spec.aws_iid_ttl": "-5m"}, "spec.aws_iid_ttl", "must be positive"),
    "a TTL under a second": ({"spec.aws_iid_ttl": "500ms"}, "spec.aws_iid_ttl", "shorter than 1s"),
    "a TTL over a day": ({"spec.aws_iid_ttl": "24h1s"}, "spec.aws_iid_ttl", "maximum of 24h"),
    "an empty TTL": ({"spec.aws_iid_ttl": ""}, "spec.aws_iid_ttl", "is empty"),
}


@pytest.mark.parametrize(
    ("changes", "field", "fragment"), list(INVALID.values()), ids=list(INVALID)
)
def test_it_refuses_an_invalid_token_naming_the_field_and_the_fix(
    changes: object, field: str, fragment: str
) -> None:
    obj = changes if isinstance(changes, list) else token(**changes)

    found = problems(obj)

    assert [p.field for p in found if fragment in p.message] == [field], found
    assert all(p.document == 3 for p in found)


def test_it_reports_every_problem_of_a_document_at_once() -> None:
    obj = token(
        **{
            "metadata.name": "bad name",
            "spec.roles": ["Bot", "Node", "node"],
            "spec.aws_iid_ttl": "1d",
            "spec.allow.0.aws_account": "1",
            "spec.allow.0.aws_regions": ["mars-1"],
        }
    )

    fields = [p.field for p in problems(obj)]

    assert fields == [
        "metadata.name",
        "spec.roles[0]",
        "spec.roles[2]",
        "spec.aws_iid_ttl",
        "spec.allow[0].aws_account",
        "spec.allow[0].aws_regions[0]",
    ]


def test_the_error_carries_the_api_code_and_a_readable_summary() -> None:
    with pytest.raises(ResourceError) as caught:
        validate_resource(token(**{"spec.allow.0.aws_account": "1"}), document=2)

    error = caught.value
    assert error.code == "invalid_token_resource"
    assert error.message.startswith("invalid token resource: document 2, spec.allow[0].aws_account")
    assert error.as_dict() == {
        "error": "invalid_token_resource",
        "message": error.message,
        "details": [
            {
                "document": 2,
                "field": "spec.allow[0].aws_account",
                "message": error.details[0].message,
            }
        ],
    }


def test_it_builds_the_guide_token_with_its_values() -> None:
    resource = validate_resource(VALID)

    assert resource == TokenResource(
        name="ec2-token",
        roles=("Node",),
        allow=(AllowRule(aws_account="111111111111", aws_regions=("us-west-1", "us-west-2")),),
    )
    assert resource.join_method == "ec2"
    assert resource.aws_iid_ttl == "5m"
    assert resource.iid_ttl == timedelta(minutes=5)
    assert resource.expires is None
    assert resource.labels == {}
    assert resource.description == ""


@pytest.mark.parametrize(
    ("written", "canonical"),
    [
        ("node", "Node"),
        ("NODE", "Node"),
        ("proxy", "Proxy"),
        ("kube", "Kube"),
        ("app", "App"),
        ("db", "Db"),
        ("DB", "Db"),
        ("windows_desktop", "WindowsDesktop"),
        ("windowsdesktop", "WindowsDesktop"),
        ("WindowsDesktop", "WindowsDesktop"),
        ("discovery", "Discovery"),
        ("okta", "Okta"),
        ("mdm", "MDM"),
    ],
)
def test_it_matches_roles_case_insensitively_and_stores_them_canonically(
    written: str, canonical: str
) -> None:
    assert validate_resource(token(**{"spec.roles": [written]})).roles == (canonical,)


def test_it_keeps_the_order_in_which_roles_were_listed() -> None:
    resource = validate_resource(token(**{"spec.roles": ["db", "Node", "app"]}))

    assert resource.roles == ("Db", "Node", "App")


def test_an_omitted_join_method_becomes_ec2_when_allow_rules_are_present() -> None:
    assert validate_resource(token(**{"spec.join_method": DELETE})).join_method == "ec2"


@pytest.mark.parametrize(
    ("written", "stored", "seconds"),
    [
        ("5m", "5m", 300),
        ("300s", "5m", 300),
        ("1h30m", "1h30m", 5400),
        ("90m", "1h30m", 5400),
        ("1.5h", "1h30m", 5400),
        ("2m30s", "2m30s", 150),
        ("1m0s", "1m", 60),
        ("+10m", "10m", 600),
        ("1s", "1s", 1),
        ("1000ms", "1s", 1),
        ("24h", "24h", 86400),
        ("1.5s", "1.5s", 1.5),
    ],
)
def test_it_stores_the_ttl_as_its_canonical_go_duration(
    written: str, stored: str, seconds: float
) -> None:
    resource = validate_resource(token(**{"spec.aws_iid_ttl": written}))

    assert resource.aws_iid_ttl == stored
    assert resource.iid_ttl == timedelta(seconds=seconds)


@pytest.mark.parametrize(
    ("written", "expected"),
    [
        ("2030-01-01T00:00:00Z", datetime(2030, 1, 1, tzinfo=UTC)),
        ("2030-01-01t00:00:00z", datetime(2030, 1, 1, tzinfo=UTC)),
        ("2030-01-01T02:00:00+02:00", datetime(2030, 1, 1, tzinfo=UTC)),
        ("2029-12-31T19:30:00-04:30", datetime(2030, 1, 1, tzinfo=UTC)),
        ("2030-01-01T00:00:00.123456789Z", datetime(2030, 1, 1, 0, 0, 0, 123456, tzinfo=UTC)),
        ("2030-01-01T00:00:00.5Z", datetime(2030, 1, 1, 0, 0, 0, 500000, tzinfo=UTC)),
        (
            datetime(2030, 1, 1, 1, 0, tzinfo=timezone(timedelta(hours=1))),
            datetime(2030, 1, 1, tzinfo=UTC),
        ),
    ],
)
def test_it_normalises_the_expiry_to_utc(written: object, expected: datetime) -> None:
    resource = validate_resource(token(**{"metadata.expires": written}))

    assert resource.expires == expected
    assert resource.expires.utcoffset() == timedelta(0)


@pytest.mark.parametrize(
    ("changes", "attribute", "expected"),
    [
        ({"metadata.namespace": "default"}, "name", "ec2-token"),
        ({"metadata.revision": "3f1c0b"}, "name", "ec2-token"),
        ({"metadata.id": 1700000000}, "name", "ec2-token"),
        ({"metadata.name": "A_b.c-1"}, "name", "A_b.c-1"),
        ({"metadata.name": "_x"}, "name", "_x"),
        ({"metadata.name": "n" * NAME_MAX_LENGTH}, "name", "n" * NAME_MAX_LENGTH),
        ({"metadata.description": "line one\n\tline two"}, "description", "line one\n\tline two"),
        ({"metadata.description": None}, "description", ""),
        ({"metadata.expires": None}, "expires", None),
        ({"metadata.labels": None}, "labels", {}),
        (
            {"metadata.labels": {"teleport.dev/origin": "dynamic", "env/*": "prod"}},
            "labels",
            {"env/*": "prod", "teleport.dev/origin": "dynamic"},
        ),
        ({"spec.aws_iid_ttl": None}, "aws_iid_ttl", "5m"),
        ({"spec.aws_iid_ttl": DELETE}, "aws_iid_ttl", "5m"),
        ({"spec.join_method": None}, "join_method", "ec2"),
        (
            {"spec.allow": [{"aws_account": "011111111111"}]},
            "allow",
            (AllowRule(aws_account="011111111111"),),
        ),
        (
            {"spec.allow": [{"aws_account": "111111111111", "aws_regions": []}]},
            "allow",
            (AllowRule(aws_account="111111111111"),),
        ),
        (
            {"spec.allow": [{"aws_role": "arn:aws:iam::222222222222:role/r"}]},
            "allow",
            (AllowRule(aws_role="arn:aws:iam::222222222222:role/r"),),
        ),
        (
            {
                "spec.allow": [
                    {
                        "aws_account": "222222222222",
                        "aws_role": "arn:aws:iam::222222222222:role/ops/teleport/reader",
                    }
                ]
            },
            "allow",
            (
                AllowRule(
                    aws_account="222222222222",
                    aws_role="arn:aws:iam::222222222222:role/ops/teleport/reader",
                ),
            ),
        ),
        (
            {
                "spec.allow": [
                    {
                        "aws_account": "111111111111",
                        "aws_regions": ["us-gov-west-1", "us-gov-east-1"],
                        "aws_role": "arn:aws-us-gov:iam::111111111111:role/r",
                    },
                    {
                        "aws_account": "111111111111",
                        "aws_regions": ["cn-north-1", "cn-northwest-1"],
                        "aws_role": "arn:aws-cn:iam::111111111111:role/r",
                    },
                    {
                        "aws_account": "111111111111",
                        "aws_regions": ["eusc-de-east-1"],
                        "aws_role": "arn:aws-eusc:iam::111111111111:role/r",
                    },
                ]
            },
            "allow",
            (
                AllowRule(
                    "111111111111",
                    ("us-gov-west-1", "us-gov-east-1"),
                    "arn:aws-us-gov:iam::111111111111:role/r",
                ),
                AllowRule(
                    "111111111111",
                    ("cn-north-1", "cn-northwest-1"),
                    "arn:aws-cn:iam::111111111111:role/r",
                ),
                AllowRule(
                    "111111111111", ("eusc-de-east-1",), "arn:aws-eusc:iam::111111111111:role/r"
                ),
            ),
        ),
    ],
)
def test_it_accepts_valid_variations(changes: dict, attribute: str, expected: object) -> None:
    assert getattr(validate_resource(token(**changes)), attribute) == expected


@pytest.mark.parametrize(
    ("region", "partition"),
    [
        ("us-west-2", "aws"),
        ("us-east-1", "aws"),
        ("ap-southeast-7", "aws"),
        ("ap-east-2", "aws"),
        ("eu-central-2", "aws"),
        ("me-central-1", "aws"),
        ("il-central-1", "aws"),
        ("mx-central-1", "aws"),
        ("ca-west-1", "aws"),
        ("af-south-1", "aws"),
        ("sa-east-1", "aws"),
        ("us-gov-west-1", "aws-us-gov"),
        ("cn-north-1", "aws-cn"),
        ("cn-northwest-1", "aws-cn"),
        ("eusc-de-east-1", "aws-eusc"),
        ("us-west", None),
        ("us-west-2a", None),
        ("us-iso-east-1", None),
        ("xx-west-1", None),
        ("us-west-2 ", None),
        ("", None),
    ],
)
def test_it_knows_which_partition_a_region_belongs_to(region: str, partition: str | None) -> None:
    assert partition_of_region(region) == partition


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("5m", timedelta(minutes=5)),
        ("1h30m", timedelta(hours=1, minutes=30)),
        ("90s", timedelta(seconds=90)),
        ("1.5h", timedelta(hours=1, minutes=30)),
        ("300ms", timedelta(milliseconds=300)),
        ("1h1m1s", timedelta(hours=1, minutes=1, seconds=1)),
        (".5s", timedelta(milliseconds=500)),
        ("1.s", timedelta(seconds=1)),
        ("2us", timedelta(microseconds=2)),
        ("2\u00b5s", timedelta(microseconds=2)),
        ("2\u03bcs", timedelta(microseconds=2)),
        ("1500ns", timedelta(microseconds=1)),
        ("0", timedelta(0)),
        ("-1m", timedelta(minutes=-1)),
        ("1m-", None),
        ("", None),
        ("5", None),
        ("m", None),
        ("5x", None),
        ("1d", None),
        ("5 m", None),
        ("--5m", None),
        (".s", None),
        ("1h-5m", None),
        ("9" * 30 + "h", None),
    ],
)
def test_it_parses_go_durations(text: str, expected: timedelta | None) -> None:
    if expected is None:
        with pytest.raises(ValueError, match=r"duration|unit"):
            parse_duration(text)
    else:
        assert parse_duration(text) == expected


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (timedelta(minutes=5), "5m"),
        (timedelta(hours=1, minutes=30), "1h30m"),
        (timedelta(seconds=90), "1m30s"),
        (timedelta(hours=1, seconds=1), "1h1s"),
        (timedelta(hours=24), "24h"),
        (timedelta(seconds=1.5), "1.5s"),
        (timedelta(milliseconds=300), "300ms"),
        (timedelta(microseconds=1500), "1.5ms"),
        (timedelta(microseconds=5), "5us"),
        (timedelta(0), "0s"),
        (timedelta(minutes=-5), "-5m"),
    ],
)
def test_it_formats_durations_in_their_shortest_go_form(value: timedelta, text: str) -> None:
    assert format_duration(value) == text


@given(st.timedeltas(min_value=timedelta(days=-1000), max_value=timedelta(days=1000)))
def test_a_formatted_duration_parses_back_to_the_same_value(value: timedelta) -> None:
    assert parse_duration(format_duration(value)) == value


@given(st.datetimes(timezones=st.just(UTC)))
def test_a_formatted_timestamp_parses_back_to_the_same_instant(moment: datetime) -> None:
    assert parse_timestamp(format_timestamp(moment)) == moment


@pytest.mark.parametrize(
    ("now", "expired"),
    [
        (datetime(2029, 12, 31, 23, 59, 59, tzinfo=UTC), False),
        (datetime(2030, 1, 1, tzinfo=UTC), True),
        (datetime(2030, 1, 2, tzinfo=UTC), True),
    ],
)
def test_a_token_is_expired_from_its_expiry_instant_on(now: datetime, expired: bool) -> None:
    resource = TokenResource(
        name="t",
        roles=("Node",),
        allow=(AllowRule("111111111111"),),
        expires=datetime(2030, 1, 1, tzinfo=UTC),
    )

    assert resource.is_expired(now) is expired


def test_a_token_without_expiry_never_expires() -> None:
    resource = TokenResource(name="t", roles=("Node",), allow=(AllowRule("111111111111"),))

    assert not resource.is_expired(datetime(9999, 1, 1, tzinfo=UTC))


def test_the_constructor_refuses_a_naive_expiry() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        TokenResource(name="t", roles=("Node",), allow=(), expires=datetime(2030, 1, 1))


def test_a_resource_built_from_plain_containers_is_hashable_and_equal_to_a_validated_one() -> None:
    built = TokenResource(
        name="ec2-token",
        roles=["Node"],  # type: ignore[arg-type]
        allow=[AllowRule("111111111111", ["us-west-1", "us-west-2"])],  # type: ignore[arg-type,list-item]
        labels={"b": "2", "a": "1"},
    )
    validated = validate_resource(token(**{"metadata.labels": {"a": "1", "b": "2"}}))

    assert built == validated
    assert hash(built) == hash(validated)
    assert list(built.labels) == ["a", "b"]


def test_labels_cannot_be_changed_in_place() -> None:
    labels = Labels({"a": "1"})

    with pytest.raises(TypeError):
        labels["a"] = "2"  # type: ignore[index]


def test_to_dict_is_the_tctl_object_in_a_stable_order() -> None:
    resource = validate_resource(
        token(
            **{
                "metadata.description": "web nodes",
                "metadata.expires": "2030-01-01T00:00:00Z",
                "metadata.labels": {"z": "1", "a": "2"},
                "spec.allow.0.aws_role": "arn:aws:iam::111111111111:role/r",
            }
        )
    )

    data = resource.to_dict()

    assert data == {
        "kind": "token",
        "version": "v2",
        "metadata": {
            "name": "ec2-token",
            "description": "web nodes",
            "expires": "2030-01-01T00:00:00Z",
            "labels": {"a": "2", "z": "1"},
        },
        "spec": {
            "roles": ["Node"],
            "join_method": "ec2",
            "aws_iid_ttl": "5m",
            "allow": [
                {
                    "aws_account": "111111111111",
                    "aws_regions": ["us-west-1", "us-west-2"],
                    "aws_role": "arn:aws:iam::111111111111:role/r",
                }
            ],
        },
    }
    assert list(data) == ["kind", "version", "metadata", "spec"]
    assert list(data["metadata"]["labels"]) == ["a", "z"]
    assert validate_resource(data) == resource


def test_a_flood_of_problems_is_cut_short_with_a_count_of_the_rest() -> None:
    obj = token(**{"spec.roles": ["Node"] * 500})

    found = problems(obj)

    assert len(found) == ResourceError.max_details + 1
    assert found[-1] == FieldError(
        3, "", "399 more problems are not listed; fix the ones above first"
    )
