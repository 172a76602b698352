"""Plain single-table reads for the join's hot path, without the ORM's query compiler.

Why: a join reads a few tiny things (its token's version, whether its host is registered, which
CAs exist). Through the ORM each such read spends ten times longer building its SQL than the
database takes to answer it, and at hundreds of joins a second per core that is most of what a
join costs after its own cryptography (bench/RESULTS.md, throughput). The SQL here is built
once per shape from the models' own table and column names and quoted by the backend, and runs
on Django's connection (its transactions, its error wrapping, its query log when queries are
logged). On SQLite, when no query log is kept, it runs on the driver's connection directly, with
SQLite's own placeholders: Django's cursor wrapper and its placeholder rewriting cost a read
three times what SQLite takes to answer it (11 us against 4 us here). Only values of the
model's own columns come back, as the database driver returns them: use them as opaque versions
or ids, not as field values.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache
from typing import Any

from django.db import DEFAULT_DB_ALIAS, connections, models

from joinadmin import sharedread


def table(model: type[models.Model]) -> str:
    """`model`'s table name, quoted for the default database."""
    return connections[DEFAULT_DB_ALIAS].ops.quote_name(model._meta.db_table)


def column(model: type[models.Model], name: str) -> str:
    """The column of `model`'s field `name`, quoted for the default database."""
    return connections[DEFAULT_DB_ALIAS].ops.quote_name(model._meta.get_field(name).column)


@cache
def _sql(
    vendor: str,
    model: type[models.Model],
    fields: tuple[str, ...],
    where: str | None,
    order_by: str | None,
    limit: int | None,
    count: int,
) -> str:
    """The SELECT of `select` (`count` values for `where`: `= %s` for one, `IN (...)` else)."""
    # Identifiers come from the model's meta and are quoted; values only ever go as parameters.
    names = ", ".join(column(model, f) for f in fields)
    sql = f"SELECT {names} FROM {table(model)}"  # noqa: S608
    if where is not None:
        if count == 1:
            sql += f" WHERE {column(model, where)} = %s"
        else:
            sql += f" WHERE {column(model, where)} IN ({', '.join(['%s'] * count)})"
    if order_by is not None:
        descending = order_by.startswith("-")
        sql += f" ORDER BY {column(model, order_by.lstrip('-'))}{' DESC' if descending else ''}"
    if limit is not None:
        sql += f" LIMIT {int(limit)}"
    return sql


def select(
    model: type[models.Model],
    fields: Sequence[str],
    *,
    where: str | None = None,
    value: Any = None,
    values: Sequence[Any] | None = None,
    order_by: str | None = None,
    limit: int | None = None,
) -> list[tuple[Any, ...]]:
    """`SELECT fields FROM model [WHERE where = value | where IN values] [ORDER BY order_by]
    [LIMIT limit]`.

    `order_by` is a field name, with a leading "-" for descending order. `values` (not empty)
    instead of `value` selects the rows whose `where` is any of them."""
    db = connections[DEFAULT_DB_ALIAS]  # once: each `connection.x` looks the thread's up again
    if where is None:
        params: list[Any] = []
    elif values is not None:
        if not values:
            raise ValueError("select: `values` must not be empty")
        params = list(values)
    else:
        params = [value]
    sql = _sql(db.vendor, model, tuple(fields), where, order_by, limit, len(params))
    return execute(sql, params, fetch=True)


def execute(
    sql: str, params: Sequence[Any], *, fetch: bool = False, shared: bool = False
) -> list[tuple[Any, ...]]:
    """Run `sql` (with `%s` placeholders) on the default connection; its rows when `fetch`.

    On SQLite without a query log, on the driver's connection with SQLite's placeholders (see
    the module doc); otherwise through Django's cursor. `shared` (a read) goes to the process's
    shared SQLite connection when it may (joinadmin/sharedread.py)."""
    db = connections[DEFAULT_DB_ALIAS]
    if shared and fetch and sharedread.usable(db):
        return sharedread.execute(_qmarks(sql), params)
    if db.vendor == "sqlite" and not db.queries_logged:
        if db.connection is None:
            db.ensure_connection()
        db.validate_thread_sharing()
        with db.wrap_database_errors:
            cursor = db.connection.execute(_qmarks(sql), params)
            return cursor.fetchall() if fetch else []
    with db.cursor() as cursor:
        cursor.execute(sql, params)
        return list(cursor.fetchall()) if fetch else []


@cache
def _qmarks(sql: str) -> str:
    """`sql` with SQLite's placeholders (the statements here have no literal percent sign)."""
    return sql.replace("%s", "?")
