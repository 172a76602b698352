"""New rows as the parameters of one multi-row INSERT, converted by the thread that made them.

Why: the join writer (joins/writer.py) inserts a batch's attempts and hosts during its
process's turn at the database's write lock, which on SQLite every process's writer waits for.
Through `bulk_create` it converted every value of every row there, in one thread among a
hundred busy ones: about half of a 20 ms turn for 40 joins went to Django's per-field compiling
(bench/RESULTS.md, throughput). Here each request thread converts its own rows to database
values beforehand, with the model's own fields (`pre_save`, then `get_db_prep_save`: what
`bulk_create` calls for each value); during the turn the writer only sets what the turn decides
(the keys, the attempt's duration, the host's attempt) and runs one statement per table, its
SQL built once per row count from the model's table and column names, quoted by the backend.
"""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime
from typing import Any

from django.conf import settings
from django.db import connection, models
from django.db.backends.base.operations import BaseDatabaseOperations

from joinadmin import rawsql

# What a field's values need on their way to the database (see `Insert.values`): a type whose
# values (and None) go as they are, `_JSON` for the JSON adapter, or `_CONVERT` for the field's
# whole conversion; `_TIME` sends an aware `datetime` to the backend's adapter for times.
_JSON = object()
_TIME = object()
_CONVERT = object()
_JSON_CONTAINERS = (dict, list)
_KINDS: dict[type[models.Field], Any] = {
    models.CharField: str,
    models.TextField: str,
    models.IntegerField: int,
    models.BigIntegerField: int,
    models.PositiveIntegerField: int,
    models.FloatField: float,
    models.DateTimeField: _TIME,
    models.ForeignKey: int,
    models.JSONField: _JSON,
}

# PostgreSQL's wire protocol numbers parameters with 16 bits.
_POSTGRES_MAX_PARAMS = 65535


class Insert:
    """The INSERT of new `model` rows, every concrete column but the primary key (which the
    caller numbers, or the database returns)."""

    def __init__(self, model: type[models.Model]) -> None:
        meta = model._meta
        self.model = model
        self._pk = meta.pk
        self._fields = [field for field in meta.concrete_fields if field is not meta.pk]
        self._positions = {field.attname: i for i, field in enumerate(self._fields)}
        # Per database vendor, per column: the attribute, its field, what its values need.
        self._plans: dict[str, tuple[list[tuple[str, models.Field, Any]], bool]] = {}
        # The statement per (vendor, rows, numbered): see `_sql`.
        self._statements: dict[tuple[str, int, bool], str] = {}

    def values(self, row: models.Model) -> list[Any]:
        """`row`'s database values, in column order: what the INSERT sends for it.

        The same as `field.get_db_prep_save(field.pre_save(row, True), connection)` for every
        field (a test holds them equal), without its dozen calls where the outcome is known:
        a `str` in a text column, an `int` in an integer one or a foreign key, None in any of
        these or in a time column go as they are; an aware `datetime` goes straight to the
        backend's adapter for times, a `dict` or `list` to its adapter for JSON (what the
        field's own chain of calls ends in for such values). None of the models' fields of
        these types sets its value on save (`pre_save`), so the attribute is read as it is.
        """
        ops = connection.ops
        plan, utc_text = self._plan()
        values = []
        for attname, field, kind in plan:
            value = getattr(row, attname)
            if (value is None and kind is not _CONVERT) or type(value) is kind:
                pass  # as it is
            elif kind is _JSON and type(value) in _JSON_CONTAINERS:
                value = ops.adapt_json_value(value, field.encoder)  # type: ignore[attr-defined]
            elif kind is _TIME and type(value) is datetime and value.tzinfo is not None:
                if utc_text and value.tzinfo is UTC:
                    value = str(value.replace(tzinfo=None))  # what the adapter makes of it
                else:
                    value = ops.adapt_datetimefield_value(value)
            else:
                value = field.get_db_prep_save(field.pre_save(row, True), connection)
            values.append(value)
        return values

    @staticmethod
    def _utc_text() -> bool:
        """Whether the backend stores times as text of naive UTC (SQLite with USE_TZ and the
        connection's zone UTC): then an aware UTC `datetime` goes as `str()` of its naive
        self, which is what the backend's adapter returns for it after converting the zone."""
        return (
            connection.vendor == "sqlite" and settings.USE_TZ and connection.timezone_name == "UTC"
        )

    def _plan(self) -> tuple[list[tuple[str, models.Field, Any]], bool]:
        """Per column: the attribute, its field, and what its values need (see `values`): a
        type sent unchanged, `_JSON`, `_TIME` or `_CONVERT` (the field's whole conversion
        always); and whether `_utc_text` holds. Kept per database vendor."""
        plan = self._plans.get(connection.vendor)
        if plan is None:
            # A backend that adapts integers itself (psycopg's typed Int4 and Int8, so that
            # PostgreSQL knows their types) gets them converted as Django does.
            adapts = (
                type(connection.ops).adapt_integerfield_value
                is not BaseDatabaseOperations.adapt_integerfield_value
            )
            columns = []
            for field in self._fields:
                kind = _KINDS.get(type(field), _CONVERT)
                if kind is int and adapts:
                    kind = _CONVERT
                columns.append((field.attname, field, kind))
            self._plans[connection.vendor] = plan = (columns, self._utc_text())
        return plan

    def set(self, values: list[Any], row: models.Model, attname: str) -> None:
        """Convert `row`'s `attname` again into `values` (it changed after `values()`): as
        `values()` converts it, for the writer sets these during its turn (a float duration, an
        integer key go as they are)."""
        position = self._positions[attname]
        _, field, kind = self._plan()[0][position]
        value = getattr(row, attname)
        if (value is None and kind is not _CONVERT) or type(value) is kind:
            values[position] = value
        else:
            values[position] = field.get_db_prep_save(value, connection)

    def run(self, rows: list[tuple[models.Model, list[Any]]]) -> None:
        """INSERT `rows` (each a model instance and its `values()`), in as few statements as
        the database's limit on parameters allows.

        Rows numbered beforehand (every one has a primary key) are inserted with it; otherwise
        the database returns the keys (`RETURNING`, in the order of the rows) and they are set
        on the instances. Either way the instances are then saved ones, as after `bulk_create`.
        """
        if not rows:
            return
        numbered = all(row.pk is not None for row, _ in rows)
        per_row = len(self._fields) + (1 if numbered else 0)
        chunk = max(1, _max_params() // per_row)
        for start in range(0, len(rows), chunk):
            part = rows[start : start + chunk]
            params: list[Any] = []
            for row, values in part:
                if numbered:
                    params.append(self._pk.get_db_prep_save(row.pk, connection))
                params.extend(values)
            # On SQLite, on the driver's connection (joinadmin/rawsql.py): Django's cursor
            # would rewrite the placeholders of this long statement with a regular expression
            # every time.
            keys = rawsql.execute(self._sql(len(part), numbered), params, fetch=not numbered)
            if not numbered:
                for (row, _), (key,) in zip(part, keys, strict=True):
                    row.pk = key
        for row, _ in rows:
            row._state.adding = False
            row._state.db = connection.alias

    def _sql(self, count: int, numbered: bool) -> str:
        """`INSERT INTO table (columns) VALUES (...), ...` for `count` rows; with the primary key
        first when `numbered`, else returning it. Kept per vendor (its quoting)."""
        key = (connection.vendor, count, numbered)
        sql = self._statements.get(key)
        if sql is None:
            quote = connection.ops.quote_name
            columns = [field.column for field in self._fields]
            if numbered:
                columns.insert(0, self._pk.column)
            row = "(" + ", ".join(["%s"] * len(columns)) + ")"
            # Identifiers come from the model's meta and are quoted; values only ever go as
            # parameters.
            sql = (
                f"INSERT INTO {quote(self.model._meta.db_table)} "  # noqa: S608
                f"({', '.join(quote(c) for c in columns)}) VALUES {', '.join([row] * count)}"
            )
            if not numbered:
                sql += f" RETURNING {quote(self._pk.column)}"
            self._statements[key] = sql
        return sql


def _max_params() -> int:
    """Parameters one statement may carry on this connection's database."""
    if connection.vendor == "sqlite":
        connection.ensure_connection()
        return connection.connection.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER)
    return connection.features.max_query_params or _POSTGRES_MAX_PARAMS


class Factory:
    """New `model` instances from keyword values (by attribute name), built as `Model.from_db`
    builds them: every concrete field's value given by position, the ones not given set to
    their field's default.

    Why: `Model(**values)` matches each keyword to its field and looks every other field's
    default up, one at a time; the join makes two rows a request, and that came to a third of
    what converting them for the INSERT costs. The result is the same instance (a test holds
    every attribute equal to `Model(**values)`'s); an unknown name raises TypeError as there.
    """

    def __init__(self, model: type[models.Model]) -> None:
        self.model = model
        fields = model._meta.concrete_fields
        # By attribute name: a foreign key is given as its id (`last_attempt_id`), as the
        # positional form of `Model()` takes it.
        self._positions = {field.attname: i for i, field in enumerate(fields)}
        # Per field: its default, or the callable that makes a fresh one (a list, a dict).
        self._defaults = [
            (field.default, True)
            if field.has_default() and callable(field.default)
            else (field.get_default(), False)
            for field in fields
        ]

    def __call__(self, **values: Any) -> Any:
        args = [default() if fresh else default for default, fresh in self._defaults]
        for name, value in values.items():
            position = self._positions.get(name)
            if position is None:
                raise TypeError(f"{self.model.__name__}() got an unexpected field {name!r}")
            args[position] = value
        return self.model(*args)
