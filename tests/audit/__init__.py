"""Tests of the audit seals (seal, verify, prune) and of the demo data generator.

The helpers write audit rows directly, older than the sealing lag unless told otherwise, with
the JSON, float and time columns a real join leaves, so that the canonical serialisation meets
every kind of value it must handle.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from django.utils import timezone

from audit.models import AdminAction
from joins.models import JoinAttempt

OLD = timedelta(minutes=10)


def make_attempts(count: int, *, age: timedelta = OLD, **fields: Any) -> list[JoinAttempt]:
    """`count` join attempt rows, `age` old, in id order."""
    now = timezone.now()
    rows = []
    for index in range(count):
        values: dict[str, Any] = {
            "time": now - age + timedelta(milliseconds=index),
            "token": "ec2-token",
            "join_method": "ec2",
            "remote_addr": f"10.0.0.{index % 250}",
            "host_id": f"123456789012-i-{index:017x}",
            "account_id": "123456789012",
            "region": "us-west-2",
            "instance_id": f"i-{index:017x}",
            "pending_time": now - age - timedelta(seconds=30),
            "roles": ["Node"],
            "outcome": "denied",
            "error": "iid_expired",
            "message": "the instance was launched more than 5m ago",
            "reason": f"pendingTime is {300 + index}s old",
            "checks": [
                {"name": "request", "ok": True, "detail": "well formed"},
                {"name": "pending_time", "ok": False, "detail": "too old, ünïcode ✓"},
            ],
            "duration_ms": 12.5 + index / 3,
            "document": {"accountId": "123456789012", "billingProducts": None, "n": [1, 2.5]},
            **fields,
        }
        rows.append(JoinAttempt.objects.create(**values))
    return rows


def make_actions(count: int, *, age: timedelta = OLD, **fields: Any) -> list[AdminAction]:
    """`count` admin action rows, `age` old."""
    now = timezone.now()
    return [
        AdminAction.objects.create(
            time=now - age + timedelta(milliseconds=index),
            actor_name="alice-admin",
            action="token.create",
            object_type="token",
            object_id=f"token-{index}",
            after={"metadata": {"name": f"token-{index}"}},
            **fields,
        )
        for index in range(count)
    ]


def days_ago(days: float) -> datetime:
    return timezone.now() - timedelta(days=days)
