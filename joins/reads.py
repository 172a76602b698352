"""What a join reads of the database, in one statement: its token's row, whether the host it
claims to be is registered, and which CAs exist.

Why: each read is a statement, and on SQLite each statement hands the GIL to another thread
twice (once per step: the row, then the end), so that in a worker with a hundred busy threads a
tiny read costs a join some 30 us of CPU for the switches and the caches they cool, about ten
times what SQLite takes to answer it; on PostgreSQL each is also a round trip. Read together
they cost one statement (bench/RESULTS.md, throughput). The join still decides in the
contract's order: these are only the values its checks would otherwise read one by one, read
a few hundred microseconds earlier, which changes nothing a concurrent change could show (the
unique host id still settles two joins of one instance at their insert).

The SQL is built once per database vendor from the models' table and column names, quoted by
the backend; values go only as parameters (joinadmin/rawsql.py runs it).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import Any

from django.db import DEFAULT_DB_ALIAS, connections

from joinadmin import rawsql
from joinadmin.rawsql import column, table
from joins.authority import ca_version_sql
from joins.models import Host
from tokens.cache import COLUMNS as TOKEN_COLUMNS
from tokens.models import Token

_TOKEN_ID = TOKEN_COLUMNS.index(Token._meta.pk.name)


@dataclass(frozen=True)
class JoinReads:
    """One join's reads. `token`: the token row as `tokens.cache` reads it (its version), or
    None; `host_registered`: whether `host_id` is a registered host's id; `ca_version`: see
    `joins.authority.ca_version`."""

    host_id: str
    token: tuple[Any, ...] | None
    host_registered: bool
    ca_version: tuple[Any, ...]

    def registered(self, host_id: str) -> bool | None:
        """Whether `host_id` was registered when read; None when it was not the id read."""
        return self.host_registered if host_id and host_id == self.host_id else None


@cache
def _sql(vendor: str) -> str:
    """The statement, per database vendor (its quoting)."""
    token_columns = ", ".join(f"t.{column(Token, name)}" for name in TOKEN_COLUMNS)
    # Identifiers come from the models' meta and are quoted; values only ever go as parameters.
    return (
        f"SELECT {token_columns}, "  # noqa: S608
        f"(SELECT h.{column(Host, 'id')} FROM {table(Host)} h "
        f"WHERE h.{column(Host, 'host_id')} = %s), {ca_version_sql()} "
        f"FROM (SELECT 1 AS one) AS one LEFT JOIN {table(Token)} t "
        f"ON t.{column(Token, 'name')} = %s"
    )


def read_for_join(token_name: str, host_id: str) -> JoinReads:
    """The join's reads for the token named `token_name` and the host id it claims."""
    vendor = connections[DEFAULT_DB_ALIAS].vendor
    # On SQLite, on the process's shared read connection (joinadmin/sharedread.py).
    (row,) = rawsql.execute(_sql(vendor), [host_id, token_name], fetch=True, shared=True)
    width = len(TOKEN_COLUMNS)
    token = tuple(row[:width])
    return JoinReads(
        host_id=host_id,
        # A LEFT JOIN without a token row: every column NULL, the primary key too.
        token=None if token[_TOKEN_ID] is None else token,
        host_registered=row[width] is not None,
        ca_version=tuple(row[width + 1 :]),
    )
