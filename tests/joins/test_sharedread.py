"""The process's shared SQLite connection for the join's read (joinadmin/sharedread.py): the same
rows as the caller's own connection, one connection for every thread of a process and one per
process, the caller's connection inside a transaction, Django's errors when a read fails."""

from __future__ import annotations

import os
import threading

import pytest
from django.db import OperationalError, connection, transaction

from joinadmin import rawsql, sharedread
from joins import authority
from joins.reads import _sql, read_for_join
from tests.joins.test_reads import HOST_ID, _host, _token
from tokens import cache

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def _fresh():  # type: ignore[no-untyped-def]
    authority.reset_cache()
    cache.clear()
    sharedread.close()
    yield
    sharedread.close()


@pytest.fixture
def sqlite_only() -> None:
    if connection.vendor != "sqlite":
        pytest.skip("the shared read connection is SQLite's (PostgreSQL reads through its pool)")


def test_only_sqlite_reads_on_the_shared_connection() -> None:
    _token()
    on_sqlite = connection.vendor == "sqlite"
    assert sharedread.usable(connection) is on_sqlite

    assert read_for_join("ec2-token", HOST_ID).token is not None

    assert (_shared_connection() is not None) is on_sqlite


def _shared_connection() -> object:
    return sharedread._shared.get(os.getpid())


def test_outside_a_transaction_it_reads_what_the_own_connection_reads(sqlite_only: None) -> None:
    _token()
    _host()
    authority.signing_material()
    sql, params = _sql(connection.vendor), [HOST_ID, "ec2-token"]
    own = rawsql.execute(sql, params, fetch=True)
    assert _shared_connection() is None

    shared = rawsql.execute(sql, params, fetch=True, shared=True)

    assert shared == own
    assert _shared_connection() is not None
    assert _shared_connection() is not connection
    reads = read_for_join("ec2-token", HOST_ID)
    assert reads.token == cache.read_row("ec2-token")  # the same types: a token resource reads it
    assert reads.host_registered is True
    assert reads.ca_version == authority.ca_version()


def test_every_thread_of_a_process_reads_on_one_connection(sqlite_only: None) -> None:
    _token()
    answers: list[object] = []
    wrappers: list[object] = []

    def read() -> None:
        answers.append(read_for_join("ec2-token", HOST_ID).token)
        wrappers.append(_shared_connection())
        connection.close()  # the thread's own, if it opened one

    threads = [threading.Thread(target=read) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert len(answers) == 6
    assert all(token is not None and token == answers[0] for token in answers)
    assert len(wrappers) == 6
    assert None not in wrappers
    assert len({id(wrapper) for wrapper in wrappers}) == 1


def test_a_forked_process_makes_a_connection_of_its_own(
    sqlite_only: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    _token()
    read_for_join("ec2-token", HOST_ID)
    parents = _shared_connection()
    monkeypatch.setattr(sharedread.os, "getpid", lambda: -1)

    assert read_for_join("ec2-token", HOST_ID).token is not None

    assert sharedread._shared[-1] is not parents
    sharedread.close()  # the "child's", under the patched pid


def test_inside_a_transaction_the_callers_connection_reads_its_own_rows(sqlite_only: None) -> None:
    with transaction.atomic():
        _token("uncommitted")
        assert not sharedread.usable(connection)
        reads = read_for_join("uncommitted", HOST_ID)
    assert reads.token is not None
    assert _shared_connection() is None


def test_a_failed_read_raises_djangos_error_and_the_next_read_reconnects(sqlite_only: None) -> None:
    _token()
    read_for_join("ec2-token", HOST_ID)
    broken = _shared_connection()

    with pytest.raises(OperationalError, match="no such table"):
        sharedread.execute("SELECT 1 FROM no_such_table", [])

    assert _shared_connection() is None
    assert read_for_join("ec2-token", HOST_ID).token is not None
    assert _shared_connection() is not broken
