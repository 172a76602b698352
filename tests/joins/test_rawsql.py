"""The plain reads of the join's hot path (joinadmin/rawsql.py): the same rows whether they run on
the driver's connection (SQLite, no query log) or through Django's cursor, and the database's
errors still arrive as Django's."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from django.db import DatabaseError, connection
from django.test.utils import CaptureQueriesContext

from joinadmin import rawsql
from joins.models import JoinAttempt

pytestmark = pytest.mark.django_db

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)


def _rows() -> list[JoinAttempt]:
    return [
        JoinAttempt.objects.create(time=NOW, outcome="denied", host_id=f"h-{n}", error="e")
        for n in range(3)
    ]


def test_both_paths_read_the_same_rows() -> None:
    made = _rows()
    plain = rawsql.select(JoinAttempt, ["id", "host_id"], order_by="-id", limit=2)
    with CaptureQueriesContext(connection) as logged:  # a query log: Django's cursor
        wrapped = rawsql.select(JoinAttempt, ["id", "host_id"], order_by="-id", limit=2)
    assert len(logged) == 1
    assert [tuple(row) for row in plain] == [tuple(row) for row in wrapped]
    assert [tuple(row) for row in plain] == [(m.pk, m.host_id) for m in reversed(made[1:])]
    assert rawsql.select(JoinAttempt, ["host_id"], where="host_id", value="h-1") == [("h-1",)]
    assert rawsql.select(JoinAttempt, ["host_id"], where="host_id", value="nobody") == []


def test_a_database_error_is_djangos(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rawsql, "_sql", lambda *_: "SELECT id FROM no_such_table")
    with pytest.raises(DatabaseError, match=r"no_such_table|does not exist"):
        rawsql.select(JoinAttempt, ["id"])
