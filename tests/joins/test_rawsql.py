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


def test_a_read_of_several_values_returns_the_rows_of_any_of_them() -> None:
    _rows()
    wanted = ["h-0", "h-2", "nobody"]
    plain = rawsql.select(JoinAttempt, ["host_id"], where="host_id", values=wanted)
    with CaptureQueriesContext(connection) as logged:
        wrapped = rawsql.select(JoinAttempt, ["host_id"], where="host_id", values=wanted)
    assert len(logged) == 1 and " IN (" in logged[0]["sql"]
    assert sorted(plain) == sorted(tuple(row) for row in wrapped) == [("h-0",), ("h-2",)]
    assert rawsql.select(JoinAttempt, ["host_id"], where="host_id", values=["h-1"]) == [("h-1",)]
    with pytest.raises(ValueError, match="values"):
        rawsql.select(JoinAttempt, ["host_id"], where="host_id", values=[])


def test_a_statement_runs_on_both_paths() -> None:
    (row, *_) = _rows()
    table = connection.ops.quote_name(JoinAttempt._meta.db_table)
    sql = f"UPDATE {table} SET host_id = %s WHERE id = %s"
    assert rawsql.execute(sql, ["plain", row.pk]) == []
    assert JoinAttempt.objects.get(pk=row.pk).host_id == "plain"
    with CaptureQueriesContext(connection) as logged:
        rawsql.execute(sql, ["wrapped", row.pk])
    assert len(logged) == 1
    assert JoinAttempt.objects.get(pk=row.pk).host_id == "wrapped"
