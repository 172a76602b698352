"""Console page tests. The helpers below write rows directly, as the brief of these tests asks:
join attempts and hosts are the join service's output, so the pages are tested on rows of the
shape it writes, without running a join."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from joins.models import Host, JoinAttempt
from tokens.models import Token
from tokens.resource import validate_resource

NOW = datetime(2026, 11, 20, 12, 0, 0, tzinfo=UTC)
ACCOUNT = "111111111111"
OTHER_ACCOUNT = "222222222222"


def token_object(name: str = "ec2-token", **spec: Any) -> dict[str, Any]:
    """A valid tctl token object; keyword arguments replace `spec` entries."""
    return {
        "kind": "token",
        "version": "v2",
        "metadata": {"name": name, "description": f"{name} for tests"},
        "spec": {
            "roles": ["Node"],
            "join_method": "ec2",
            "aws_iid_ttl": "5m",
            "allow": [{"aws_account": ACCOUNT, "aws_regions": ["us-west-2"]}],
            **spec,
        },
    }


def make_token(
    name: str = "ec2-token", *, metadata: dict[str, Any] | None = None, **spec: Any
) -> Token:
    """A stored token, written from a validated resource as the services write it."""
    obj = token_object(name, **spec)
    obj["metadata"].update(metadata or {})
    token = Token()
    token.apply_resource(validate_resource(obj))
    token.save()
    return token


def make_attempt(**fields: Any) -> JoinAttempt:
    """A join attempt row; defaults describe a denied attempt on `ec2-token`."""
    values: dict[str, Any] = {
        "time": NOW,
        "token": "ec2-token",
        "join_method": "ec2",
        "remote_addr": "203.0.113.7",
        "host_id": f"{ACCOUNT}-i-0123456789abcdef0",
        "account_id": ACCOUNT,
        "region": "us-west-2",
        "instance_id": "i-0123456789abcdef0",
        "roles": ["Node"],
        "outcome": "denied",
        "error": "no_matching_rule",
        "message": "no allow rule matches this instance",
        "reason": f"account {ACCOUNT} in us-west-2 matches none of 1 rule",
        "checks": [
            {"name": "request", "ok": True, "detail": "the request is well formed"},
            {"name": "token", "ok": True, "detail": "token 'ec2-token' exists and is not expired"},
            {"name": "allow_rule", "ok": False, "detail": "no rule allows us-west-2"},
        ],
        "duration_ms": 12.5,
    }
    values.update(fields)
    return JoinAttempt.objects.create(**values)


def make_host(host_id: str = f"{ACCOUNT}-i-0123456789abcdef0", **fields: Any) -> Host:
    account, _, instance = host_id.partition("-")
    values: dict[str, Any] = {
        "host_id": host_id,
        "account_id": account,
        "region": "us-west-2",
        "instance_id": instance,
        "node_name": "ip-10-0-0-12",
        "roles": ["Node"],
        "token": "ec2-token",
        "first_joined_at": NOW - timedelta(days=1),
        "last_joined_at": NOW - timedelta(days=1),
        "tls_cert_serial": "1234",
        "cert_expires": NOW + timedelta(hours=23),
    }
    values.update(fields)
    return Host.objects.create(**values)
