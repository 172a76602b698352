"""One SQLite connection per process for the join's read, shared by its request threads.

Why: a gunicorn worker serves joins on a hundred threads, and Django gives each thread a
connection of its own. A thread reads about once every quarter second, so its connection's
structures (the page cache, the prepared statement, the B-tree cursors) have left the CPU's
caches by then, and since the join writer commits several times in between, SQLite has also
emptied that page cache (a connection drops its cached pages when another one changed the
database). The join's one read cost 0.31 to 0.40 ms of CPU in the server against 50 us in a
loop; from 64 threads that touch 40 MB of other objects between reads, 0.73 ms. On a single
connection that every join of the process uses, a few milliseconds apart, the same read costs
0.15 to 0.20 ms (bench/RESULTS.md, throughput).

The connection is a second Django connection to the default database (same parameters,
autocommit), made on first use in each process (a forked worker makes its own) and used under
a lock: a read is one statement of some 50 us, so the threads rarely wait for each other.
`usable()` says when it must not be used and the caller's own connection reads instead: another
database than SQLite (PostgreSQL shares connections through its pool already), a query log
(tests that count queries), or an open transaction on the caller's connection, whose
uncommitted rows only that connection sees. A statement that fails raises Django's database
errors, as on the caller's connection, and the connection is made again on the next read.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from typing import Any

from django.db import DEFAULT_DB_ALIAS, connections
from django.db.backends.base.base import BaseDatabaseWrapper

_lock = threading.Lock()
_shared: dict[int, BaseDatabaseWrapper] = {}  # by process id: a fork never uses its parent's


def usable(db: BaseDatabaseWrapper) -> bool:
    """Whether a read on `db` (the calling thread's connection) may go to the shared one."""
    return db.vendor == "sqlite" and not db.queries_logged and not db.in_atomic_block


def execute(sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
    """The rows of `sql` (SQLite's `?` placeholders) on the process's shared connection."""
    with _lock:
        shared = _connection()
        try:
            with shared.wrap_database_errors:
                return shared.connection.execute(sql, params).fetchall()
        except Exception:
            close()  # made again on the next read, whatever went wrong
            raise


def close() -> None:
    """Close this process's shared connection, if any (tests; a failed read)."""
    shared = _shared.pop(os.getpid(), None)
    if shared is not None:
        shared.close()


def _connection() -> BaseDatabaseWrapper:
    """This process's shared connection (with the lock held), made when missing."""
    shared = _shared.get(os.getpid())
    if shared is None:
        shared = connections.create_connection(DEFAULT_DB_ALIAS)
        # Used from every request thread of the process, one at a time (the lock).
        shared.inc_thread_sharing()
        shared.ensure_connection()
        _shared[os.getpid()] = shared
    return shared
