"""New rows made by position (joins/rows.py, `Factory`) are the rows `Model(**values)` makes."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from django.db import models

from joins.models import Host, JoinAttempt
from joins.rows import Factory

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)


def _attributes(row: models.Model) -> dict[str, Any]:
    return {field.attname: getattr(row, field.attname) for field in row._meta.concrete_fields}


@pytest.mark.parametrize(
    ("model", "values"),
    [
        (JoinAttempt, {"time": NOW, "remote_addr": "10.0.0.1", "user_agent": "agent/1"}),
        (JoinAttempt, {}),
        (
            Host,
            {
                "host_id": "123456789012-i-0123456789abcdef0",
                "account_id": "123456789012",
                "region": "us-west-2",
                "instance_id": "i-0123456789abcdef0",
                "node_name": "node",
                "roles": ["Node"],
                "token": "ec2-token",
                "first_joined_at": NOW,
                "last_joined_at": NOW,
                "rejoin_challenge_us": 7,
                "last_attempt_id": 12,
            },
        ),
    ],
)
def test_the_same_row_as_the_models_own_constructor(
    model: type[models.Model], values: dict[str, Any]
) -> None:
    made = Factory(model)(**values)
    expected = model(**values)
    assert type(made) is model
    assert _attributes(made) == _attributes(expected)
    assert made._state.adding and made._state.db is None
    assert made.pk is None


def test_mutable_defaults_are_fresh_for_each_row() -> None:
    make = Factory(JoinAttempt)
    first, second = make(), make()
    assert first.checks == [] and first.checks is not second.checks
    assert first.roles is not second.roles


def test_an_unknown_field_is_refused() -> None:
    with pytest.raises(TypeError, match="colour"):
        Factory(Host)(colour="blue")
    with pytest.raises(TypeError, match="last_attempt"):
        Factory(Host)(last_attempt=None)  # a foreign key goes by its id
