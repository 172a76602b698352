"""Giving a pooled database connection back while a request waits.

Why: on PostgreSQL with `JOINADMIN_DB_POOL_SIZE` set, Django borrows a connection from the
process's pool at a thread's first query and returns it when the request ends. A join spends
most of its time waiting (for its share of a DescribeInstances call, for the join writer's
commit) after its last read; holding the connection through those waits would let a hundred
waiting joins drain a pool of a dozen and make the others wait for a connection nobody uses.
`release()` hands it back as soon as the request thread is done reading.
"""

from __future__ import annotations

from django.db import connection


def release() -> None:
    """Return this thread's pooled connection now (its next query borrows one again).

    Nothing happens without a pool (SQLite, or PostgreSQL with a connection per thread), or
    inside a transaction, whose connection must stay the same until it ends.
    """
    if getattr(connection, "pool", None) is None or connection.in_atomic_block:
        return
    connection.close()
